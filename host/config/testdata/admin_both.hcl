node_name = "edge-1"

admin {
  socket  = "/run/edgehive/admin.sock"
  address = "127.0.0.1:10550"
}
