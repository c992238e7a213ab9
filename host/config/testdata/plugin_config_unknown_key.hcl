node_name = "edge-1"

plugin "edgehub" {
  path = "bin/edgehub"
  config {
    server  = "wss://cloud.example:10000"
    sever   = "typo"
    websock {
      enabled = true
    }
    quic {
      stream = 4
    }
  }
}
