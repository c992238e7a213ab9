package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/edgehive/edgehive/cloud/devicecontroller"
)

// buildBinary builds cloudhive with go build, as make does.
func buildBinary(t *testing.T) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	bin := filepath.Join(t.TempDir(), "cloudhive")
	out, err := exec.Command(goBin, "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func runBinary(t *testing.T, bin string, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		code = exit.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return code, stdout.String(), stderr.String()
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func TestBinary(t *testing.T) {
	bin := buildBinary(t)
	dir := t.TempDir()
	good := filepath.Join(dir, "good.hcl")
	bad := filepath.Join(dir, "bad.hcl")
	if err := os.WriteFile(good, []byte("namespace = \"kubeedge\"\ncloudhub {\n  reuse_port = true\n  advertise_addresses = [\"127.0.0.1\"]\n}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bad, []byte("namespace = \"kubeedge\"\ncloudhub {\n  keepalive_timeout = \"never\"\n  nodes = 3\n}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		args   []string
		code   int
		stdout string
		stderr string
	}{
		{"validate good", []string{"validate", "-config", good}, 0, good + ": ok", ""},
		{"validate embedded default", []string{"validate"}, 0, "configs/cloudhive.hcl: ok", ""},
		{"validate unknown key", []string{"validate", "-config", bad}, 1, "", bad + `:4:3: error: Unsupported argument: An argument named "nodes" is not expected here.`},
		{"validate missing file", []string{"validate", "-config", filepath.Join(dir, "none.hcl")}, 1, "", "no such file"},
		{"version", []string{"version"}, 0, "cloudhive ", ""},
		{"unknown command", []string{"frobnicate"}, 2, "", `unknown command "frobnicate"`},
		{"no command", nil, 2, "", "Usage:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := runBinary(t, bin, tt.args...)
			if code != tt.code || !strings.Contains(stdout, tt.stdout) || !strings.Contains(stderr, tt.stderr) {
				t.Fatalf("exit %d (want %d)\nstdout: %s\nstderr: %s", code, tt.code, stdout, stderr)
			}
		})
	}

	// The bad value is reported too (after the unknown key is fixed).
	if err := os.WriteFile(bad, []byte("cloudhub {\n  keepalive_timeout = \"never\"\n}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, _, stderr := runBinary(t, bin, "validate", "-config", bad); code != 1 ||
		!strings.Contains(stderr, bad+`:2:23: error: Invalid value for keepalive_timeout`) {
		t.Fatalf("exit %d stderr %s", code, stderr)
	}

	t.Run("bench nodes", func(t *testing.T) {
		code, stdout, stderr := runBinary(t, bin, "bench", "nodes", "-nodes", "3", "-pods", "2")
		if code != 0 {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		var res struct {
			Nodes, Delivered int
			P99              float64 `json:"p99_ms"`
			BytesPerNode     int64   `json:"bytes_per_node"`
		}
		if err := json.Unmarshal([]byte(stdout), &res); err != nil {
			t.Fatalf("%q: %v", stdout, err)
		}
		if res.Nodes != 3 || res.Delivered != 6 || res.P99 <= 0 {
			t.Fatalf("%+v", res)
		}
	})

	t.Run("run stops cleanly on SIGTERM while the API is unreachable", func(t *testing.T) {
		kubeconfig := filepath.Join(dir, "kubeconfig")
		if err := os.WriteFile(kubeconfig, []byte(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1", insecure-skip-tls-verify: true}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
`), 0o600); err != nil {
			t.Fatal(err)
		}
		admin := freePort(t)
		cfg := filepath.Join(dir, "run.hcl")
		if err := os.WriteFile(cfg, []byte("admin { listen = \"127.0.0.1:1\" }\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		var stderr bytes.Buffer
		cmd := exec.Command(bin, "run", "-config", cfg, "-kubeconfig", kubeconfig, "-admin", admin)
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		defer func() { _ = cmd.Process.Kill() }()
		status := func(path string) int {
			resp, err := http.Get("http://" + admin + path)
			if err != nil {
				return 0
			}
			resp.Body.Close()
			return resp.StatusCode
		}
		deadline := time.Now().Add(10 * time.Second)
		for status("/healthz") != 200 {
			if time.Now().After(deadline) {
				t.Fatalf("healthz never answered\n%s", stderr.String())
			}
			time.Sleep(50 * time.Millisecond)
		}
		if code := status("/readyz"); code != http.StatusServiceUnavailable {
			t.Fatalf("readyz %d without credentials, want 503", code)
		}
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("exit: %v, want 0 on SIGTERM\n%s", err, stderr.String())
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("no exit 10 s after SIGTERM\n%s", stderr.String())
		}
		if !strings.Contains(stderr.String(), "credentials not ready") {
			t.Fatalf("stderr: %s", stderr.String())
		}
	})
}

// The whole assembly in-process against a fake API: a node bootstraps with
// the token cloudhive stored and holds a session; SIGTERM-like cancellation
// stops everything.
func TestServeWithFakeAPI(t *testing.T) {
	cfg := mustParse(t, loopbackHCL(""))
	client := fake.NewClientset()
	addrs, stop := startServing(t, cfg, client)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ca, pair := bootstrapNode(ctx, t, client, cfg, addrs.bootstrap, "edge-1")
	dialer := websocket.Dialer{TLSClientConfig: &tls.Config{RootCAs: ca.Pool(), Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}}
	h := http.Header{}
	h.Set("node_id", "edge-1")
	h.Set("project_id", "p")
	h.Set("ConnectionUse", "msg")
	conn, _, err := dialer.Dial("wss://"+addrs.hub.String()+"/p/edge-1/events", h)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.WriteMessage(websocket.TextMessage, []byte(`{"header":{"msg_id":"k1","timestamp":1},"route":{"source":"websocket","group":"resource","operation":"keepalive","resource":"node"},"content":"ping"}`))

	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + addrs.admin.String() + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, _ := get("/readyz"); code != 200 {
		t.Fatalf("readyz %d", code)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, body := get("/metrics")
		if strings.Contains(body, "\ncloudhub_sessions 1\n") && strings.Contains(body, "cloudhub_cert_requests_total{result=\"issued\"} 1") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("metrics:\n%s", body)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The server certificate verifies for the advertised address.
	raw, err := tls.Dial("tcp", addrs.bootstrap.String(), &tls.Config{RootCAs: ca.Pool(), ServerName: "127.0.0.1"})
	if err != nil {
		t.Fatalf("server certificate for 127.0.0.1: %v", err)
	}
	_ = raw.Close()
	if _, err := x509.ParseCertificate(ca.Cert.Raw); err != nil {
		t.Fatal(err)
	}

	stop()
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, _, err := conn.ReadMessage(); !websocket.IsCloseError(err, websocket.CloseGoingAway) {
		t.Fatalf("node connection after shutdown: %v, want close 1001", err)
	}
}

// newDynamicFake serves the custom resources the device controller lists.
func newDynamicFake() *dynamicfake.FakeDynamicClient {
	return dynamicfake.NewSimpleDynamicClientWithCustomListKinds(k8sruntime.NewScheme(), map[schema.GroupVersionResource]string{
		devicecontroller.DeviceGVR: "DeviceList", devicecontroller.DeviceModelGVR: "DeviceModelList"})
}
