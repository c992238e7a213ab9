# edgehive default configuration, embedded in the binary and used by
# `edgehive run` when no -config flag is given.
#
# node_name is left out: it defaults to the host name.
# plugin_dir is left out: it defaults to <directory of edgehive>/plugins.

data_dir = "/var/lib/edgehive"

log {
  level  = "info"
  format = "text"
}

admin {
  socket = "/run/edgehive/admin.sock"
}

# Each plugin runs from <plugin_dir>/<name> with its default restart and
# health policies and its default plugin-specific config.

plugin "edged" {}

plugin "edgehub" {}

plugin "metamanager" {}

plugin "eventbus" {}

plugin "devicetwin" {}

plugin "servicebus" {}
