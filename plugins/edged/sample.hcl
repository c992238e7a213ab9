config {
  runtime_endpoint             = "unix:///run/containerd/containerd.sock"
  sandbox_image                = "registry.k8s.io/pause:3.10"
  static_pod_dir               = "/etc/kubeedge/manifests"
  cgroup_driver                = "systemd"
  http_address                 = "127.0.0.1:10350"
  node_status_update_frequency = "10s"
  image_gc_high_threshold      = 80
  image_gc_low_threshold       = 40
  max_dead_containers_per_pod  = 1
  cluster_dns                  = ["169.254.96.16"]
  cluster_domain               = "cluster.local"
  node_labels                  = { "node-role.kubernetes.io/edge" = "" }
  register_node                = true
  report_events                = true

  kubelet_api {
    enabled          = true
    listen           = "0.0.0.0:10250"
    cert_file        = "/etc/kubeedge/certs/kubelet.crt"
    key_file         = "/etc/kubeedge/certs/kubelet.key"
    client_ca_file   = "/etc/kubeedge/ca/kubelet-client-ca.crt"
    authorized_users = ["kube-apiserver-kubelet-client"]
  }
}
