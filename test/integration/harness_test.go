// Package integration runs the host with real plugin processes: the binary
// built from cmd/edgehive, serving the built-in plugins through links and the
// loopback test plugin through `__serve loopback`.
package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/edgehive/edgehive/host"
	"github.com/edgehive/edgehive/host/config"
	"github.com/edgehive/edgehive/host/router"
	"github.com/edgehive/edgehive/sdk"
	pluginv1 "github.com/edgehive/edgehive/sdk/proto/plugin/v1"
)

var builtinPlugins = []string{"edged", "edgehub", "metamanager", "eventbus", "devicetwin", "servicebus"}

// binDir holds edgehive, plugins/<name> links and plugins/hello, built once.
var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "edgehive-it-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := func() int {
		defer os.RemoveAll(dir)
		if err := buildBinaries(dir); err != nil {
			fmt.Fprintln(os.Stderr, "build:", err)
			return 1
		}
		binDir = dir
		return m.Run()
	}()
	os.Exit(code)
}

func buildBinaries(dir string) error {
	root, err := filepath.Abs("../..")
	if err != nil {
		return err
	}
	build := func(out, pkg string) error {
		cmd := exec.Command("go", "build", "-o", out, pkg)
		cmd.Dir = root
		cmd.Stderr = os.Stderr
		return cmd.Run()
	}
	if err := build(filepath.Join(dir, "edgehive"), "./cmd/edgehive"); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(dir, "plugins"), 0o755); err != nil {
		return err
	}
	for _, p := range builtinPlugins {
		if err := os.Symlink("../edgehive", filepath.Join(dir, "plugins", p)); err != nil {
			return err
		}
	}
	return build(filepath.Join(dir, "plugins", "hello"), "./examples/plugins/hello")
}

func edgehiveBin() string { return filepath.Join(binDir, "edgehive") }

// loopbackBlock is the HCL of one loopback test plugin; extra goes in the
// plugin block.
func loopbackBlock(name, group, extra string) string {
	return loopbackBlockCfg(name, group, extra, "")
}

// loopbackBlockCfg also adds lines to the plugin's config block.
func loopbackBlockCfg(name, group, extra, cfgExtra string) string {
	return fmt.Sprintf(`
plugin %q {
  path = %q
  args = ["__serve", "loopback"]
  restart {
    attempts = 5
    interval = "1m"
    delay    = "50ms"
    max_delay = "1s"
  }
  %s
  config {
    group = %q
    %s
  }
}
`, name, edgehiveBin(), extra, group, cfgExtra)
}

func writeConfig(t *testing.T, body string) (path, dataDir, sock string) {
	t.Helper()
	dir := t.TempDir()
	dataDir = filepath.Join(dir, "data")
	sock = filepath.Join(dir, "admin.sock")
	src := fmt.Sprintf("node_name = \"it-node\"\ndata_dir = %q\nplugin_dir = %q\nlog {\n  level = \"debug\"\n}\nadmin {\n  socket = %q\n}\n%s", dataDir, filepath.Join(binDir, "plugins"), sock, body)
	path = filepath.Join(dir, "edgehive.hcl")
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	return path, dataDir, sock
}

// testHost runs a host in this process, with a driver module the test uses
// to send messages and observe what comes back.
type testHost struct {
	t      *testing.T
	h      *host.Host
	driver *router.Local
	cancel context.CancelFunc
	done   chan error

	mu       sync.Mutex
	received []*pluginv1.Delivery
	seen     map[string]int // msg ids of "recorded" reports, by the recorded id
	notify   chan struct{}
}

func startHost(t *testing.T, body string) *testHost {
	t.Helper()
	return startHostAs(t, body, "driver", "test")
}

// startHostAs is startHost with the driver module registered under name and
// group, to stand in for a module the config leaves out (edgehub: the cloud).
func startHostAs(t *testing.T, body, name, group string) *testHost {
	t.Helper()
	path, _, _ := writeConfig(t, body)
	src, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	cfg, diags := config.Parse(path, src, config.WithOptions(config.Options{BaseDir: filepath.Dir(path), DefaultPluginDir: filepath.Join(binDir, "plugins")}))
	if diags.HasErrors() {
		t.Fatalf("config: %s", diags.Error())
	}
	logger := hclog.New(&hclog.LoggerOptions{Name: "host", Level: hclog.Info, Output: testWriter{t}})
	h, err := host.New(cfg, logger)
	if err != nil {
		t.Fatal(err)
	}
	th := &testHost{t: t, h: h, seen: map[string]int{}, notify: make(chan struct{}, 1), done: make(chan error, 1)}
	th.driver, err = router.NewLocal(h.Router(), name, group, th.onDelivery)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	th.cancel = cancel
	go func() { th.done <- h.Run(ctx, 10*time.Second) }()
	t.Cleanup(th.stop)
	return th
}

func (th *testHost) stop() {
	th.cancel()
	select {
	case err := <-th.done:
		if err != nil {
			th.t.Logf("host run: %v", err)
		}
	case <-time.After(30 * time.Second):
		th.t.Error("host did not stop within 30s")
	}
	th.driver.Close()
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func (th *testHost) onDelivery(d *pluginv1.Delivery) {
	th.mu.Lock()
	th.received = append(th.received, d)
	if d.GetMessage().GetOperation() == "recorded" {
		var rec map[string]string
		if json.Unmarshal(d.GetMessage().GetContent(), &rec) == nil {
			th.seen[rec["id"]]++
		}
	}
	th.mu.Unlock()
	select {
	case th.notify <- struct{}{}:
	default:
	}
}

// waitRunning waits until every named plugin is running.
func (th *testHost) waitRunning(names ...string) {
	th.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		ok := true
		for _, n := range names {
			sup := th.h.Supervisor(n)
			if sup == nil {
				th.t.Fatalf("no plugin %s", n)
			}
			if sup.Status().State != "running" {
				ok = false
			}
		}
		if ok {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, n := range names {
		th.t.Logf("%s: %+v", n, th.h.Supervisor(n).Status())
	}
	th.t.Fatalf("plugins %v not running after 60s", names)
}

// send routes a message from the driver.
func (th *testHost) send(kind pluginv1.Send_Kind, target, op string, content any, syncMs int64) (*pluginv1.Message, error) {
	m := sdk.NewMessage("")
	m.BuildRouter("driver", "test", "test/driver/"+op, op)
	if err := m.FillBody(content); err != nil {
		th.t.Fatal(err)
	}
	pm := m.ToProto()
	if syncMs > 0 {
		pm.Sync = true
	}
	return pm, th.driver.Send(kind, target, syncMs, pm)
}

// waitFor returns the first received message matching match.
func (th *testHost) waitFor(timeout time.Duration, match func(*pluginv1.Delivery) bool) *pluginv1.Delivery {
	th.t.Helper()
	deadline := time.After(timeout)
	for {
		th.mu.Lock()
		for _, d := range th.received {
			if match(d) {
				th.mu.Unlock()
				return d
			}
		}
		th.mu.Unlock()
		select {
		case <-th.notify:
		case <-deadline:
			th.t.Fatalf("no matching message within %s", timeout)
			return nil
		}
	}
}

func (th *testHost) recordedCount() (unique, total int) {
	th.mu.Lock()
	defer th.mu.Unlock()
	for _, n := range th.seen {
		unique++
		total += n
	}
	return unique, total
}

func byParent(id string) func(*pluginv1.Delivery) bool {
	return func(d *pluginv1.Delivery) bool { return d.GetMessage().GetParentId() == id }
}

func byOp(op string) func(*pluginv1.Delivery) bool {
	return func(d *pluginv1.Delivery) bool { return d.GetMessage().GetOperation() == op }
}
