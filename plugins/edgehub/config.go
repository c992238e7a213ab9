package edgehub

import (
	"fmt"
	"net/netip"

	"github.com/edgehive/edgehive/plugins/internal/pluginkit"
	"github.com/edgehive/edgehive/sdk"
)

// Defaults, from KubeEdge's edgehub defaults.
const (
	defaultServer             = "127.0.0.1:10000"
	defaultProjectID          = "e632aba927ea4ac2b575ec1603d56f10"
	defaultHeartbeat          = "15s"
	defaultTLSCAFile          = "/etc/kubeedge/ca/rootCA.crt"
	defaultTLSCertFile        = "/etc/kubeedge/certs/server.crt"
	defaultTLSPrivateKeyFile  = "/etc/kubeedge/certs/server.key"
	defaultHTTPSServer        = "https://127.0.0.1:10002"
	defaultRotateCertificates = true
	defaultMaxFrameBytes      = 8 << 20
	defaultTunnelEnabled      = false
	defaultTunnelServer       = "127.0.0.1:10004"
	defaultTunnelLocalKubelet = "127.0.0.1:10250"
	defaultTunnelMaxStreams   = 256
)

type config struct {
	Server             string       `json:"server"`
	ProjectID          string       `json:"project_id"`
	Token              string       `json:"token"`
	Heartbeat          sdk.Duration `json:"heartbeat"`
	TLSCAFile          string       `json:"tls_ca_file"`
	TLSCertFile        string       `json:"tls_cert_file"`
	TLSPrivateKeyFile  string       `json:"tls_private_key_file"`
	HTTPSServer        string       `json:"https_server"`
	RotateCertificates bool         `json:"rotate_certificates"`
	MaxFrameBytes      int          `json:"max_frame_bytes"`
	Tunnel             tunnelConfig `json:"tunnel"`
}

// tunnelConfig is the tunnel { ... } block: the session through which
// cloudhive reaches the node's kubelet API.
type tunnelConfig struct {
	Enabled      bool   `json:"enabled"`
	Server       string `json:"server"`
	LocalKubelet string `json:"local_kubelet"`
	MaxStreams   int    `json:"max_streams"`
	// PodCIDRs are the ranges of this node's pod addresses that streams may
	// dial (pods/<p>/proxy, services/<s>/proxy); empty: pod targets are
	// refused.
	PodCIDRs []string `json:"pod_cidrs"`

	podPrefixes []netip.Prefix // parsed PodCIDRs, set by validate
}

func defaultConfig() config {
	return config{
		Server:             defaultServer,
		ProjectID:          defaultProjectID,
		Heartbeat:          pluginkit.MustDuration(defaultHeartbeat),
		TLSCAFile:          defaultTLSCAFile,
		TLSCertFile:        defaultTLSCertFile,
		TLSPrivateKeyFile:  defaultTLSPrivateKeyFile,
		HTTPSServer:        defaultHTTPSServer,
		RotateCertificates: defaultRotateCertificates,
		MaxFrameBytes:      defaultMaxFrameBytes,
		Tunnel: tunnelConfig{
			Enabled:      defaultTunnelEnabled,
			Server:       defaultTunnelServer,
			LocalKubelet: defaultTunnelLocalKubelet,
			MaxStreams:   defaultTunnelMaxStreams,
			PodCIDRs:     []string{},
		},
	}
}

func schema() *sdk.Schema {
	return &sdk.Schema{Attributes: []sdk.Attribute{
		{Name: "server", Type: sdk.TypeString, Default: defaultServer,
			Description: "cloudhub websocket address, host:port"},
		{Name: "project_id", Type: sdk.TypeString, Default: defaultProjectID,
			Description: "project id in the websocket path and project_id header"},
		{Name: "token", Type: sdk.TypeString, Default: "",
			Description: "bootstrap token for the first node certificate"},
		{Name: "heartbeat", Type: sdk.TypeDuration, Default: defaultHeartbeat,
			Description: "keepalive interval on the cloud link"},
		{Name: "tls_ca_file", Type: sdk.TypeString, Default: defaultTLSCAFile,
			Description: "cloud CA certificate (fetched from https_server when absent)"},
		{Name: "tls_cert_file", Type: sdk.TypeString, Default: defaultTLSCertFile,
			Description: "node certificate (obtained with the token when absent)"},
		{Name: "tls_private_key_file", Type: sdk.TypeString, Default: defaultTLSPrivateKeyFile,
			Description: "node private key"},
		{Name: "https_server", Type: sdk.TypeString, Default: defaultHTTPSServer,
			Description: "cloudhub certificate service (/ca.crt, /edge.crt)"},
		{Name: "rotate_certificates", Type: sdk.TypeBool, Default: defaultRotateCertificates,
			Description: "renew the node certificate before it expires"},
		{Name: "max_frame_bytes", Type: sdk.TypeNumber, Default: defaultMaxFrameBytes,
			Description: "largest websocket frame accepted from the cloud"},
	}, Blocks: []sdk.Block{{
		Name:        "tunnel",
		Description: "the tunnel session through which cloudhive reaches the node's kubelet API",
		Schema: sdk.Schema{Attributes: []sdk.Attribute{
			{Name: "enabled", Type: sdk.TypeBool, Default: defaultTunnelEnabled,
				Description: "keep a tunnel session to cloudhive"},
			{Name: "server", Type: sdk.TypeString, Default: defaultTunnelServer,
				Description: "cloudhive's tunnel address, host:port"},
			{Name: "local_kubelet", Type: sdk.TypeString, Default: defaultTunnelLocalKubelet,
				Description: "the kubelet API on this node that tunnel streams reach, host:port"},
			{Name: "max_streams", Type: sdk.TypeNumber, Default: defaultTunnelMaxStreams,
				Description: "tunnel streams served at once; more are refused"},
			{Name: "pod_cidrs", Type: sdk.TypeListOfString, Default: []string{},
				Description: "this node's pod address ranges that tunnel streams may dial (pod and service proxy); empty refuses every pod target"},
		}},
	}}}
}

func (c *config) validate() error {
	var ck pluginkit.Checks
	ck.HostPort("server", c.Server)
	ck.NotEmpty("project_id", c.ProjectID)
	ck.PositiveDuration("heartbeat", c.Heartbeat)
	ck.NotEmpty("tls_ca_file", c.TLSCAFile)
	ck.AbsPath("tls_ca_file", c.TLSCAFile)
	ck.NotEmpty("tls_cert_file", c.TLSCertFile)
	ck.AbsPath("tls_cert_file", c.TLSCertFile)
	ck.NotEmpty("tls_private_key_file", c.TLSPrivateKeyFile)
	ck.AbsPath("tls_private_key_file", c.TLSPrivateKeyFile)
	ck.URL("https_server", c.HTTPSServer, "https")
	ck.Range("max_frame_bytes", c.MaxFrameBytes, 1, sdk.MaxSendBytes)
	if c.Tunnel.Enabled {
		ck.HostPort("tunnel.server", c.Tunnel.Server)
		ck.HostPort("tunnel.local_kubelet", c.Tunnel.LocalKubelet)
		ck.Range("tunnel.max_streams", c.Tunnel.MaxStreams, 1, 65536)
	}
	c.Tunnel.podPrefixes = c.Tunnel.podPrefixes[:0]
	for _, s := range c.Tunnel.PodCIDRs {
		p, err := parsePodCIDR(s)
		if err != nil {
			ck.Fail("tunnel.pod_cidrs", "%v", err)
			continue
		}
		c.Tunnel.podPrefixes = append(c.Tunnel.podPrefixes, p)
	}
	return ck.Err(Name)
}

// parsePodCIDR reads one pod_cidrs entry: a CIDR that cannot cover the
// host's own loopback, link-local or unspecified addresses.
func parsePodCIDR(s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not a CIDR (e.g. 10.88.0.0/16): %w", s, err)
	}
	p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-unmapBits(p.Addr())).Masked()
	if !p.IsValid() {
		return netip.Prefix{}, fmt.Errorf("%q is not a CIDR", s)
	}
	for _, forbidden := range forbiddenPodRanges {
		if p.Overlaps(forbidden) {
			return netip.Prefix{}, fmt.Errorf("%q overlaps %s, which is never a pod range", s, forbidden)
		}
	}
	return p, nil
}

// unmapBits: a v4-mapped v6 prefix (::ffff:10.0.0.0/104) loses 96 bits
// when unmapped.
func unmapBits(a netip.Addr) int {
	if a.Is4In6() {
		return 96
	}
	return 0
}

// forbiddenPodRanges are never pod addresses: a pod_cidrs entry touching
// them could open the host's own loopback or link-local services.
var forbiddenPodRanges = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),
	netip.MustParsePrefix("127.0.0.0/8"),
	netip.MustParsePrefix("169.254.0.0/16"),
	netip.MustParsePrefix("224.0.0.0/3"), // multicast, reserved, broadcast
	netip.MustParsePrefix("::/127"),      // unspecified, loopback
	netip.MustParsePrefix("fe80::/10"),
	netip.MustParsePrefix("ff00::/8"),
}
