node_name = "edge-1"

# No config block at all: required "server" is reported at the header.
plugin "edgehub" {
  path = "bin/edgehub"
}

# Present but empty config block.
plugin "edgehub2" {
  path = "bin/edgehub"
  config {
  }
}
