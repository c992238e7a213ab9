# cloudhive's embedded default configuration (`cloudhive run` without -config).
# kubeconfig "" means the in-cluster service account; `-kubeconfig FILE` overrides it.
kubeconfig = ""
namespace  = "kubeedge" # where casecret, cloudcoresecret and tokensecret live

log {
  level  = "info"
  format = "text"
}

cloudhub {
  listen              = "0.0.0.0:10000"
  bootstrap_listen    = "0.0.0.0:10002"
  advertise_addresses = [] # server certificate IP SANs; empty: every address of this host
  dns_names           = []
  reuse_port          = false
  keepalive_timeout   = "30s"
  node_limit          = 1000
  max_frame_bytes     = 8388608
  ack_timeout         = "5s"
  ack_retries         = 4
  queue_size          = 256
  token_ttl           = "24h"
  node_cert_validity  = "8760h"
}

edgecontroller {}

admin {
  listen = "127.0.0.1:10003"
}

# The kubelet tunnel (cloud/tunnel/README.md) is off without a tunnel block:
# tunnel {
#   listen               = "0.0.0.0:10004"
#   connect_listen       = "127.0.0.1:10005"
#   connect_client_ca    = "/etc/kubernetes/pki/egress-client-ca.crt"
#   max_streams_per_node = 64
#   allowed_ports        = [10250]
#   direct_dial          = false
#   # Several replicas (cloud/tunnel/README.md, "Several replicas"): each
#   # records the node sessions it holds in Leases and forwards CONNECTs for
#   # the others' nodes to their peer endpoint. Off without peer_listen.
#   peer_listen          = "0.0.0.0:10006"   # never shared with reuse_port
#   advertise_address    = "10.0.0.5:10006"  # default: peer_listen's IP, else the first cloudhub advertise address
# }
