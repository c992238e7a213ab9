//go:build e2e

package e2eenv

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclwrite"
	"github.com/zclconf/go-cty/cty"
	v1 "k8s.io/api/core/v1"
)

// Test images as `make containerd-up` imports them (hack/images).
const (
	BusyboxImage = "docker.io/library/busybox:1.36"
	PauseImage   = "registry.k8s.io/pause:3.10"
)

// Containerd is the private test containerd of hack/containerd.sh.
type Containerd struct {
	Address     string // socket path
	Dir         string
	Snapshotter string
	// PodCIDR is the subnet of its CNI network, read from its config, so
	// the guard rails cover the addresses pods really get.
	PodCIDR string
}

// Endpoint is the CRI endpoint URL.
func (c Containerd) Endpoint() string { return "unix://" + c.Address }

// ContainerdFromEnv reads the environment `hack/containerd.sh env DIR`
// prints (make e2e sets it) and checks its proxy guard rail. Without it the
// test fails: the edge needs a runtime, and the system's is not for tests.
func ContainerdFromEnv(t testing.TB) Containerd {
	t.Helper()
	c := Containerd{Address: os.Getenv("CONTAINERD_ADDRESS"), Dir: os.Getenv("CONTAINERD_DIR"), Snapshotter: os.Getenv("CONTAINERD_SNAPSHOTTER")}
	if c.Address == "" || c.Dir == "" {
		t.Fatal("CONTAINERD_ADDRESS and CONTAINERD_DIR are not set: run through `make e2e` (or `make containerd-up` and `env $(bash hack/containerd.sh env _output/containerd) go test -tags e2e ...`)")
	}
	CheckContainerdProxy(t, filepath.Join(c.Dir, "containerd.pid"))
	subnet, err := cniSubnet(filepath.Join(c.Dir, "cni", "10-edgehive.conflist"))
	if err != nil {
		t.Fatalf("test containerd's pod subnet: %v", err)
	}
	c.PodCIDR = subnet
	return c
}

// cniSubnet reads the host-local subnet of hack/containerd.sh's network.
func cniSubnet(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	var conf struct {
		Plugins []struct {
			IPAM struct {
				Ranges [][]struct {
					Subnet string `json:"subnet"`
				} `json:"ranges"`
			} `json:"ipam"`
		} `json:"plugins"`
	}
	if err := json.Unmarshal(b, &conf); err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	for _, p := range conf.Plugins {
		for _, r := range p.IPAM.Ranges {
			for _, sub := range r {
				if _, n, err := net.ParseCIDR(sub.Subnet); err == nil {
					return n.String(), nil
				}
			}
		}
	}
	return "", fmt.Errorf("%s: no ipam subnet", path)
}

// JoinOptions are `edgehive join`'s flags.
type JoinOptions struct {
	Cloud      *Cloudhive
	Token      string
	Node       string
	ConfigFile string
	DataDir    string
}

// Join runs `edgehive join` against the cloudhive and returns its output.
func Join(ctx context.Context, binDir string, o JoinOptions) (string, error) {
	return RunCommand(ctx, nil, filepath.Join(binDir, "edgehive"), "join",
		"-cloud", "127.0.0.1",
		"-port", strconv.Itoa(o.Cloud.CloudPort()),
		"-https-port", strconv.Itoa(o.Cloud.BootstrapPort()),
		"-token", o.Token, "-node", o.Node,
		"-config", o.ConfigFile, "-data-dir", o.DataDir, "-force")
}

// Edge is one edge node: its joined, patched config and, once started, the
// `edgehive run` process (the host and its plugins, one process group).
type Edge struct {
	*Process
	Node        string
	Bin         string
	DataDir     string
	ConfigFile  string
	AdminSocket string
	// EdgedAddress is edged's read-only pod API; MetaServerAddress is
	// metamanager's MetaServer.
	EdgedAddress      string
	MetaServerAddress string
	Containerd        Containerd
}

// NewEdge lays out an edge node's directory (data dir, config path, admin
// socket, free loopback ports for edged and the MetaServer) and makes the
// node's name resolve to loopback. It writes no config; JoinEdge or
// WriteConfig does.
func NewEdge(t testing.TB, binDir, node string, ctrd Containerd) *Edge {
	t.Helper()
	ResolveToLoopback(t, node)
	dir := t.TempDir()
	return &Edge{
		Node: node, Bin: filepath.Join(binDir, "edgehive"),
		DataDir: filepath.Join(dir, "data"), ConfigFile: filepath.Join(dir, "edgehive.hcl"),
		AdminSocket:       filepath.Join(dir, "admin.sock"),
		EdgedAddress:      fmt.Sprintf("127.0.0.1:%d", FreePort(t)),
		MetaServerAddress: fmt.Sprintf("127.0.0.1:%d", FreePort(t)),
		Containerd:        ctrd,
	}
}

// JoinEdge joins node to the cloudhive with token (failing the test if join
// fails) and patches the written config for this machine: the private
// containerd and test images, free loopback ports and an admin socket under
// the edge's own dir. It does not start the edge; call Start.
func JoinEdge(t testing.TB, binDir string, cloud *Cloudhive, token, node string, ctrd Containerd) *Edge {
	t.Helper()
	e := NewEdge(t, binDir, node, ctrd)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	out, err := Join(ctx, binDir, JoinOptions{Cloud: cloud, Token: token, Node: node, ConfigFile: e.ConfigFile, DataDir: e.DataDir})
	if err != nil {
		t.Fatalf("edgehive join: %v\n%s", err, out)
	}
	if err := e.patchConfig(t, nil); err != nil {
		t.Fatalf("patch %s: %v", e.ConfigFile, err)
	}
	return e
}

// WriteConfig writes src as the edge's config and patches it as JoinEdge
// does, plus extra plugin settings (plugin -> attribute -> value).
func (e *Edge) WriteConfig(t testing.TB, src []byte, extra map[string]map[string]cty.Value) error {
	if err := os.WriteFile(e.ConfigFile, src, 0o644); err != nil {
		return err
	}
	return e.patchConfig(t, extra)
}

// patchConfig sets what the test machine needs into the config join wrote,
// leaving everything else (cloud address, certificates) as join made it.
func (e *Edge) patchConfig(t testing.TB, extra map[string]map[string]cty.Value) error {
	src, err := os.ReadFile(e.ConfigFile)
	if err != nil {
		return err
	}
	f, diags := hclwrite.ParseConfig(src, e.ConfigFile, hcl.InitialPos)
	if diags.HasErrors() {
		return fmt.Errorf("parse: %w", diags)
	}
	root := f.Body()
	admin := root.FirstMatchingBlock("admin", nil)
	if admin == nil {
		admin = root.AppendNewBlock("admin", nil)
	}
	admin.Body().RemoveAttribute("address")
	admin.Body().SetAttributeValue("socket", cty.StringVal(e.AdminSocket))

	set := map[string]map[string]cty.Value{
		"edged": {
			"runtime_endpoint": cty.StringVal(e.Containerd.Endpoint()),
			"sandbox_image":    cty.StringVal(PauseImage),
			"static_pod_dir":   cty.StringVal(filepath.Join(e.DataDir, "manifests")),
			// hack/containerd.sh's runc uses cgroupfs (no systemd here).
			"cgroup_driver": cty.StringVal("cgroupfs"),
			"http_address":  cty.StringVal(e.EdgedAddress),
		},
		// The embedded MQTT broker (internal mode) on its own port.
		"eventbus": {
			"listen": cty.StringVal(fmt.Sprintf("127.0.0.1:%d", FreePort(t))),
		},
		"servicebus": {
			"listen": cty.StringVal(fmt.Sprintf("127.0.0.1:%d", FreePort(t))),
		},
	}
	for plugin, attrs := range extra {
		if set[plugin] == nil {
			set[plugin] = map[string]cty.Value{}
		}
		for k, v := range attrs {
			set[plugin][k] = v
		}
	}
	for plugin, attrs := range set {
		pb := root.FirstMatchingBlock("plugin", []string{plugin})
		if pb == nil {
			return fmt.Errorf("join wrote no plugin %q block", plugin)
		}
		cfg := pb.Body().FirstMatchingBlock("config", nil)
		if cfg == nil {
			cfg = pb.Body().AppendNewBlock("config", nil)
		}
		for k, v := range attrs {
			cfg.Body().SetAttributeValue(k, v)
		}
	}
	// The MetaServer on, on its own port, so edge applications can be tested.
	if mm := root.FirstMatchingBlock("plugin", []string{"metamanager"}); mm != nil {
		cfg := mm.Body().FirstMatchingBlock("config", nil)
		if cfg == nil {
			cfg = mm.Body().AppendNewBlock("config", nil)
		}
		if old := cfg.Body().FirstMatchingBlock("metaserver", nil); old != nil {
			cfg.Body().RemoveBlock(old)
		}
		ms := cfg.Body().AppendNewBlock("metaserver", nil)
		ms.Body().SetAttributeValue("enabled", cty.True)
		ms.Body().SetAttributeValue("listen", cty.StringVal(e.MetaServerAddress))
	}
	if err := os.MkdirAll(filepath.Join(e.DataDir, "manifests"), 0o755); err != nil {
		return err
	}
	return os.WriteFile(e.ConfigFile, f.Bytes(), 0o644)
}

// Start runs `edgehive run -config FILE` (the first time; later use
// Restart, Stop, Kill and Start of the embedded Process).
func (e *Edge) Start(t testing.TB) {
	t.Helper()
	if e.Process != nil {
		e.Process.Start()
		return
	}
	env := []string{
		"CONTAINERD_ADDRESS=" + e.Containerd.Address,
		"CONTAINERD_NAMESPACE=k8s.io",
	}
	e.Process = StartProcess(t, ProcessSpec{
		Name: "edgehive-" + e.Node, Path: e.Bin, Args: []string{"run", "-config", e.ConfigFile},
		Env: env, LogDir: filepath.Dir(e.ConfigFile),
	})
}

// StartEdgehive joins and starts one edge node.
func StartEdgehive(t testing.TB, binDir string, cloud *Cloudhive, token, node string, ctrd Containerd) *Edge {
	t.Helper()
	e := JoinEdge(t, binDir, cloud, token, node, ctrd)
	e.Start(t)
	return e
}

// EdgedPods reads edged's read-only pod API: the pods the edge runs, with
// the status it computed, whether or not the cloud is reachable.
func (e *Edge) EdgedPods(ctx context.Context) ([]v1.Pod, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+e.EdgedAddress+"/pods", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("edged pods: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		return nil, fmt.Errorf("edged pods: %s: %s", resp.Status, b)
	}
	var list v1.PodList
	if err := json.NewDecoder(resp.Body).Decode(&list); err != nil {
		return nil, fmt.Errorf("edged pods: %w", err)
	}
	return list.Items, nil
}

// WaitEdgedPods polls edged's pod API (it has no watch) until cond holds.
func (e *Edge) WaitEdgedPods(ctx context.Context, cond func([]v1.Pod) bool) ([]v1.Pod, error) {
	tick := time.NewTicker(criPoll)
	defer tick.Stop()
	var last []v1.Pod
	var lastErr error
	for {
		pods, err := e.EdgedPods(ctx)
		if err == nil {
			last = pods
			if cond(pods) {
				return pods, nil
			}
		}
		lastErr = err
		select {
		case <-e.Done():
			return last, fmt.Errorf("edgehive %s exited", e.Node)
		case <-ctx.Done():
			var states []string
			for _, p := range last {
				states = append(states, p.Name+"="+string(p.Status.Phase))
			}
			return last, fmt.Errorf("edged pods on %s: %w (last: %v, error: %v)", e.Node, ctx.Err(), states, lastErr)
		case <-tick.C:
		}
	}
}

// JoinedConfig is a config of the shape `edgehive join` writes, for edges
// that talk to a test double instead of a joined cloudhive.
func JoinedConfig(node, dataDir, server, httpsServer, caFile, certFile, keyFile string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "node_name = %q\ndata_dir  = %q\n\nlog {\n  level = \"info\"\n}\n\n", node, dataDir)
	fmt.Fprintf(&b, "plugin \"edgehub\" {\n  gomaxprocs = 1\n  config {\n    server               = %q\n    https_server         = %q\n"+
		"    tls_ca_file          = %q\n    tls_cert_file        = %q\n    tls_private_key_file = %q\n  }\n}\n",
		server, httpsServer, caFile, certFile, keyFile)
	for _, p := range []string{"edged", "metamanager", "eventbus", "devicetwin", "servicebus"} {
		fmt.Fprintf(&b, "\nplugin %q {\n  gomaxprocs = 1\n}\n", p)
	}
	return b.String()
}

// PluginStatus is one row of `edgehive status -json`.
type PluginStatus struct {
	Name     string `json:"name"`
	State    string `json:"state"`
	PID      int    `json:"pid"`
	Restarts int    `json:"restarts"`
}

// Status runs `edgehive status -json` against the edge's admin socket.
func (e *Edge) Status(ctx context.Context) ([]PluginStatus, error) {
	out, err := RunCommand(ctx, nil, e.Bin, "status", "-json", "-admin", e.AdminSocket)
	if err != nil {
		return nil, err
	}
	var st []PluginStatus
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		return nil, fmt.Errorf("edgehive status: %w: %s", err, out)
	}
	return st, nil
}
