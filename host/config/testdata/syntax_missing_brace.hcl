node_name = "edge-1"

plugin "edged" {
  path = "bin/edged"
  restart {
    attempts = 3
  }
