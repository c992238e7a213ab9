config {
  db_file              = "/var/lib/edgehive/metamanager/edgehive.db"
  remote_query_timeout = "60s"

  metaserver {
    enabled = true
    listen  = "127.0.0.1:10550"
    secrets = false
  }
}
