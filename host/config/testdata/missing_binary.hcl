node_name = "edge-1"

plugin "edged" {
  path = "bin/does-not-exist"
}

# Default path: <plugin_dir>/eventbus, which does not exist either.
plugin "eventbus" {}

plugin "devicetwin" {
  path = "bin/noexec"
}

plugin "servicebus" {
  path = "bin"
}

plugin "edgehub" {
  path = "bin/ok"
}

# Disabled plugins are not checked.
plugin "metamanager" {
  path    = "bin/also-missing"
  enabled = false
}
