node_name = "edge-1"
colour    = "blue"

log {
  level   = "info"
  verbose = true
}

metrics {
  port = 9100
}

plugin "edged" {
  path     = "bin/edged"
  priority = 5

  restart {
    attempts = 3
    backoff  = "linear"
  }

  health {
    grace = "10s"
  }
}
