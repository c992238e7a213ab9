package edged

import (
	"net"

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
	}}
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
	return ck.Err(Name)
}
