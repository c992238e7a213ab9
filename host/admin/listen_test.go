package admin

import (
	"context"
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgehive/edgehive/host/metrics"
)

// shortTempDir returns a directory with a short path: unix socket paths are
// limited to about 108 bytes, and t.TempDir's names can exceed that.
func shortTempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "eha")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func TestListenArguments(t *testing.T) {
	tests := []struct {
		name, socket, address string
		wantErr               string
	}{
		{name: "neither", wantErr: "neither"},
		{name: "both", socket: "/tmp/x.sock", address: "127.0.0.1:0", wantErr: "both"},
		{name: "all interfaces v4", address: "0.0.0.0:0", wantErr: "not a loopback"},
		{name: "all interfaces v6", address: "[::]:0", wantErr: "not a loopback"},
		{name: "empty host", address: ":0", wantErr: "not a loopback"},
		{name: "private", address: "10.1.2.3:9900", wantErr: "not a loopback"},
		{name: "hostname", address: "example.com:9900", wantErr: "not a loopback"},
		{name: "no port", address: "127.0.0.1", wantErr: "bad address"},
		{name: "loopback v4", address: "127.0.0.1:0"},
		{name: "loopback other v4", address: "127.0.0.2:0"},
		{name: "localhost", address: "localhost:0"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l, err := Listen(tc.socket, tc.address)
			if tc.wantErr != "" {
				if err == nil {
					l.Close()
					t.Fatalf("Listen(%q, %q) succeeded, want error containing %q", tc.socket, tc.address, tc.wantErr)
				}
				if !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %q does not contain %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Listen: %v", err)
			}
			defer l.Close()
			ip := l.Addr().(*net.TCPAddr).IP
			if !ip.IsLoopback() {
				t.Fatalf("listening on %v, not loopback", ip)
			}
		})
	}
}

func TestListenLoopbackV6(t *testing.T) {
	l, err := Listen("", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback here: %v", err)
	}
	l.Close()
}

func TestListenUnixSocket(t *testing.T) {
	dir := shortTempDir(t)
	path := filepath.Join(dir, "run", "a.sock") // parent does not exist yet

	l, err := Listen(path, "")
	if err != nil {
		t.Fatalf("Listen: %v", err)
	}
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != fs.ModeSocket {
		t.Fatalf("%s is %v, not a socket", path, fi.Mode())
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Fatalf("socket mode = %o, want 600", perm)
	}
	di, err := os.Stat(filepath.Dir(path))
	if err != nil {
		t.Fatal(err)
	}
	if perm := di.Mode().Perm(); perm&^0o755 != 0 || perm&0o700 != 0o700 {
		t.Fatalf("parent mode = %o, want 755 (less the umask)", perm)
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Fatalf("socket directory holds %d entries, want only the socket (no temporary left)", len(entries))
	}

	// A live socket must not be taken over by a second host.
	if l2, err := Listen(path, ""); err == nil {
		l2.Close()
		t.Fatal("second Listen on a live socket succeeded")
	} else if !strings.Contains(err.Error(), "in use") {
		t.Fatalf("second Listen: %v, want \"in use\"", err)
	}

	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("socket file still there after Close: %v", err)
	}
}

func TestListenRemovesStaleSocket(t *testing.T) {
	path := filepath.Join(shortTempDir(t), "a.sock")
	// A socket file nobody listens on, as a crashed host leaves it.
	ul, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ul.SetUnlinkOnClose(false)
	ul.Close()
	if _, err := os.Lstat(path); err != nil {
		t.Fatalf("stale socket not left behind: %v", err)
	}

	l, err := Listen(path, "")
	if err != nil {
		t.Fatalf("Listen over a stale socket: %v", err)
	}
	l.Close()
}

func TestListenRefusesToRemoveRegularFile(t *testing.T) {
	path := filepath.Join(shortTempDir(t), "a.sock")
	if err := os.WriteFile(path, []byte("precious"), 0o644); err != nil {
		t.Fatal(err)
	}
	if l, err := Listen(path, ""); err == nil {
		l.Close()
		t.Fatal("Listen replaced a regular file")
	}
	if b, err := os.ReadFile(path); err != nil || string(b) != "precious" {
		t.Fatalf("regular file changed: %q, %v", b, err)
	}
}

// startServer serves a fake backend on a real unix socket and returns a
// client for it. The server is stopped, and Serve's result checked, at the
// end of the test.
func startServer(t *testing.T, fb *fakeBackend, reg prometheus.Gatherer) (*Client, string) {
	t.Helper()
	path := filepath.Join(shortTempDir(t), "admin.sock")
	l, err := Listen(path, "")
	if err != nil {
		t.Fatal(err)
	}
	srv := New(fb, reg, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, l) }()
	c := NewClient(path, "")
	t.Cleanup(func() {
		c.Close()
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Serve did not return after cancel")
		}
		if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("socket left after Serve returned: %v", err)
		}
	})
	return c, path
}

func TestClientOverUnixSocket(t *testing.T) {
	fb := newFakeBackend()
	reg := prometheus.NewRegistry()
	metrics.New(reg).Acked("edged", 7)
	c, _ := startServer(t, fb, reg)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	if err := c.Healthz(ctx); err != nil {
		t.Fatalf("Healthz: %v", err)
	}
	if err := c.Readyz(ctx); err != nil {
		t.Fatalf("Readyz: %v", err)
	}
	text, err := c.Metrics(ctx)
	if err != nil {
		t.Fatalf("Metrics: %v", err)
	}
	if !strings.Contains(text, `edgehive_router_acks_total{plugin="edged"} 7`) {
		t.Fatalf("metrics text lacks the acks counter:\n%s", text)
	}

	ps, err := c.Plugins(ctx)
	if err != nil {
		t.Fatalf("Plugins: %v", err)
	}
	if len(ps) != 2 || ps[0].Name != "edged" || ps[0].PID != 1234 || !ps[0].StartedAt.Equal(fb.plugins[0].StartedAt) {
		t.Fatalf("Plugins = %+v", ps)
	}

	p, err := c.Plugin(ctx, "metamanager")
	if err != nil || p.Group != "meta" {
		t.Fatalf("Plugin = %+v, %v", p, err)
	}

	p, err = c.Restart(ctx, "edged")
	if err != nil {
		t.Fatalf("Restart: %v", err)
	}
	if p.Restarts != 2 || p.PID != 1235 {
		t.Fatalf("after restart: %+v", p)
	}

	p, err = c.Upgrade(ctx, "edged", "/opt/new/edged", goodSum)
	if err != nil {
		t.Fatalf("Upgrade: %v", err)
	}
	if p.Version != "2.0.0" || p.Path != "/opt/new/edged" {
		t.Fatalf("after upgrade: %+v", p)
	}
	if got, want := fb.lastCall(), "upgrade edged /opt/new/edged "+goodSum; got != want {
		t.Fatalf("backend call %q, want %q", got, want)
	}

	// A relative path is made absolute by the client, from its own cwd.
	if _, err := c.Upgrade(ctx, "edged", "edged.new", ""); err != nil {
		t.Fatalf("Upgrade relative: %v", err)
	}
	wd, _ := os.Getwd()
	if got, want := fb.lastCall(), "upgrade edged "+filepath.Join(wd, "edged.new")+" "; got != want {
		t.Fatalf("backend call %q, want %q", got, want)
	}
}

func TestClientErrors(t *testing.T) {
	fb := newFakeBackend()
	c, _ := startServer(t, fb, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	_, err := c.Restart(ctx, "nope")
	var apiErr *APIError
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 404 {
		t.Fatalf("Restart unknown: %v, want a 404 APIError", err)
	}
	if !errors.Is(err, ErrUnknownPlugin) {
		t.Fatalf("Restart unknown: %v is not ErrUnknownPlugin", err)
	}
	if !strings.Contains(err.Error(), "unknown plugin") {
		t.Fatalf("error %q lacks the server's text", err)
	}

	fb.mu.Lock()
	fb.upgradeErr = ErrBusy
	fb.mu.Unlock()
	if _, err := c.Upgrade(ctx, "edged", "/x", ""); !errors.Is(err, ErrBusy) {
		t.Fatalf("Upgrade busy: %v, want ErrBusy", err)
	}

	fb.mu.Lock()
	fb.upgradeErr = errors.New("checksum mismatch: got abc")
	fb.mu.Unlock()
	_, err = c.Upgrade(ctx, "edged", "/x", "")
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 500 || !strings.Contains(apiErr.Message, "checksum mismatch: got abc") {
		t.Fatalf("Upgrade failing: %v", err)
	}
	if errors.Is(err, ErrUnknownPlugin) || errors.Is(err, ErrBusy) {
		t.Fatalf("500 error %v matches a sentinel", err)
	}

	if _, err := c.Upgrade(ctx, "edged", "/x", "not-hex"); !errors.As(err, &apiErr) || apiErr.StatusCode != 400 {
		t.Fatalf("Upgrade bad sha: %v, want 400", err)
	}

	fb.mu.Lock()
	fb.ready = false
	fb.plugins[1].State = metrics.StateRestarting
	fb.mu.Unlock()
	err = c.Readyz(ctx)
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 503 || !strings.Contains(apiErr.Message, "metamanager (restarting)") {
		t.Fatalf("Readyz: %v", err)
	}
}

func TestClientOverLoopbackTCP(t *testing.T) {
	l, err := Listen("", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- New(newFakeBackend(), nil, nil).Serve(ctx, l) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	}()

	c := NewClient("", l.Addr().String())
	defer c.Close()
	rctx, rcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer rcancel()
	ps, err := c.Plugins(rctx)
	if err != nil || len(ps) != 2 {
		t.Fatalf("Plugins = %v, %v", ps, err)
	}
}

func TestClientNoServer(t *testing.T) {
	c := NewClient(filepath.Join(shortTempDir(t), "none.sock"), "")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := c.Healthz(ctx)
	if err == nil {
		t.Fatal("Healthz with no server succeeded")
	}
	var apiErr *APIError
	if errors.As(err, &apiErr) {
		t.Fatalf("connection error reported as an API error: %v", err)
	}
}

// blockingBackend's Restart waits until its context ends, like a restart
// stuck on a plugin that will not stop.
type blockingBackend struct {
	*fakeBackend
	entered chan struct{}
}

func (b *blockingBackend) Restart(ctx context.Context, _ string) error {
	close(b.entered)
	<-ctx.Done()
	return ctx.Err()
}

func TestServeShutdownDeadline(t *testing.T) {
	bb := &blockingBackend{fakeBackend: newFakeBackend(), entered: make(chan struct{})}
	path := filepath.Join(shortTempDir(t), "admin.sock")
	l, err := Listen(path, "")
	if err != nil {
		t.Fatal(err)
	}
	srv := New(bb, nil, nil)
	srv.ShutdownTimeout = 200 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, l) }()

	c := NewClient(path, "")
	defer c.Close()
	reqDone := make(chan error, 1)
	go func() {
		_, err := c.Restart(context.Background(), "edged")
		reqDone <- err
	}()
	<-bb.entered
	start := time.Now()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return after its shutdown deadline")
	}
	if d := time.Since(start); d < 150*time.Millisecond {
		t.Fatalf("Serve returned after %v, before the in-flight request's grace period", d)
	}
	if err := <-reqDone; err == nil {
		t.Fatal("cut-off request reported success")
	}
}

func TestServeReturnsListenerError(t *testing.T) {
	l, err := Listen("", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l.Close() // Serve on a closed listener fails at once
	err = New(newFakeBackend(), nil, nil).Serve(context.Background(), l)
	if err == nil {
		t.Fatal("Serve on a closed listener returned nil")
	}
}
