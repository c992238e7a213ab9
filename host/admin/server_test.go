package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgehive/edgehive/host/metrics"
)

// fakeBackend is a hand-written Backend: a fixed plugin list, and errors
// to return from Restart and Upgrade.
type fakeBackend struct {
	mu         sync.Mutex
	plugins    []PluginStatus
	ready      bool
	restartErr error
	upgradeErr error
	calls      []string
	panicOn    string
}

var _ Backend = (*fakeBackend)(nil)

func newFakeBackend() *fakeBackend {
	started := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	return &fakeBackend{
		ready: true,
		plugins: []PluginStatus{
			{Name: "edged", Group: "edged", State: metrics.StateRunning, Version: "1.0.0", APIVersion: "v1",
				Path: "/opt/edgehive/plugins/edged", PID: 1234, Restarts: 1, StartedAt: started,
				UptimeSeconds: 3723.9, QueueDepth: 3, InFlight: 1},
			{Name: "metamanager", Group: "meta", State: metrics.StateRunning, Version: "1.0.0", APIVersion: "v1",
				Path: "/opt/edgehive/plugins/metamanager", PID: 1235, StartedAt: started, UptimeSeconds: 59},
		},
	}
}

func (f *fakeBackend) Plugins() []PluginStatus {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]PluginStatus(nil), f.plugins...)
}

func (f *fakeBackend) Ready() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.ready
}

func (f *fakeBackend) Restart(_ context.Context, name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.panicOn == "restart" {
		panic("boom")
	}
	f.calls = append(f.calls, "restart "+name)
	if f.restartErr != nil {
		return f.restartErr
	}
	for i := range f.plugins {
		if f.plugins[i].Name == name {
			f.plugins[i].Restarts++
			f.plugins[i].PID++
			return nil
		}
	}
	return fmt.Errorf("restart: %w", ErrUnknownPlugin)
}

func (f *fakeBackend) Upgrade(_ context.Context, name, path, sum string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, "upgrade "+name+" "+path+" "+sum)
	if f.upgradeErr != nil {
		return f.upgradeErr
	}
	for i := range f.plugins {
		if f.plugins[i].Name == name {
			f.plugins[i].Path = path
			f.plugins[i].Version = "2.0.0"
			return nil
		}
	}
	return fmt.Errorf("upgrade: %w", ErrUnknownPlugin)
}

func (f *fakeBackend) lastCall() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.calls) == 0 {
		return ""
	}
	return f.calls[len(f.calls)-1]
}

const goodSum = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

func TestRoutes(t *testing.T) {
	tests := []struct {
		name     string
		setup    func(*fakeBackend)
		method   string
		path     string
		body     string
		want     int
		wantBody string // substring of the body
		wantCall string // last backend call, if any
		wantJSON bool   // the answer is JSON
	}{
		{name: "healthz", method: "GET", path: "/healthz", want: 200, wantBody: "ok"},
		{name: "healthz head", method: "HEAD", path: "/healthz", want: 200},
		{name: "healthz post", method: "POST", path: "/healthz", want: 405, wantBody: "not allowed", wantJSON: true},
		{name: "readyz ready", method: "GET", path: "/readyz", want: 200, wantBody: "ok"},
		{
			name: "readyz not ready",
			setup: func(f *fakeBackend) {
				f.ready = false
				f.plugins[0].State = metrics.StateFailed
				f.plugins = append(f.plugins, PluginStatus{Name: "off", State: metrics.StateDisabled})
			},
			method: "GET", path: "/readyz", want: 503, wantBody: "plugins not running: edged (failed)",
		},
		{name: "metrics", method: "GET", path: "/metrics", want: 200, wantBody: "edgehive_router_deliveries_total"},
		{name: "metrics delete", method: "DELETE", path: "/metrics", want: 405, wantJSON: true},
		{name: "list", method: "GET", path: "/v1/plugins", want: 200, wantBody: `"name":"edged"`, wantJSON: true},
		{name: "list empty", setup: func(f *fakeBackend) { f.plugins = nil }, method: "GET", path: "/v1/plugins", want: 200, wantBody: "[]", wantJSON: true},
		{name: "list post", method: "POST", path: "/v1/plugins", want: 405, wantJSON: true},
		{name: "get one", method: "GET", path: "/v1/plugins/metamanager", want: 200, wantBody: `"group":"meta"`, wantJSON: true},
		{name: "get unknown", method: "GET", path: "/v1/plugins/nope", want: 404, wantBody: `unknown plugin \"nope\"`, wantJSON: true},
		{name: "get escaped", method: "GET", path: "/v1/plugins/%2e%2e", want: 404, wantJSON: true},
		{name: "get put", method: "PUT", path: "/v1/plugins/edged", want: 405, wantJSON: true},
		{name: "restart", method: "POST", path: "/v1/plugins/edged/restart", want: 200, wantBody: `"restarts":2`, wantCall: "restart edged", wantJSON: true},
		{name: "restart get", method: "GET", path: "/v1/plugins/edged/restart", want: 405, wantJSON: true},
		{name: "restart unknown", method: "POST", path: "/v1/plugins/nope/restart", want: 404, wantBody: "unknown plugin", wantJSON: true},
		{
			name: "restart busy", setup: func(f *fakeBackend) { f.restartErr = fmt.Errorf("edged: %w", ErrBusy) },
			method: "POST", path: "/v1/plugins/edged/restart", want: 409, wantBody: "already in progress", wantJSON: true,
		},
		{
			name: "restart fails", setup: func(f *fakeBackend) { f.restartErr = errors.New("exec format error") },
			method: "POST", path: "/v1/plugins/edged/restart", want: 500, wantBody: "exec format error", wantJSON: true,
		},
		{
			name: "restart panics", setup: func(f *fakeBackend) { f.panicOn = "restart" },
			method: "POST", path: "/v1/plugins/edged/restart", want: 500, wantBody: "internal error", wantJSON: true,
		},
		{
			name: "upgrade", method: "POST", path: "/v1/plugins/edged/upgrade",
			body: `{"path":"/opt/new/edged","sha256":"` + goodSum + `"}`,
			want: 200, wantBody: `"version":"2.0.0"`, wantCall: "upgrade edged /opt/new/edged " + goodSum, wantJSON: true,
		},
		{
			name: "upgrade no sha", method: "POST", path: "/v1/plugins/edged/upgrade", body: `{"path":"/opt/new/edged"}`,
			want: 200, wantBody: `"path":"/opt/new/edged"`, wantCall: "upgrade edged /opt/new/edged ", wantJSON: true,
		},
		{
			name: "upgrade unknown plugin", method: "POST", path: "/v1/plugins/nope/upgrade", body: `{"path":"/x"}`,
			want: 404, wantBody: "unknown plugin", wantJSON: true,
		},
		{
			name: "upgrade fails", setup: func(f *fakeBackend) { f.upgradeErr = errors.New("checksum mismatch") },
			method: "POST", path: "/v1/plugins/edged/upgrade", body: `{"path":"/x"}`,
			want: 500, wantBody: "checksum mismatch", wantJSON: true,
		},
		{name: "upgrade bad json", method: "POST", path: "/v1/plugins/edged/upgrade", body: `{"path":`, want: 400, wantBody: "bad request body", wantJSON: true},
		{name: "upgrade not object", method: "POST", path: "/v1/plugins/edged/upgrade", body: `[1,2]`, want: 400, wantJSON: true},
		{name: "upgrade empty body", method: "POST", path: "/v1/plugins/edged/upgrade", body: ``, want: 400, wantBody: "empty", wantJSON: true},
		{name: "upgrade unknown field", method: "POST", path: "/v1/plugins/edged/upgrade", body: `{"path":"/x","sha":"abc"}`, want: 400, wantBody: "unknown field", wantJSON: true},
		{name: "upgrade trailing data", method: "POST", path: "/v1/plugins/edged/upgrade", body: `{"path":"/x"} {}`, want: 400, wantBody: "after the JSON object", wantJSON: true},
		{name: "upgrade empty path", method: "POST", path: "/v1/plugins/edged/upgrade", body: `{"path":""}`, want: 400, wantBody: `"path\" is empty`, wantJSON: true},
		{name: "upgrade relative path", method: "POST", path: "/v1/plugins/edged/upgrade", body: `{"path":"bin/edged"}`, want: 400, wantBody: "not absolute", wantJSON: true},
		{name: "upgrade bad sha", method: "POST", path: "/v1/plugins/edged/upgrade", body: `{"path":"/x","sha256":"zz"}`, want: 400, wantBody: "64 hex digits", wantJSON: true},
		{
			name: "upgrade oversized", method: "POST", path: "/v1/plugins/edged/upgrade",
			body: `{"path":"/` + strings.Repeat("a", MaxBodyBytes) + `"}`, want: 413, wantBody: "too large", wantJSON: true,
		},
		{
			name: "upgrade oversized whitespace tail", method: "POST", path: "/v1/plugins/edged/upgrade",
			body: `{"path":"/x"}` + strings.Repeat(" ", MaxBodyBytes), want: 413, wantJSON: true,
		},
		{name: "upgrade get", method: "GET", path: "/v1/plugins/edged/upgrade", want: 405, wantJSON: true},
		{name: "root", method: "GET", path: "/", want: 404, wantBody: "no such endpoint", wantJSON: true},
		{name: "unknown path", method: "GET", path: "/v2/plugins", want: 404, wantJSON: true},
		{name: "trailing slash list", method: "GET", path: "/v1/plugins/", want: 404, wantJSON: true},
		{name: "unknown action", method: "POST", path: "/v1/plugins/edged/stop", want: 404, wantJSON: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fb := newFakeBackend()
			if tc.setup != nil {
				tc.setup(fb)
			}
			reg := prometheus.NewRegistry()
			metrics.New(reg).Delivered("edged", 1)
			srv := New(fb, reg, nil)

			req := httptest.NewRequest(tc.method, tc.path, strings.NewReader(tc.body))
			rec := httptest.NewRecorder()
			srv.Handler().ServeHTTP(rec, req)

			body := rec.Body.String()
			if rec.Code != tc.want {
				t.Fatalf("status = %d, want %d; body %q", rec.Code, tc.want, body)
			}
			if tc.wantBody != "" && !strings.Contains(body, tc.wantBody) {
				t.Errorf("body %q does not contain %q", body, tc.wantBody)
			}
			if tc.wantCall != "" && fb.lastCall() != tc.wantCall {
				t.Errorf("last backend call = %q, want %q", fb.lastCall(), tc.wantCall)
			}
			if tc.wantJSON {
				if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
					t.Errorf("Content-Type = %q, want application/json", ct)
				}
				if !json.Valid(rec.Body.Bytes()) {
					t.Errorf("body is not valid JSON: %q", body)
				}
				if rec.Code >= 400 {
					var eb errorBody
					if err := json.Unmarshal(rec.Body.Bytes(), &eb); err != nil || eb.Error == "" {
						t.Errorf("error body %q has no \"error\" field (%v)", body, err)
					}
				}
			}
			if rec.Code == 405 && rec.Header().Get("Allow") == "" {
				t.Errorf("405 without an Allow header")
			}
		})
	}
}

func TestHealthzBodyIsExactlyOK(t *testing.T) {
	srv := New(newFakeBackend(), nil, nil)
	rec := httptest.NewRecorder()
	srv.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/healthz", nil))
	if rec.Body.String() != "ok" {
		t.Fatalf("body = %q, want \"ok\"", rec.Body.String())
	}
}

func TestRestartWithBodyIsAccepted(t *testing.T) {
	srv := New(newFakeBackend(), nil, nil)
	rec := httptest.NewRecorder()
	srv.Handler().ServeHTTP(rec, httptest.NewRequest("POST", "/v1/plugins/edged/restart", strings.NewReader("{}")))
	if rec.Code != 200 {
		t.Fatalf("status = %d, want 200", rec.Code)
	}
}

func TestMetricsExposeHostMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := metrics.New(reg)
	m.Delivered("edged", 5)
	m.Routed(metrics.KindGroup)
	m.SetQueueDepth("edged", 9)
	m.SetPluginState("edged", metrics.StateUpgrading)
	m.PluginRestarted("edged")

	srv := New(newFakeBackend(), reg, nil)
	rec := httptest.NewRecorder()
	srv.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != 200 {
		t.Fatalf("status = %d", rec.Code)
	}
	body, _ := io.ReadAll(rec.Body)
	for _, want := range []string{
		`edgehive_router_deliveries_total{plugin="edged"} 5`,
		`edgehive_router_messages_total{kind="group"} 1`,
		`edgehive_router_queue_depth{plugin="edged"} 9`,
		`edgehive_plugin_state{plugin="edged",state="upgrading"} 1`,
		`edgehive_plugin_state{plugin="edged",state="running"} 0`,
		`edgehive_plugin_restarts_total{plugin="edged"} 1`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

func FuzzDecodeUpgradeRequest(f *testing.F) {
	for _, seed := range []string{
		`{"path":"/x"}`, `{"path":"/x","sha256":"` + goodSum + `"}`, `{"path":""}`, `{`, `null`, `[]`,
		`{"path":"/x","extra":1}`, `{"path":"/x"}{}`, `"str"`, ``,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		req, err := decodeUpgradeRequest(strings.NewReader(string(data)))
		if err == nil && (req.Path == "" || req.Path[0] != '/') {
			t.Fatalf("accepted a request with path %q", req.Path)
		}
		if err == nil && req.SHA256 != "" && len(req.SHA256) != 64 {
			t.Fatalf("accepted sha256 %q", req.SHA256)
		}
	})
}
