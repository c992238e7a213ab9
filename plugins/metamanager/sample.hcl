config {
  db_file              = "/var/lib/edgehive/metamanager/edgehive.db"
  meta_server_enable   = true
  meta_server_address  = "127.0.0.1:10550"
  serve_secrets        = false
  remote_query_timeout = "60s"
}
