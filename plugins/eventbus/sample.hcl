config {
  mode               = "external"
  broker_url         = "tcp://127.0.0.1:1883"
  listen             = "127.0.0.1:1883"
  qos                = 1
  retain             = false
  username           = "edge"
  password           = "secret"
  tls_ca_file        = "/etc/mosquitto/ca.crt"
  tls_cert_file      = "/etc/mosquitto/client.crt"
  tls_key_file       = "/etc/mosquitto/client.key"
  max_payload_bytes  = 1048576
  session_queue_size = 100
  db_file            = "/var/lib/edgehive/eventbus/eventbus.db"
}
