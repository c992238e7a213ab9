package main

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/edgehive/edgehive/cloud/cloudhub"
	"github.com/edgehive/edgehive/configs"
)

func TestEmbeddedDefault(t *testing.T) {
	disk, err := os.ReadFile("../../configs/cloudhive.hcl")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(disk, configs.Cloudhive) {
		t.Fatal("embedded default differs from configs/cloudhive.hcl")
	}
	cfg, diags := parseConfig(configs.CloudhiveFilename, configs.Cloudhive)
	if diags.HasErrors() {
		t.Fatalf("default config: %v", diags)
	}
	if _, d := decodeControllerConfig(cfg.EdgeController); d.HasErrors() {
		t.Fatalf("default edgecontroller block: %v", d)
	}
	// The file states the built-in defaults, so both must agree.
	empty, diags := parseConfig("empty.hcl", nil)
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	empty.EdgeController, cfg.EdgeController = nil, nil
	if got, want := strings.TrimSpace(dump(cfg)), strings.TrimSpace(dump(empty)); got != want {
		t.Fatalf("configs/cloudhive.hcl:\n%s\nbuilt-in defaults:\n%s", got, want)
	}
	if cfg.Namespace != "kubeedge" || cfg.Listen != "0.0.0.0:10000" || cfg.BootstrapListen != "0.0.0.0:10002" ||
		cfg.AdminAddr != "127.0.0.1:10003" || cfg.Hub.KeepaliveTimeout != 30*time.Second ||
		cfg.Hub.NodeLimit != 1000 || cfg.TokenTTL != 24*time.Hour {
		t.Fatalf("defaults: %+v", cfg)
	}
}

func dump(c *Config) string {
	var b strings.Builder
	for _, line := range []any{c.Kubeconfig, c.Namespace, c.KubeQPS, c.KubeBurst, c.LogLevel, c.LogJSON, c.AdminAddr,
		c.Listen, c.BootstrapListen, c.AdvertiseAddresses, c.DNSNames, c.ReusePort, c.Hub, c.TokenTTL, c.NodeCertValidity} {
		b.WriteString(strings.TrimSpace(strings.ReplaceAll(sprint(line), "\n", " ")) + "\n")
	}
	return b.String()
}

func TestParseConfig(t *testing.T) {
	tests := []struct {
		name  string
		src   string
		diags []string // each must appear in the output, in order
		check func(*testing.T, *Config)
	}{
		{name: "full", src: `
kubeconfig = "/etc/kube.conf"
namespace  = "edge-system"
kube_qps   = 50
kube_burst = 80
log {
  level  = "debug"
  format = "json"
}
cloudhub {
  listen              = "127.0.0.1:20000"
  bootstrap_listen    = "127.0.0.1:20002"
  advertise_addresses = ["127.0.0.1", "::1"]
  dns_names           = ["cloud.example"]
  reuse_port          = true
  keepalive_timeout   = "40s"
  node_limit          = 10
  max_frame_bytes     = 65536
  write_timeout       = "5s"
  ack_timeout         = "2s"
  ack_retries         = 0
  queue_size          = 8
  token_ttl           = "2h"
  node_cert_validity  = "720h"
}
edgecontroller {}
admin { listen = "127.0.0.1:20003" }
`, check: func(t *testing.T, c *Config) {
			want := cloudhub.Config{KeepaliveTimeout: 40 * time.Second, NodeLimit: 10, MaxFrameBytes: 65536,
				WriteTimeout: 5 * time.Second, AckTimeout: 2 * time.Second, AckRetries: 0, QueueSize: 8}
			if sprint(c.Hub) != sprint(want) {
				t.Fatalf("hub %+v, want %+v", c.Hub, want)
			}
			if c.Kubeconfig != "/etc/kube.conf" || c.Namespace != "edge-system" || c.KubeQPS != 50 || c.KubeBurst != 80 ||
				c.LogLevel != "debug" || !c.LogJSON || !c.ReusePort || len(c.AdvertiseAddresses) != 2 ||
				c.DNSNames[0] != "cloud.example" || c.TokenTTL != 2*time.Hour || c.NodeCertValidity != 720*time.Hour ||
				c.AdminAddr != "127.0.0.1:20003" || c.Listen != "127.0.0.1:20000" || c.BootstrapListen != "127.0.0.1:20002" {
				t.Fatalf("%+v", c)
			}
		}},
		{name: "tunnel", src: `
tunnel {
  listen               = "127.0.0.1:20004"
  connect_listen       = "127.0.0.1:20005"
  connect_client_ca    = "/etc/kubernetes/pki/egress-ca.crt"
  max_streams_per_node = 8
  allowed_ports        = [10250, 10255]
  direct_dial          = true
}
`, check: func(t *testing.T, c *Config) {
			tc := c.Tunnel
			if tc == nil || !tc.Server.DirectDial || tc.Listen != "127.0.0.1:20004" || tc.ConnectListen != "127.0.0.1:20005" ||
				tc.ConnectClientCA != "/etc/kubernetes/pki/egress-ca.crt" || tc.Server.MaxStreamsPerNode != 8 ||
				sprint(tc.Server.AllowedPorts) != "[10250 10255]" {
				t.Fatalf("tunnel %+v", tc)
			}
		}},
		{name: "tunnel defaults on a unix socket", src: "tunnel {\n  connect_listen = \"unix:/run/cloudhive/konnect.sock\"\n}\n",
			check: func(t *testing.T, c *Config) {
				tc := c.Tunnel
				if tc == nil || tc.Server.DirectDial || tc.Listen != "0.0.0.0:10004" || tc.ConnectClientCA != "" ||
					tc.Server.MaxStreamsPerNode != 64 || sprint(tc.Server.AllowedPorts) != "[10250]" {
					t.Fatalf("tunnel %+v", tc)
				}
			}},
		{name: "no tunnel block, no tunnel", src: "namespace = \"a\"\n", check: func(t *testing.T, c *Config) {
			if c.Tunnel != nil {
				t.Fatalf("tunnel %+v", c.Tunnel)
			}
		}},
		{name: "bad tunnel values", src: `tunnel {
  listen               = "anywhere"
  connect_listen       = "unix:relative.sock"
  connect_client_ca    = "ca.crt"
  max_streams_per_node = 0
  allowed_ports        = [0, 10250]
}
`, diags: []string{
			`t.hcl:2:26: error: Invalid value for listen: "anywhere" is not host:port`,
			`t.hcl:3:26: error: Invalid value for connect_listen: "unix:relative.sock": the unix socket path must be absolute`,
			`t.hcl:4:26: error: Invalid value for connect_client_ca: "ca.crt" is not an absolute path`,
			`t.hcl:5:26: error: Invalid value for max_streams_per_node: must be positive, not 0`,
			`t.hcl:6:26: error: Invalid value for allowed_ports: 0 is not a port`,
		}},
		{name: "peer endpoint, advertised", src: "tunnel {\n  connect_listen = \"unix:/run/t.sock\"\n  peer_listen = \"0.0.0.0:10006\"\n  advertise_address = \"cloud-1.example:10006\"\n}\n",
			check: func(t *testing.T, c *Config) {
				tc := c.Tunnel
				if tc.PeerListen != "0.0.0.0:10006" || tc.AdvertiseAddress != "cloud-1.example:10006" {
					t.Fatalf("tunnel %+v", tc)
				}
			}},
		{name: "peer endpoint on one address: advertised as it is bound", src: "tunnel {\n  connect_listen = \"unix:/run/t.sock\"\n  peer_listen = \"10.0.0.5:0\"\n}\n",
			check: func(t *testing.T, c *Config) {
				got, err := c.Tunnel.peerAdvertise(nil, &net.TCPAddr{IP: net.ParseIP("10.0.0.5"), Port: 41000})
				if err != nil || got != "10.0.0.5:41000" {
					t.Fatalf("advertised %q, %v", got, err)
				}
			}},
		{name: "peer endpoint on every address: the first cloudhub address", src: "cloudhub {\n  advertise_addresses = [\"192.0.2.7\"]\n}\n" +
			"tunnel {\n  connect_listen = \"unix:/run/t.sock\"\n  peer_listen = \"0.0.0.0:10006\"\n}\n",
			check: func(t *testing.T, c *Config) {
				got, err := c.Tunnel.peerAdvertise(c.AdvertiseAddresses, &net.TCPAddr{IP: net.IPv4zero, Port: 10006})
				if err != nil || got != "192.0.2.7:10006" {
					t.Fatalf("advertised %q, %v", got, err)
				}
			}},
		{name: "no peer endpoint by default", src: "tunnel {\n  connect_listen = \"unix:/run/t.sock\"\n}\n",
			check: func(t *testing.T, c *Config) {
				if c.Tunnel.PeerListen != "" || c.Tunnel.AdvertiseAddress != "" {
					t.Fatalf("tunnel %+v", c.Tunnel)
				}
			}},
		{name: "bad peer values", src: `tunnel {
  connect_listen    = "unix:/run/t.sock"
  peer_listen       = "everywhere"
  advertise_address = "0.0.0.0:10006"
}
`, diags: []string{
			`t.hcl:3:23: error: Invalid value for peer_listen: "everywhere" is not host:port`,
			`t.hcl:4:23: error: Invalid value for advertise_address: "0.0.0.0:10006": 0.0.0.0 is not an address to dial`,
		}},
		{name: "advertise_address port", src: "tunnel {\n  connect_listen = \"unix:/run/t.sock\"\n  peer_listen = \"0.0.0.0:10006\"\n  advertise_address = \"cloud:0\"\n}\n",
			diags: []string{`error: Invalid value for advertise_address: "cloud:0": bad port`}},
		{name: "advertise_address without peer_listen", src: "tunnel {\n  connect_listen = \"unix:/run/t.sock\"\n  advertise_address = \"cloud:10006\"\n}\n",
			diags: []string{`error: Invalid value for advertise_address: needs peer_listen`}},
		{name: "peer endpoint on every address needs an address to advertise", src: "tunnel {\n  connect_listen = \"unix:/run/t.sock\"\n  peer_listen = \"0.0.0.0:10006\"\n}\n",
			diags: []string{`error: Invalid value for advertise_address: required when peer_listen ("0.0.0.0:10006") is on every address and cloudhub.advertise_addresses is empty`}},
		{name: "tcp CONNECT needs a client CA", src: "tunnel {\n  connect_listen = \"127.0.0.1:10005\"\n}\n",
			diags: []string{`error: Invalid value for connect_client_ca: required when connect_listen is TCP`}},
		{name: "unknown key in tunnel", src: "tunnel {\n  connect_ca = \"/x\"\n}\n",
			diags: []string{`t.hcl:2:3: error: Unsupported argument: An argument named "connect_ca" is not expected here.`}},
		{name: "unknown top-level key", src: "namespace = \"a\"\nbogus = 1\n",
			diags: []string{`t.hcl:2:1: error: Unsupported argument: An argument named "bogus" is not expected here.`}},
		{name: "unknown key in cloudhub", src: "cloudhub {\n  listen = \"0.0.0.0:1\"\n  lisen = \"x\"\n}\n",
			diags: []string{`t.hcl:3:3: error: Unsupported argument: An argument named "lisen" is not expected here.`}},
		{name: "unknown block", src: "devicecontroller {}\n",
			diags: []string{`t.hcl:1:1: error: Unsupported block type`}},
		{name: "unknown key in edgecontroller", src: "edgecontroller {\n  workers = 4\n}\n",
			diags: []string{`t.hcl:2:3: error: Unsupported argument`}},
		{name: "bad edgecontroller value", src: "edgecontroller {\n  send_timeout = \"soon\"\n}\n",
			diags: []string{`error: Invalid edgecontroller block`}},
		{name: "wrong type", src: "cloudhub {\n  node_limit = \"many\"\n}\n",
			diags: []string{`t.hcl:2:17: error: Unsuitable value type`}},
		{name: "syntax error", src: "cloudhub {\n", diags: []string{`t.hcl:1:10: error: Unclosed configuration block`}},
		{name: "every bad value at once", src: `namespace = "Bad_NS"
log { level = "loud" }
cloudhub {
  listen              = "nowhere"
  advertise_addresses = ["10.0.0.300"]
  keepalive_timeout   = "soon"
  node_limit          = 0
  max_frame_bytes     = 10
  ack_retries         = -1
  token_ttl           = "-1h"
}
admin { listen = "localhost:10003" }
`, diags: []string{
			`t.hcl:1:13: error: Invalid value for namespace: "Bad_NS" is not a namespace name`,
			`t.hcl:2:15: error: Invalid value for level`,
			`t.hcl:4:25: error: Invalid value for listen: "nowhere" is not host:port`,
			`t.hcl:5:25: error: Invalid value for advertise_addresses: "10.0.0.300" is not an IP address`,
			`t.hcl:6:25: error: Invalid value for keepalive_timeout`,
			`t.hcl:7:25: error: Invalid value for node_limit: must be positive, not 0`,
			`t.hcl:8:25: error: Invalid value for max_frame_bytes`,
			`t.hcl:9:25: error: Invalid value for ack_retries`,
			`t.hcl:10:25: error: Invalid value for token_ttl`,
			`t.hcl:12:18: error: Invalid value for listen: "localhost:10003": listen on an IP address`,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, diags := parseConfig("t.hcl", []byte(tt.src))
			if diags.HasErrors() == false && cfg != nil {
				_, d := decodeControllerConfig(cfg.EdgeController)
				diags = append(diags, d...)
			}
			var out bytes.Buffer
			writeDiags(&out, diags)
			if len(tt.diags) == 0 {
				if diags.HasErrors() {
					t.Fatalf("unexpected diagnostics:\n%s", out.String())
				}
				tt.check(t, cfg)
				return
			}
			rest := out.String()
			for _, want := range tt.diags {
				i := strings.Index(rest, want)
				if i < 0 {
					t.Fatalf("missing %q in:\n%s", want, out.String())
				}
				rest = rest[i+len(want):]
			}
		})
	}
}

func sprint(v any) string { return fmt.Sprintf("%+v", v) }
