# edgecontroller block of cloudhive's configuration; every attribute is
# optional and shown with its default.
downstream_workers = 4
upstream_workers   = 4
upstream_queue     = 1024
send_timeout       = "10s"
api_timeout        = "10s"
max_retries        = 8
sync_services      = true
event_qps          = 10
event_burst        = 50
edge_node_label    = "node-role.kubernetes.io/edge"
