node_name = "Edge_1"
data_dir  = ""

log {
  level  = "verbose"
  format = "xml"
}

admin {
  address = "0.0.0.0:10550"
}

router {
  queue_capacity = 0
}

plugin "edged" {
  path       = "bin/edged"
  gomemlimit = "20MB"
  env        = { GOGC = "50" }
  gogc       = 50

  restart {
    delay     = "1m"
    max_delay = "10s"
  }

  health {
    interval = "1s"
    timeout  = "3s"
    failures = 0
  }
}
