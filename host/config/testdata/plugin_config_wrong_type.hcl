node_name = "edge-1"

plugin "edgehub" {
  path = "bin/edgehub"
  config {
    server = "wss://cloud.example:10000"
    port   = "abc"
    tls    = "yes please"
    tags   = "not-a-list"
    quic {
      streams = [1, "two"]
    }
  }
}
