node_name = "edge-1"

plugin "edged" {
  path   = "bin/edged"
  sha256 = "abc123"
}

plugin "edgehub" {
  path   = "bin/edgehub"
  sha256 = "zz1b5e7c3d6a4f8e9b0c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f6a7b8c9d0e1f2a"
}
