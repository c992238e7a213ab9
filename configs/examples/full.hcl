# A config showing every option edgehive understands, with its default in
# the comment. Relative paths are relative to this file's directory.

# Name of this node as the cloud sees it. Default: the lower-cased host name.
node_name = "edge-1"

# Persistent state (databases, certificates). Default "/var/lib/edgehive".
data_dir = "/var/lib/edgehive"

# Where plugin binaries are looked up when a plugin has no path.
# Default: "<directory of the edgehive executable>/plugins".
plugin_dir = "bin/plugins"

log {
  level  = "info" # trace | debug | info | warn | error (default info)
  format = "text" # text | json (default text)
}

# The admin API (/healthz, /readyz, /metrics, /v1/plugins). Exactly one of
# socket (default "/run/edgehive/admin.sock") or address, which must be a
# loopback host:port such as "127.0.0.1:10550".
admin {
  socket = "/run/edgehive/admin.sock"
}

router {
  queue_capacity    = 8192    # per-plugin queue bound in messages (default 8192)
  send_timeout      = "5s"    # wait on a full queue before failing (default 5s)
  max_message_bytes = 4194304 # largest accepted message (default 4 MiB)
}

plugin "edged" {
  path    = "bin/plugins/edged" # default: <plugin_dir>/<name>
  sha256  = "0000000000000000000000000000000000000000000000000000000000000000" # optional: refuse another binary
  args    = ["--v=2"]           # optional extra arguments
  env     = { TZ = "UTC" }      # optional extra environment
  enabled = true                # default true; false keeps it listed but stopped

  gomemlimit = "64MiB" # optional, passed as GOMEMLIMIT (bytes, B/KiB/MiB/GiB/TiB)
  gogc       = 100     # optional, passed as GOGC (negative: off)
  gomaxprocs = 1       # optional, passed as GOMAXPROCS (each extra P costs ~1 MB idle)

  # Restart after a crash: wait delay, doubling with jitter up to max_delay;
  # more than attempts restarts within interval marks the plugin failed.
  restart {
    attempts  = 10      # default 10 (0: never restart)
    interval  = "5m"    # default 5m
    delay     = "200ms" # default 200ms
    max_delay = "30s"   # default 30s
  }

  # Health probes: every interval, each bounded by timeout; failures
  # consecutive failed probes restart the plugin.
  health {
    interval = "5s" # default 5s
    timeout  = "2s" # default 2s
    failures = 3    # default 3
  }

  # Plugin-specific settings, checked against the schema the plugin declares.
  config {
    runtime_endpoint = "unix:///run/containerd/containerd.sock"
    sandbox_image    = "registry.k8s.io/pause:3.10"
  }
}

plugin "edgehub" {}
plugin "metamanager" {}
plugin "eventbus" {}
plugin "devicetwin" {}

plugin "servicebus" {
  enabled = false
}
