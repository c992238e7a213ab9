package edged

import (
	"net"
	"strconv"

	"github.com/edgehive/edgehive/plugins/internal/pluginkit"
	"github.com/edgehive/edgehive/sdk"
)

// Defaults, from KubeEdge's edged defaults.
const (
	defaultRuntimeEndpoint   = "unix:///run/containerd/containerd.sock"
	defaultSandboxImage      = "registry.k8s.io/pause:3.10"
	defaultStaticPodDir      = "/etc/kubeedge/manifests"
	defaultCgroupDriver      = "systemd"
	defaultHTTPAddress       = "127.0.0.1:10350"
	defaultNodeStatusFreq    = "10s"
	defaultImageGCHigh       = 80
	defaultImageGCLow        = 40
	defaultMaxDeadContainers = 1
	defaultClusterDomain     = "cluster.local"
	defaultRegisterNode      = true
	defaultReportEvents      = true
	defaultKubeletAPIEnabled = false
	defaultKubeletAPIListen  = "0.0.0.0:10250"
)

type config struct {
	RuntimeEndpoint           string            `json:"runtime_endpoint"`
	SandboxImage              string            `json:"sandbox_image"`
	StaticPodDir              string            `json:"static_pod_dir"`
	CgroupDriver              string            `json:"cgroup_driver"`
	HTTPAddress               string            `json:"http_address"`
	NodeStatusUpdateFrequency sdk.Duration      `json:"node_status_update_frequency"`
	ImageGCHighThreshold      int               `json:"image_gc_high_threshold"`
	ImageGCLowThreshold       int               `json:"image_gc_low_threshold"`
	MaxDeadContainersPerPod   int               `json:"max_dead_containers_per_pod"`
	ClusterDNS                []string          `json:"cluster_dns"`
	ClusterDomain             string            `json:"cluster_domain"`
	NodeLabels                map[string]string `json:"node_labels"`
	RegisterNode              bool              `json:"register_node"`
	ReportEvents              bool              `json:"report_events"`
	KubeletAPI                kubeletAPIConfig  `json:"kubelet_api"`
}

// kubeletAPIConfig is the kubelet_api { ... } block: the node's kubelet HTTPS
// API (logs, exec, attach, port-forward, stats) for the API server.
type kubeletAPIConfig struct {
	Enabled         bool     `json:"enabled"`
	Listen          string   `json:"listen"`
	CertFile        string   `json:"cert_file"`
	KeyFile         string   `json:"key_file"`
	ClientCAFile    string   `json:"client_ca_file"`
	AuthorizedUsers []string `json:"authorized_users"`
}

func defaultConfig() config {
	return config{
		RuntimeEndpoint:           defaultRuntimeEndpoint,
		SandboxImage:              defaultSandboxImage,
		StaticPodDir:              defaultStaticPodDir,
		CgroupDriver:              defaultCgroupDriver,
		HTTPAddress:               defaultHTTPAddress,
		NodeStatusUpdateFrequency: pluginkit.MustDuration(defaultNodeStatusFreq),
		ImageGCHighThreshold:      defaultImageGCHigh,
		ImageGCLowThreshold:       defaultImageGCLow,
		MaxDeadContainersPerPod:   defaultMaxDeadContainers,
		ClusterDNS:                []string{},
		ClusterDomain:             defaultClusterDomain,
		NodeLabels:                map[string]string{},
		RegisterNode:              defaultRegisterNode,
		ReportEvents:              defaultReportEvents,
		KubeletAPI: kubeletAPIConfig{
			Enabled:         defaultKubeletAPIEnabled,
			Listen:          defaultKubeletAPIListen,
			AuthorizedUsers: []string{},
		},
	}
}

func schema() *sdk.Schema {
	return &sdk.Schema{Attributes: []sdk.Attribute{
		{Name: "runtime_endpoint", Type: sdk.TypeString, Default: defaultRuntimeEndpoint,
			Description: "CRI runtime endpoint (unix:// or tcp://)"},
		{Name: "sandbox_image", Type: sdk.TypeString, Default: defaultSandboxImage,
			Description: "pause image for pod sandboxes"},
		{Name: "static_pod_dir", Type: sdk.TypeString, Default: defaultStaticPodDir,
			Description: "folder of static pod manifests; empty disables static pods"},
		{Name: "cgroup_driver", Type: sdk.TypeString, Default: defaultCgroupDriver,
			Description: "cgroup driver of the runtime: systemd or cgroupfs"},
		{Name: "http_address", Type: sdk.TypeString, Default: defaultHTTPAddress,
			Description: "loopback address of the read-only pod API"},
		{Name: "node_status_update_frequency", Type: sdk.TypeDuration, Default: defaultNodeStatusFreq,
			Description: "how often node status is reported"},
		{Name: "image_gc_high_threshold", Type: sdk.TypeNumber, Default: defaultImageGCHigh,
			Description: "disk usage percent that starts image garbage collection"},
		{Name: "image_gc_low_threshold", Type: sdk.TypeNumber, Default: defaultImageGCLow,
			Description: "disk usage percent image garbage collection frees down to"},
		{Name: "max_dead_containers_per_pod", Type: sdk.TypeNumber, Default: defaultMaxDeadContainers,
			Description: "dead containers kept per pod container"},
		{Name: "cluster_dns", Type: sdk.TypeListOfString, Default: []string{},
			Description: "DNS server IPs written into pods' resolv.conf"},
		{Name: "cluster_domain", Type: sdk.TypeString, Default: defaultClusterDomain,
			Description: "cluster DNS domain"},
		{Name: "node_labels", Type: sdk.TypeMapOfString, Default: map[string]string{},
			Description: "labels set on the node object at registration"},
		{Name: "register_node", Type: sdk.TypeBool, Default: defaultRegisterNode,
			Description: "register the node with the cloud"},
		{Name: "report_events", Type: sdk.TypeBool, Default: defaultReportEvents,
			Description: "send pod events (Pulling, Started, BackOff...) upstream, rate-limited"},
	}, Blocks: []sdk.Block{{
		Name:        "kubelet_api",
		Description: "the node's kubelet HTTPS API (logs, exec, attach, port-forward, stats) for the API server",
		Schema: sdk.Schema{Attributes: []sdk.Attribute{
			{Name: "enabled", Type: sdk.TypeBool, Default: defaultKubeletAPIEnabled,
				Description: "serve the kubelet API"},
			{Name: "listen", Type: sdk.TypeString, Default: defaultKubeletAPIListen,
				Description: "address to listen on, host:port (port 0: any free port)"},
			{Name: "cert_file", Type: sdk.TypeString, Default: "",
				Description: "serving certificate (PEM); empty with key_file empty: a self-signed one under data_dir"},
			{Name: "key_file", Type: sdk.TypeString, Default: "",
				Description: "serving certificate's private key (PEM)"},
			{Name: "client_ca_file", Type: sdk.TypeString, Default: "",
				Description: "CA that signs client certificates (the API server's kubelet-client CA); required when enabled"},
			{Name: "authorized_users", Type: sdk.TypeListOfString, Default: []string{},
				Description: "client certificate common names allowed in; empty: any certificate from client_ca_file"},
		}},
	}}}
}

func (c *config) validate() error {
	var ck pluginkit.Checks
	ck.URL("runtime_endpoint", c.RuntimeEndpoint, "unix", "tcp")
	ck.NotEmpty("sandbox_image", c.SandboxImage)
	ck.AbsPath("static_pod_dir", c.StaticPodDir)
	ck.OneOf("cgroup_driver", c.CgroupDriver, "systemd", "cgroupfs")
	ck.Loopback("http_address", c.HTTPAddress)
	ck.PositiveDuration("node_status_update_frequency", c.NodeStatusUpdateFrequency)
	ck.Range("image_gc_high_threshold", c.ImageGCHighThreshold, 0, 100)
	ck.Range("image_gc_low_threshold", c.ImageGCLowThreshold, 0, 100)
	if c.ImageGCLowThreshold > c.ImageGCHighThreshold {
		ck.Fail("image_gc_low_threshold", "%d must not exceed image_gc_high_threshold %d", c.ImageGCLowThreshold, c.ImageGCHighThreshold)
	}
	if c.MaxDeadContainersPerPod < 0 {
		ck.Fail("max_dead_containers_per_pod", "%d must not be negative", c.MaxDeadContainersPerPod)
	}
	for i, s := range c.ClusterDNS {
		if net.ParseIP(s) == nil {
			ck.Fail("cluster_dns", "entry %d: %q is not an IP address", i, s)
		}
	}
	for k := range c.NodeLabels {
		if k == "" {
			ck.Fail("node_labels", "empty label key")
		}
	}
	c.KubeletAPI.validate(&ck)
	return ck.Err(Name)
}

func (k *kubeletAPIConfig) validate(ck *pluginkit.Checks) {
	ck.AbsPath("kubelet_api.cert_file", k.CertFile)
	ck.AbsPath("kubelet_api.key_file", k.KeyFile)
	ck.AbsPath("kubelet_api.client_ca_file", k.ClientCAFile)
	if (k.CertFile == "") != (k.KeyFile == "") {
		ck.Fail("kubelet_api.cert_file", "cert_file and key_file go together: give both or neither")
	}
	for i, u := range k.AuthorizedUsers {
		if u == "" {
			ck.Fail("kubelet_api.authorized_users", "entry %d is empty", i)
		}
	}
	if !k.Enabled {
		return
	}
	host, port, err := net.SplitHostPort(k.Listen)
	if n, perr := strconv.Atoi(port); err != nil || perr != nil || n < 0 || n > 65535 {
		ck.Fail("kubelet_api.listen", "%q: want host:port with a port 0..65535", k.Listen)
	} else if host != "" && net.ParseIP(host) == nil && host != "localhost" {
		ck.Fail("kubelet_api.listen", "%q: host must be an IP address or localhost", k.Listen)
	}
	if k.ClientCAFile == "" {
		ck.Fail("kubelet_api.client_ca_file", "required when the kubelet API is enabled: clients are authenticated by certificate")
	}
}
