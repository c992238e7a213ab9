node_name = "edge-1"

router {
  send_timeout = "5"
}

plugin "edgehub" {
  path = "bin/edgehub"

  restart {
    interval  = "five minutes"
    delay     = "-1s"
    max_delay = 30
  }

  health {
    timeout = "2x"
  }
}
