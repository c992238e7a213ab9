package edgehub

import (
	"slices"
	"testing"

	"github.com/edgehive/edgehive/plugins/internal/plugintest"
	"github.com/edgehive/edgehive/sdk/sdktest"
)

func TestConfig(t *testing.T) {
	m := New()
	sdktest.New(t, m, sdktest.Options{ConfigJSON: `{"server":"cloud:10000","heartbeat":"30s","token":"abc"}`})
	if m.cfg.Server != "cloud:10000" || m.cfg.Heartbeat.D().Seconds() != 30 || m.cfg.Token != "abc" || m.cfg.ProjectID != defaultProjectID {
		t.Fatalf("config = %+v", m.cfg)
	}
}

func TestBadConfig(t *testing.T) {
	plugintest.RejectsBadConfig(t, newModule, map[string]string{
		`{"server":"cloud"}`:                                 "server",
		`{"server":"cloud:0"}`:                               "server",
		`{"project_id":""}`:                                  "project_id",
		`{"heartbeat":"-1s"}`:                                "heartbeat",
		`{"heartbeat":15}`:                                   "heartbeat",
		`{"tls_ca_file":"rootCA.crt"}`:                       "tls_ca_file",
		`{"tls_cert_file":""}`:                               "tls_cert_file",
		`{"tls_private_key_file":"k"}`:                       "tls_private_key_file",
		`{"https_server":"http://cloud:10002"}`:              "https_server",
		`{"https_server":"https://"}`:                        "https_server",
		`{"max_frame_bytes":0}`:                              "max_frame_bytes",
		`{"max_frame_bytes":1000000000}`:                     "max_frame_bytes",
		`{"rotate_certificates":1}`:                          "rotate_certificates",
		`{"websocket":{"url":"wss://x/events"}}`:             "websocket",
		`{"tunnel":{"enabled":true,"server":"cloud"}}`:       "tunnel.server",
		`{"tunnel":{"enabled":true,"local_kubelet":"x:0"}}`:  "tunnel.local_kubelet",
		`{"tunnel":{"enabled":true,"max_streams":0}}`:        "tunnel.max_streams",
		`{"tunnel":{"enabled":true,"listen":"127.0.0.1:1"}}`: "listen",
		`{"tunnel":{"enabled":"yes"}}`:                       "enabled",
		`{"tunnel":{"pod_cidrs":["10.88.0.0"]}}`:             "tunnel.pod_cidrs",
		`{"tunnel":{"pod_cidrs":["pods"]}}`:                  "tunnel.pod_cidrs",
		`{"tunnel":{"pod_cidrs":["0.0.0.0/0"]}}`:             "tunnel.pod_cidrs",
		`{"tunnel":{"pod_cidrs":["127.0.0.0/16"]}}`:          "tunnel.pod_cidrs",
		`{"tunnel":{"pod_cidrs":["169.254.169.254/32"]}}`:    "tunnel.pod_cidrs",
		`{"tunnel":{"pod_cidrs":["::/0"]}}`:                  "tunnel.pod_cidrs",
		`{"tunnel":{"pod_cidrs":["fe80::/64"]}}`:             "tunnel.pod_cidrs",
		`{"tunnel":{"pod_cidrs":"10.88.0.0/16"}}`:            "pod_cidrs",
		`{"tunnel":{"pod_ports":[8080]}}`:                    "pod_ports",
	})
}

func TestPodCIDRsConfig(t *testing.T) {
	m := New()
	sdktest.New(t, m, sdktest.Options{ConfigJSON: `{"tunnel":{"pod_cidrs":["10.88.0.7/16","fd00:10::/64","::ffff:10.99.0.0/112"]}}`})
	var got []string
	for _, p := range m.cfg.Tunnel.podPrefixes {
		got = append(got, p.String())
	}
	if want := []string{"10.88.0.0/16", "fd00:10::/64", "10.99.0.0/16"}; !slices.Equal(got, want) {
		t.Fatalf("pod ranges = %v, want %v", got, want)
	}
	m = New()
	sdktest.New(t, m, sdktest.Options{ConfigJSON: `{}`})
	if len(m.cfg.Tunnel.podPrefixes) != 0 || m.cfg.Tunnel.PodCIDRs == nil {
		t.Fatalf("default pod ranges = %v (%#v), want none", m.cfg.Tunnel.podPrefixes, m.cfg.Tunnel.PodCIDRs)
	}
}
