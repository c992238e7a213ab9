node_name = "edge-1"

plugin "edged" {
  path = "bin/edged"
}

plugin "edgehub" {
  path = "bin/edgehub"
}

plugin "edged" {
  path = "bin/edged2"
}

plugin "Bad.Name" {
  path = "bin/bad"
}

log {
  level = "info"
}

log {
  level = "debug"
}
