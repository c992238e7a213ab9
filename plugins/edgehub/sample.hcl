config {
  server               = "cloud.example.com:10000"
  project_id           = "e632aba927ea4ac2b575ec1603d56f10"
  token                = "bootstrap-token-from-keadm-gettoken"
  heartbeat            = "15s"
  tls_ca_file          = "/etc/kubeedge/ca/rootCA.crt"
  tls_cert_file        = "/etc/kubeedge/certs/server.crt"
  tls_private_key_file = "/etc/kubeedge/certs/server.key"
  https_server         = "https://cloud.example.com:10002"
  rotate_certificates  = true
  max_frame_bytes      = 8388608

  tunnel {
    enabled       = true
    server        = "cloud.example.com:10004"
    local_kubelet = "127.0.0.1:10250"
    max_streams   = 256
    pod_cidrs     = ["10.88.0.0/16"] # this node's pod range; [] refuses pod targets
  }
}
