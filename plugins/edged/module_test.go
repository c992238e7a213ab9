package edged

import (
	"context"
	"testing"

	"k8s.io/utils/clock"

	"github.com/edgehive/edgehive/plugins/edged/cri"

	"github.com/edgehive/edgehive/plugins/internal/plugintest"
	"github.com/edgehive/edgehive/sdk"
	"github.com/edgehive/edgehive/sdk/sdktest"
)

// newModule runs over a fake runtime: the shared suite expects a healthy module.
func newModule() sdk.Module {
	return NewWithRuntime(cri.NewFakeRuntime(), clock.RealClock{})
}

func TestNoRuntimeStillStarts(t *testing.T) {
	h := sdktest.New(t, New(), sdktest.Options{ConfigJSON: `{"runtime_endpoint":"unix:///nonexistent/cri.sock"}`})
	if err := h.Health(context.Background()); err == nil {
		t.Fatal("healthy without a runtime")
	}
}

func TestModule(t *testing.T) {
	plugintest.Run(t, plugintest.Case{New: newModule, Name: "edged", Group: "edged", Version: Version, Sample: "sample.hcl"})
}

func TestDefaults(t *testing.T) {
	want := defaultConfig()
	// An absent block keeps the module's defaults; a present one gets the block schema's.
	want.KubeletAPI = kubeletAPIConfig{}
	plugintest.DefaultsAgree(t, schema(), want)
	plugintest.DefaultsAgree(t, &schema().Blocks[0].Schema, defaultConfig().KubeletAPI)
}

func TestConfig(t *testing.T) {
	m := New()
	sdktest.New(t, m, sdktest.Options{ConfigJSON: `{"cgroup_driver":"cgroupfs","cluster_dns":["10.96.0.10"],"image_gc_low_threshold":70,"node_status_update_frequency":"1m"}`})
	if m.cfg.CgroupDriver != "cgroupfs" || m.cfg.ClusterDNS[0] != "10.96.0.10" || m.cfg.ImageGCLowThreshold != 70 ||
		m.cfg.NodeStatusUpdateFrequency.D().Minutes() != 1 || m.cfg.SandboxImage != defaultSandboxImage {
		t.Fatalf("config = %+v", m.cfg)
	}
}

func TestBadConfig(t *testing.T) {
	plugintest.RejectsBadConfig(t, newModule, map[string]string{
		`{"runtime_endpoint":"http://x"}`:                                           "runtime_endpoint",
		`{"runtime_endpoint":"unix://relative.sock"}`:                               "runtime_endpoint",
		`{"sandbox_image":""}`:                                                      "sandbox_image",
		`{"static_pod_dir":"manifests"}`:                                            "static_pod_dir",
		`{"cgroup_driver":"cgroup"}`:                                                "cgroup_driver",
		`{"http_address":"0.0.0.0:10350"}`:                                          "http_address",
		`{"http_address":"127.0.0.1"}`:                                              "http_address",
		`{"node_status_update_frequency":"0s"}`:                                     "node_status_update_frequency",
		`{"node_status_update_frequency":"often"}`:                                  "node_status_update_frequency",
		`{"image_gc_high_threshold":101}`:                                           "image_gc_high_threshold",
		`{"image_gc_low_threshold":90}`:                                             "image_gc_low_threshold",
		`{"max_dead_containers_per_pod":-1}`:                                        "max_dead_containers_per_pod",
		`{"max_dead_containers_per_pod":1.5}`:                                       "max_dead_containers_per_pod",
		`{"cluster_dns":["dns.local"]}`:                                             "cluster_dns",
		`{"register_node":"yes"}`:                                                   "register_node",
		`{"runtime":"x"}`:                                                           "runtime",
		`{"kubelet_api":{"enabled":true}}`:                                          "kubelet_api.client_ca_file",
		`{"kubelet_api":{"enabled":true,"client_ca_file":"/ca","listen":"x"}}`:      "kubelet_api.listen",
		`{"kubelet_api":{"enabled":true,"client_ca_file":"/ca","listen":"h:1"}}`:    "kubelet_api.listen",
		`{"kubelet_api":{"enabled":true,"client_ca_file":"/ca","listen":":70000"}}`: "kubelet_api.listen",
		`{"kubelet_api":{"client_ca_file":"ca.crt"}}`:                               "kubelet_api.client_ca_file",
		`{"kubelet_api":{"cert_file":"/a.crt"}}`:                                    "kubelet_api.cert_file",
		`{"kubelet_api":{"authorized_users":[""]}}`:                                 "kubelet_api.authorized_users",
		`{"kubelet_api":{"port":10250}}`:                                            "port",
	})
}
