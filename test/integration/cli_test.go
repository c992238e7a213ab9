package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edgehive/edgehive/host/admin"
)

func allPluginsConfig(extraEdged string) string {
	var b strings.Builder
	for _, p := range builtinPlugins {
		fmt.Fprintf(&b, "plugin %q {\n", p)
		if p == "edged" {
			b.WriteString(extraEdged)
		}
		if p == "servicebus" || p == "eventbus" { // tests run one after another: never wait for a port
			b.WriteString("  config {\n    listen = \"127.0.0.1:0\"\n  }\n")
		}
		b.WriteString("}\n")
	}
	fmt.Fprintf(&b, "plugin \"hello\" {\n  path = %q\n  config {\n    greeting = \"hi\"\n  }\n}\n", binDir+"/plugins/hello")
	return b.String()
}

// hostProcess is `edgehive run` as a child process.
type hostProcess struct {
	cmd    *exec.Cmd
	sock   string
	logs   *bytes.Buffer
	exited chan error
}

func runHostProcess(t *testing.T, body string) *hostProcess {
	t.Helper()
	path, _, sock := writeConfig(t, body)
	cmd := exec.Command(edgehiveBin(), "run", "-config", path)
	logs := &bytes.Buffer{}
	cmd.Stdout, cmd.Stderr = logs, logs // one writer: exec serialises its writes
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	hp := &hostProcess{cmd: cmd, sock: sock, logs: logs, exited: make(chan error, 1)}
	go func() { hp.exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-hp.exited
		if t.Failed() {
			t.Logf("host log:\n%s", logs.String())
		}
	})
	return hp
}

func (hp *hostProcess) status(t *testing.T) ([]admin.PluginStatus, error) {
	out, err := exec.Command(edgehiveBin(), "status", "-json", "-admin", hp.sock).Output()
	if err != nil {
		return nil, err
	}
	var st []admin.PluginStatus
	if err := json.Unmarshal(out, &st); err != nil {
		return nil, fmt.Errorf("status JSON: %w: %s", err, out)
	}
	return st, nil
}

// waitStates polls `edgehive status -json` until check passes.
func (hp *hostProcess) waitStates(t *testing.T, check func([]admin.PluginStatus) bool) []admin.PluginStatus {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	var last []admin.PluginStatus
	for time.Now().Before(deadline) {
		st, err := hp.status(t)
		if err == nil {
			last = st
			if check(st) {
				return st
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("status never matched; last: %+v", last)
	return nil
}

func allRunning(n int) func([]admin.PluginStatus) bool {
	return func(st []admin.PluginStatus) bool {
		if len(st) != n {
			return false
		}
		for _, p := range st {
			if p.State != "running" {
				return false
			}
		}
		return true
	}
}

func alive(pid int) bool { return syscall.Kill(pid, 0) == nil }

func TestHostRunsSixPluginsAndHello(t *testing.T) {
	hp := runHostProcess(t, allPluginsConfig(""))
	st := hp.waitStates(t, allRunning(7))
	names := map[string]admin.PluginStatus{}
	for _, p := range st {
		names[p.Name] = p
		if p.PID <= 0 || p.Version == "" || p.APIVersion != "v1" {
			t.Errorf("%s: incomplete status %+v", p.Name, p)
		}
	}
	for _, want := range append(builtinPlugins, "hello") {
		if _, ok := names[want]; !ok {
			t.Errorf("%s missing from status", want)
		}
	}
	if g := names["edgehub"].Group; g != "hub" {
		t.Errorf("edgehub group %q", g)
	}
	table, err := exec.Command(edgehiveBin(), "status", "-admin", hp.sock).Output()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(table), "NAME") || !strings.Contains(string(table), "metamanager") {
		t.Fatalf("status table:\n%s", table)
	}
	c := admin.NewClient(hp.sock, "")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Readyz(ctx); err != nil {
		t.Fatalf("readyz: %v", err)
	}
	metrics, err := c.Metrics(ctx)
	if err != nil || !strings.Contains(metrics, "edgehive_plugin_state") {
		t.Fatalf("metrics: %v", err)
	}
	if fi, err := os.Stat(hp.sock); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("admin socket mode: %v %v", fi.Mode(), err)
	}

	// plugin restart and plugin upgrade through the CLI
	if out, err := exec.Command(edgehiveBin(), "plugin", "restart", "hello", "-admin", hp.sock).CombinedOutput(); err != nil {
		t.Fatalf("plugin restart: %v\n%s", err, out)
	}
	newHello := t.TempDir() + "/hello-v2"
	src, err := os.ReadFile(binDir + "/plugins/hello")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(newHello, src, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(edgehiveBin(), "plugin", "upgrade", "hello", "-path", newHello, "-admin", hp.sock).CombinedOutput(); err != nil {
		t.Fatalf("plugin upgrade: %v\n%s", err, out)
	}
	if out, err := exec.Command(edgehiveBin(), "plugin", "upgrade", "nosuch", "-path", newHello, "-admin", hp.sock).CombinedOutput(); err == nil {
		t.Fatalf("upgrade of an unknown plugin succeeded:\n%s", out)
	}
	st = hp.waitStates(t, allRunning(7))
	for _, p := range st {
		if p.Name != "hello" {
			continue
		}
		if p.Path != newHello || p.Restarts != 1 || p.PID == names["hello"].PID {
			t.Fatalf("hello after restart and upgrade: %+v", p)
		}
	}

	// SIGTERM stops everything gracefully.
	if err := hp.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-hp.exited:
		if err != nil {
			t.Fatalf("host exit: %v", err)
		}
		hp.exited <- err
	case <-time.After(30 * time.Second):
		t.Fatal("host did not stop on SIGTERM")
	}
	for _, p := range st {
		if alive(p.PID) {
			t.Errorf("plugin %s (pid %d) still running after SIGTERM", p.Name, p.PID)
		}
	}
}

func TestKilledHostLeavesNoOrphans(t *testing.T) {
	hp := runHostProcess(t, allPluginsConfig(""))
	st := hp.waitStates(t, allRunning(7))
	if err := hp.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	err := <-hp.exited
	hp.exited <- err
	deadline := time.Now().Add(5 * time.Second)
	for {
		var left []string
		for _, p := range st {
			if alive(p.PID) {
				left = append(left, fmt.Sprintf("%s(%d)", p.Name, p.PID))
			}
		}
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("plugins still running 5 s after the host was killed: %v", left)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestChecksumMismatchRefusedOthersStart(t *testing.T) {
	bad := strings.Repeat("ab", 32)
	hp := runHostProcess(t, allPluginsConfig(fmt.Sprintf("  sha256 = %q\n", bad)))
	st := hp.waitStates(t, func(st []admin.PluginStatus) bool {
		running := 0
		for _, p := range st {
			if p.State == "running" {
				running++
			}
		}
		return running == 6
	})
	for _, p := range st {
		if p.Name == "edged" {
			if p.State != "failed" || !strings.Contains(p.LastError, "checksum") {
				t.Fatalf("edged: %+v", p)
			}
		}
	}
}
