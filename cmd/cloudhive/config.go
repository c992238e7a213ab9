package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/gohcl"
	"github.com/hashicorp/hcl/v2/hclsyntax"

	"github.com/edgehive/edgehive/cloud/cloudhub"
	"github.com/edgehive/edgehive/cloud/tunnel"
	hostconfig "github.com/edgehive/edgehive/host/config"
)

// Config defaults beyond cloudhub's.
const (
	defaultNamespace   = "kubeedge"
	defaultAdminListen = "127.0.0.1:10003"
	defaultLogLevel    = "info"
	defaultKubeQPS     = 100
	defaultKubeBurst   = 200
)

// fileConfig is cloudhive's HCL file. Every block is optional; a missing
// key takes its default; an unknown key is an error.
type fileConfig struct {
	Kubeconfig     string       `hcl:"kubeconfig,optional"`
	Namespace      string       `hcl:"namespace,optional"`
	KubeQPS        *float64     `hcl:"kube_qps,optional"`
	KubeBurst      *int         `hcl:"kube_burst,optional"`
	Log            *logBlock    `hcl:"log,block"`
	CloudHub       *hubBlock    `hcl:"cloudhub,block"`
	EdgeController *opaqueBlock `hcl:"edgecontroller,block"`
	Admin          *adminBlock  `hcl:"admin,block"`
	Tunnel         *tunnelBlock `hcl:"tunnel,block"`
}

// tunnelBlock turns on the kubelet tunnel (cloud/tunnel); absent, it is off.
type tunnelBlock struct {
	Listen            string   `hcl:"listen,optional"`
	ConnectListen     string   `hcl:"connect_listen,optional"`
	ConnectClientCA   string   `hcl:"connect_client_ca,optional"`
	MaxStreamsPerNode *int     `hcl:"max_streams_per_node,optional"`
	AllowedPorts      []int    `hcl:"allowed_ports,optional"`
	DirectDial        *bool    `hcl:"direct_dial,optional"`
	PeerListen        string   `hcl:"peer_listen,optional"`
	AdvertiseAddress  string   `hcl:"advertise_address,optional"`
	Body              hcl.Body `hcl:",body"`
}

type logBlock struct {
	Level  string   `hcl:"level,optional"`
	Format string   `hcl:"format,optional"`
	Body   hcl.Body `hcl:",body"`
}

type adminBlock struct {
	Listen string   `hcl:"listen,optional"`
	Body   hcl.Body `hcl:",body"`
}

type hubBlock struct {
	Listen             string   `hcl:"listen,optional"`
	BootstrapListen    string   `hcl:"bootstrap_listen,optional"`
	AdvertiseAddresses []string `hcl:"advertise_addresses,optional"`
	DNSNames           []string `hcl:"dns_names,optional"`
	ReusePort          *bool    `hcl:"reuse_port,optional"`
	KeepaliveTimeout   string   `hcl:"keepalive_timeout,optional"`
	NodeLimit          *int     `hcl:"node_limit,optional"`
	MaxFrameBytes      *int64   `hcl:"max_frame_bytes,optional"`
	WriteTimeout       string   `hcl:"write_timeout,optional"`
	AckTimeout         string   `hcl:"ack_timeout,optional"`
	AckRetries         *int     `hcl:"ack_retries,optional"`
	QueueSize          *int     `hcl:"queue_size,optional"`
	TokenTTL           string   `hcl:"token_ttl,optional"`
	NodeCertValidity   string   `hcl:"node_cert_validity,optional"`
	Body               hcl.Body `hcl:",body"`
}

// opaqueBlock keeps a block's body for the package that owns its schema.
type opaqueBlock struct {
	Body hcl.Body `hcl:",remain"`
}

// Config is the decoded, validated configuration.
type Config struct {
	Kubeconfig string
	Namespace  string
	KubeQPS    float32
	KubeBurst  int
	LogLevel   string
	LogJSON    bool
	AdminAddr  string

	Listen             string
	BootstrapListen    string
	AdvertiseAddresses []net.IP
	DNSNames           []string
	ReusePort          bool
	Hub                cloudhub.Config
	TokenTTL           time.Duration
	NodeCertValidity   time.Duration

	// Tunnel is the tunnel block, nil when it is absent (no tunnel).
	Tunnel *TunnelConfig

	// EdgeController is the edgecontroller block's body (an empty body when
	// the block is absent), decoded by newControllers.
	EdgeController hcl.Body
}

// TunnelConfig is the decoded tunnel block.
type TunnelConfig struct {
	// Listen is where nodes open their tunnel sessions (mTLS, node certificates).
	Listen string
	// ConnectListen is the CONNECT proxy for the API server's egress
	// selector: host:port (mTLS, clients verified against ConnectClientCA)
	// or unix:PATH (no TLS; the socket is mode 0600).
	ConnectListen   string
	ConnectClientCA string
	Server          tunnel.Config
	// PeerListen is where other replicas forward CONNECTs for the nodes
	// whose sessions this replica holds (mTLS, cloudhive server
	// certificates only); empty: one replica, no Leases, no forwarding.
	PeerListen string
	// AdvertiseAddress is the peer endpoint as the other replicas dial it;
	// empty: PeerListen's host when it is one address, else the first
	// cloudhub advertise address, with PeerListen's bound port.
	AdvertiseAddress string
}

// unixPrefix marks a unix socket address in connect_listen.
const unixPrefix = "unix:"

// parseConfig decodes and validates src, reporting every problem with its
// position.
func parseConfig(filename string, src []byte) (*Config, hcl.Diagnostics) {
	file, diags := hclsyntax.ParseConfig(src, filename, hcl.InitialPos)
	if diags.HasErrors() {
		return nil, diags
	}
	var fc fileConfig
	if d := gohcl.DecodeBody(file.Body, nil, &fc); d.HasErrors() {
		return nil, append(diags, d...)
	}
	v := validator{}
	cfg := v.build(&fc, file.Body)
	// Top to bottom, as the file reads.
	sort.SliceStable(v.diags, func(i, j int) bool {
		a, b := v.diags[i].Subject, v.diags[j].Subject
		if a == nil || b == nil {
			return a == nil && b != nil
		}
		return a.Start.Byte < b.Start.Byte
	})
	diags = append(diags, v.diags...)
	if diags.HasErrors() {
		return nil, diags
	}
	return cfg, diags
}

// validator collects diagnostics, each pointing at the value at fault.
type validator struct{ diags hcl.Diagnostics }

func (v *validator) fail(body hcl.Body, attr, format string, args ...any) {
	v.diags = append(v.diags, &hcl.Diagnostic{
		Severity: hcl.DiagError,
		Summary:  "Invalid value for " + attr,
		Detail:   fmt.Sprintf(format, args...),
		Subject:  attrRange(body, attr),
	})
}

// attrRange is where attr's value is in body, or the body itself.
func attrRange(body hcl.Body, attr string) *hcl.Range {
	if sb, ok := body.(*hclsyntax.Body); ok {
		if a, ok := sb.Attributes[attr]; ok {
			r := a.Expr.Range()
			return &r
		}
		r := sb.SrcRange
		return &r
	}
	if body != nil {
		r := body.MissingItemRange()
		return &r
	}
	return nil
}

func (v *validator) duration(body hcl.Body, attr, val string, def time.Duration) time.Duration {
	if val == "" {
		return def
	}
	d, err := time.ParseDuration(val)
	if err != nil || d <= 0 {
		v.fail(body, attr, "%q is not a positive duration such as \"30s\"", val)
		return def
	}
	return d
}

func (v *validator) hostPort(body hcl.Body, attr, val string) {
	host, port, err := net.SplitHostPort(val)
	if err != nil {
		v.fail(body, attr, "%q is not host:port: %v", val, err)
		return
	}
	if host != "" && net.ParseIP(host) == nil {
		v.fail(body, attr, "%q: listen on an IP address", val)
	}
	var p int
	if _, err := fmt.Sscanf(port, "%d", &p); err != nil || p < 0 || p > 65535 {
		v.fail(body, attr, "%q: bad port", val)
	}
}

func (v *validator) positive(body hcl.Body, attr string, val *int, def int) int {
	if val == nil {
		return def
	}
	if *val <= 0 {
		v.fail(body, attr, "must be positive, not %d", *val)
		return def
	}
	return *val
}

func (v *validator) build(fc *fileConfig, root hcl.Body) *Config {
	cfg := &Config{
		Kubeconfig: fc.Kubeconfig, Namespace: fc.Namespace,
		KubeQPS: defaultKubeQPS, KubeBurst: defaultKubeBurst,
		LogLevel: defaultLogLevel, AdminAddr: defaultAdminListen,
		Listen: cloudhub.DefaultListen, BootstrapListen: cloudhub.DefaultBootstrapListen,
		Hub: cloudhub.DefaultConfig(), TokenTTL: cloudhub.DefaultTokenTTL, NodeCertValidity: cloudhub.DefaultNodeCertTTL,
		EdgeController: hcl.EmptyBody(),
	}
	if cfg.Namespace == "" {
		cfg.Namespace = defaultNamespace
	} else if !validDNSLabel(cfg.Namespace) {
		v.fail(root, "namespace", "%q is not a namespace name", cfg.Namespace)
	}
	if fc.KubeQPS != nil {
		if *fc.KubeQPS <= 0 {
			v.fail(root, "kube_qps", "must be positive")
		} else {
			cfg.KubeQPS = float32(*fc.KubeQPS)
		}
	}
	cfg.KubeBurst = v.positive(root, "kube_burst", fc.KubeBurst, defaultKubeBurst)

	if l := fc.Log; l != nil {
		switch strings.ToLower(l.Level) {
		case "":
		case "trace", "debug", "info", "warn", "error":
			cfg.LogLevel = strings.ToLower(l.Level)
		default:
			v.fail(l.Body, "level", "%q is not one of trace, debug, info, warn, error", l.Level)
		}
		switch l.Format {
		case "", "text":
		case "json":
			cfg.LogJSON = true
		default:
			v.fail(l.Body, "format", "%q is not text or json", l.Format)
		}
	}
	if a := fc.Admin; a != nil && a.Listen != "" {
		cfg.AdminAddr = a.Listen
		v.hostPort(a.Body, "listen", a.Listen)
	}
	if fc.EdgeController != nil {
		cfg.EdgeController = fc.EdgeController.Body
	}
	if h := fc.CloudHub; h != nil {
		v.hub(h, cfg)
	}
	if t := fc.Tunnel; t != nil {
		cfg.Tunnel = v.tunnel(t, cfg.AdvertiseAddresses)
	}
	return cfg
}

func (v *validator) hub(h *hubBlock, cfg *Config) {
	b := h.Body
	if h.Listen != "" {
		cfg.Listen = h.Listen
		v.hostPort(b, "listen", h.Listen)
	}
	if h.BootstrapListen != "" {
		cfg.BootstrapListen = h.BootstrapListen
		v.hostPort(b, "bootstrap_listen", h.BootstrapListen)
	}
	for _, a := range h.AdvertiseAddresses {
		ip := net.ParseIP(a)
		if ip == nil {
			v.fail(b, "advertise_addresses", "%q is not an IP address", a)
			continue
		}
		cfg.AdvertiseAddresses = append(cfg.AdvertiseAddresses, ip)
	}
	for _, n := range h.DNSNames {
		if n == "" || strings.ContainsAny(n, " /:") {
			v.fail(b, "dns_names", "%q is not a DNS name", n)
			continue
		}
		cfg.DNSNames = append(cfg.DNSNames, n)
	}
	if h.ReusePort != nil {
		cfg.ReusePort = *h.ReusePort
	}
	hub := &cfg.Hub
	hub.KeepaliveTimeout = v.duration(b, "keepalive_timeout", h.KeepaliveTimeout, hub.KeepaliveTimeout)
	hub.WriteTimeout = v.duration(b, "write_timeout", h.WriteTimeout, hub.WriteTimeout)
	hub.AckTimeout = v.duration(b, "ack_timeout", h.AckTimeout, hub.AckTimeout)
	hub.NodeLimit = v.positive(b, "node_limit", h.NodeLimit, hub.NodeLimit)
	hub.QueueSize = v.positive(b, "queue_size", h.QueueSize, hub.QueueSize)
	if h.AckRetries != nil {
		if *h.AckRetries < 0 || *h.AckRetries > 100 {
			v.fail(b, "ack_retries", "must be 0..100, not %d", *h.AckRetries)
		} else {
			hub.AckRetries = *h.AckRetries
		}
	}
	if h.MaxFrameBytes != nil {
		if *h.MaxFrameBytes < 1024 || *h.MaxFrameBytes > 1<<30 {
			v.fail(b, "max_frame_bytes", "must be 1024..1073741824, not %d", *h.MaxFrameBytes)
		} else {
			hub.MaxFrameBytes = *h.MaxFrameBytes
		}
	}
	cfg.TokenTTL = v.duration(b, "token_ttl", h.TokenTTL, cfg.TokenTTL)
	cfg.NodeCertValidity = v.duration(b, "node_cert_validity", h.NodeCertValidity, cfg.NodeCertValidity)
}

func (v *validator) tunnel(t *tunnelBlock, advertised []net.IP) *TunnelConfig {
	b := t.Body
	tc := &TunnelConfig{Listen: tunnel.DefaultListen, ConnectListen: tunnel.DefaultConnectListen,
		ConnectClientCA: t.ConnectClientCA, Server: tunnel.DefaultConfig()}
	if t.Listen != "" {
		tc.Listen = t.Listen
		v.hostPort(b, "listen", t.Listen)
	}
	if t.ConnectListen != "" {
		tc.ConnectListen = t.ConnectListen
	}
	if path, ok := strings.CutPrefix(tc.ConnectListen, unixPrefix); ok {
		if !filepath.IsAbs(path) {
			v.fail(b, "connect_listen", "%q: the unix socket path must be absolute", tc.ConnectListen)
		}
	} else {
		v.hostPort(b, "connect_listen", tc.ConnectListen)
		if tc.ConnectClientCA == "" {
			v.fail(b, "connect_client_ca", "required when connect_listen is TCP: the CA of the API server's egress client certificate")
		}
	}
	if tc.ConnectClientCA != "" && !filepath.IsAbs(tc.ConnectClientCA) {
		v.fail(b, "connect_client_ca", "%q is not an absolute path", tc.ConnectClientCA)
	}
	if t.DirectDial != nil {
		tc.Server.DirectDial = *t.DirectDial
	}
	v.peer(t, tc, advertised)
	tc.Server.MaxStreamsPerNode = v.positive(b, "max_streams_per_node", t.MaxStreamsPerNode, tc.Server.MaxStreamsPerNode)
	if t.AllowedPorts != nil {
		tc.Server.AllowedPorts = nil
		for _, p := range t.AllowedPorts {
			if p < 1 || p > 65535 {
				v.fail(b, "allowed_ports", "%d is not a port", p)
				continue
			}
			tc.Server.AllowedPorts = append(tc.Server.AllowedPorts, p)
		}
		if len(t.AllowedPorts) == 0 {
			v.fail(b, "allowed_ports", "must name at least one port (the kubelet's, 10250)")
		}
	}
	return tc
}

// peer checks peer_listen and advertise_address: the address other
// replicas dial must be known, from one of them or cloudhub's
// advertise_addresses.
func (v *validator) peer(t *tunnelBlock, tc *TunnelConfig, advertised []net.IP) {
	b := t.Body
	if t.PeerListen == "" {
		if t.AdvertiseAddress != "" {
			v.fail(b, "advertise_address", "needs peer_listen: it is the address of the peer endpoint")
		}
		return
	}
	tc.PeerListen = t.PeerListen
	v.hostPort(b, "peer_listen", t.PeerListen)
	if t.AdvertiseAddress != "" {
		tc.AdvertiseAddress = t.AdvertiseAddress
		host, port, err := net.SplitHostPort(t.AdvertiseAddress)
		var p int
		switch {
		case err != nil:
			v.fail(b, "advertise_address", "%q is not host:port: %v", t.AdvertiseAddress, err)
		case host == "" || strings.ContainsAny(host, " /"):
			v.fail(b, "advertise_address", "%q: name the host other replicas dial", t.AdvertiseAddress)
		case net.ParseIP(host) != nil && net.ParseIP(host).IsUnspecified():
			v.fail(b, "advertise_address", "%q: %s is not an address to dial", t.AdvertiseAddress, host)
		default:
			if _, err := fmt.Sscanf(port, "%d", &p); err != nil || p < 1 || p > 65535 {
				v.fail(b, "advertise_address", "%q: bad port", t.AdvertiseAddress)
			}
		}
		return
	}
	host, _, err := net.SplitHostPort(t.PeerListen)
	if err != nil {
		return // reported above
	}
	if ip := net.ParseIP(host); (ip == nil || ip.IsUnspecified()) && len(advertised) == 0 {
		v.fail(b, "advertise_address", "required when peer_listen (%q) is on every address and cloudhub.advertise_addresses is empty", t.PeerListen)
	}
}

// peerAdvertise is the address other replicas dial for this one's peer
// endpoint, now that it listens on bound.
func (tc *TunnelConfig) peerAdvertise(advertised []net.IP, bound net.Addr) (string, error) {
	if tc.AdvertiseAddress != "" {
		return tc.AdvertiseAddress, nil
	}
	tcp, ok := bound.(*net.TCPAddr)
	if !ok {
		return "", fmt.Errorf("peer_listen is not TCP: %v", bound)
	}
	host, _, err := net.SplitHostPort(tc.PeerListen)
	if err != nil {
		return "", err
	}
	if ip := net.ParseIP(host); ip != nil && !ip.IsUnspecified() {
		return net.JoinHostPort(ip.String(), fmt.Sprint(tcp.Port)), nil
	}
	if len(advertised) == 0 {
		return "", errors.New("no advertise_address")
	}
	return net.JoinHostPort(advertised[0].String(), fmt.Sprint(tcp.Port)), nil
}

func validDNSLabel(s string) bool {
	if s == "" || len(s) > 63 || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' {
			return false
		}
	}
	return true
}

// writeDiags prints FILE:LINE:COL diagnostics, one per line.
func writeDiags(w io.Writer, diags hcl.Diagnostics) {
	_ = hostconfig.FormatDiagnostics(w, diags)
}
