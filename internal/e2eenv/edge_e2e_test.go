//go:build e2e

package e2eenv

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
)

// joinLike is the shape of the config `edgehive join` writes.
const joinLike = `# Written by ` + "`edgehive join`" + `.
node_name = "n1"
data_dir  = "DATA"

log {
  level = "info"
}

admin {
  socket = "/run/edgehive/admin.sock"
}

plugin "edgehub" {
  gomaxprocs = 1
  config {
    server               = "127.0.0.1:10000"
    https_server         = "https://127.0.0.1:10002"
    tls_ca_file          = "DATA/certs/ca.crt"
    tls_cert_file        = "DATA/certs/node.crt"
    tls_private_key_file = "DATA/certs/node.key"
  }
}

plugin "edged" {
  gomaxprocs = 1
}

plugin "metamanager" {
  gomaxprocs = 1
}

plugin "eventbus" {
  gomaxprocs = 1
}

plugin "devicetwin" {
  gomaxprocs = 1
}

plugin "servicebus" {
  gomaxprocs = 1
}
`

// TestPatchConfig checks that the harness's edits of a joined config give a
// config `edgehive validate` accepts, with the test's values in it.
func TestPatchConfig(t *testing.T) {
	dir := t.TempDir()
	e := &Edge{
		Node: "n1", DataDir: filepath.Join(dir, "data"), ConfigFile: filepath.Join(dir, "edgehive.hcl"),
		AdminSocket: filepath.Join(dir, "admin.sock"), EdgedAddress: "127.0.0.1:41001", MetaServerAddress: "127.0.0.1:41002",
		Containerd: Containerd{Address: "/tmp/x/containerd.sock"},
	}
	if err := os.MkdirAll(filepath.Join(e.DataDir, "certs"), 0o700); err != nil {
		t.Fatal(err)
	}
	ca, err := NewCA(filepath.Join(e.DataDir, "certs"), "ca")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ca.Issue(filepath.Join(e.DataDir, "certs"), "node", CertSpec{CommonName: "system:node:n1", Client: true}); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(e.ConfigFile, []byte(strings.ReplaceAll(joinLike, "DATA", e.DataDir)), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := e.patchConfig(t, nil); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(e.ConfigFile)
	for _, want := range []string{e.AdminSocket, "unix:///tmp/x/containerd.sock", PauseImage, "127.0.0.1:41001", "127.0.0.1:41002", `"cgroupfs"`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("patched config lacks %q:\n%s", want, b)
		}
	}
	if strings.Contains(string(b), "/run/edgehive/admin.sock") {
		t.Errorf("patched config keeps the system admin socket:\n%s", b)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := RunCommand(ctx, nil, filepath.Join(BinDir(t), "edgehive"), "validate", "-config", e.ConfigFile)
	if err != nil {
		t.Fatalf("edgehive validate: %v\n%s\n%s", err, out, b)
	}
}

// TestEdgeHostRuns starts the whole edge host with the harness's config on
// the test containerd while no cloud answers: every plugin comes up (edged's
// pod API answers), and Stop leaves no process of the group behind.
func TestEdgeHostRuns(t *testing.T) {
	ctrd := ContainerdFromEnv(t)
	e := NewEdge(t, BinDir(t), fmt.Sprintf("e2e-hostruns-%d", os.Getpid()), ctrd)
	certs := filepath.Join(e.DataDir, "certs")
	if err := os.MkdirAll(certs, 0o700); err != nil {
		t.Fatal(err)
	}
	ca, err := NewCA(certs, "ca")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ca.Issue(certs, "node", CertSpec{CommonName: "system:node:" + e.Node, Organization: []string{"system:nodes"}, Client: true}); err != nil {
		t.Fatal(err)
	}
	// A cloud address where nothing listens.
	cfg := strings.ReplaceAll(joinLike, "DATA", e.DataDir)
	cfg = strings.ReplaceAll(cfg, `"n1"`, fmt.Sprintf("%q", e.Node))
	cfg = strings.ReplaceAll(cfg, "10000", fmt.Sprint(FreePort(t)))
	if err := e.WriteConfig(t, []byte(cfg), nil); err != nil {
		t.Fatal(err)
	}
	e.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	pods, err := e.WaitEdgedPods(ctx, func([]v1.Pod) bool { return true })
	if err != nil {
		t.Fatal(err)
	}
	if len(pods) != 0 {
		t.Errorf("a fresh edge runs %d pods", len(pods))
	}
	pid := e.Pid()
	e.Stop(15 * time.Second)
	// The group (host and plugins) is gone.
	if err := syscall.Kill(-pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("process group %d still has members after Stop (kill 0: %v)", pid, err)
	}
}
