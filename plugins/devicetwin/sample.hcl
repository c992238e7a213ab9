config {
  db_file             = "/var/lib/edgehive/devicetwin/devicetwin.db"
  sync_retry_interval = "10s"
}
