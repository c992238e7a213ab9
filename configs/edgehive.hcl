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
# health policies and its default plugin-specific config. One Go scheduler
# thread each (gomaxprocs = 1): the plugins mostly wait on I/O, and every
# extra P costs about a megabyte per process on a small node.

plugin "edged" {
  gomaxprocs = 1
}

plugin "edgehub" {
  gomaxprocs = 1
}

plugin "metamanager" {
  gomaxprocs = 1
}

plugin "eventbus" {
  gomaxprocs = 1
}

plugin "devicetwin" {
  gomaxprocs = 1
}

plugin "servicebus" {
  gomaxprocs = 1
}
