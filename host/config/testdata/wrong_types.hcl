node_name = ["edge-1"]

router {
  queue_capacity    = "lots"
  max_message_bytes = 1.5
}

plugin "edged" {
  path    = "bin/edged"
  args    = "--flag"
  enabled = "maybe"
  env     = { A = ["x"] }
  gogc    = "off"
}
