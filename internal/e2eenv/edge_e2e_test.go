//go:build e2e

package e2eenv

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
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
	if err := e.patchConfig(t); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(e.ConfigFile)
	for _, want := range []string{e.AdminSocket, "unix:///tmp/x/containerd.sock", PauseImage, "127.0.0.1:41001", "127.0.0.1:41002", `"cgroupfs"`, "tcp://127.0.0.1:"} {
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
