package servicebus

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgehive/edgehive/sdk"
	"github.com/edgehive/edgehive/sdk/sdktest"
)

// app is an application on the node, on loopback.
func newApp(t *testing.T) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	var calls atomic.Int64
	mux := http.NewServeMux()
	mux.HandleFunc("/hello", func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("X-App", "yes")
		fmt.Fprintf(w, "hello %s %s %s", r.Method, r.Header.Get("X-Who"), body)
	})
	mux.HandleFunc("/big", func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		_, _ = w.Write(bytes.Repeat([]byte("x"), 4096))
	})
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		select {
		case <-time.After(2 * time.Second):
		case <-r.Context().Done():
		}
	})
	mux.HandleFunc("/away", func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		http.Redirect(w, r, "http://192.0.2.1:80/elsewhere", http.StatusFound)
	})
	mux.HandleFunc("/here", func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		http.Redirect(w, r, "/hello", http.StatusFound)
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv, &calls
}

func startBus(t *testing.T, allow []string, dataDir string) (*ServiceBus, *sdktest.Harness) {
	t.Helper()
	cfg, _ := json.Marshal(map[string]any{"listen": "127.0.0.1:0", "allow": allow, "max_body_bytes": 1024, "timeout": "300ms"})
	m := New()
	if dataDir == "" {
		dataDir = t.TempDir()
	}
	h := sdktest.New(t, m, sdktest.Options{ConfigJSON: string(cfg), DataDir: dataDir})
	return m, h
}

func cloudRequest(t *testing.T, op, resource string, content any) *sdk.Message {
	t.Helper()
	m := sdk.NewMessage("")
	m.BuildRouter("router_servicebus", sdk.WireGroupUser, resource, op)
	if err := m.FillBody(content); err != nil {
		t.Fatal(err)
	}
	return m
}

func answerTo(t *testing.T, h *sdktest.Harness, req *sdk.Message) appResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, ok := h.WaitSent(ctx, func(s sdktest.Sent) bool { return s.Message.Header.ParentID == req.Header.ID })
	if !ok {
		t.Fatalf("no answer to %s", req.Header.ID)
	}
	if s.Message.Router.Operation != opUpload || s.Message.Router.Source != Name || s.Message.Router.Group != sdk.WireGroupUser {
		t.Fatalf("answer route %+v", s.Message.Router)
	}
	var resp appResponse
	if err := s.Message.DecodeContent(&resp); err != nil {
		t.Fatal(err)
	}
	return resp
}

func TestCloudToApp(t *testing.T) {
	app, calls := newApp(t)
	_, port, _ := net.SplitHostPort(app.Listener.Addr().String())
	allowed := "127.0.0.1:" + port
	tests := []struct {
		name       string
		op         string
		resource   string
		content    any
		wantStatus int
		wantBody   string // substring
		wantCalls  int64
	}{
		{"allowed GET", "GET", port + ":/hello", appRequest{Header: http.Header{"X-Who": {"cloud"}}}, 200, "hello GET cloud", 1},
		{"allowed POST with body", "POST", port + ":/hello", appRequest{Body: []byte("payload")}, 200, "hello POST  payload", 1},
		{"method from content", "upload", port + ":/hello", appRequest{Method: "PUT"}, 200, "hello PUT", 1},
		{"port off the allow-list", "GET", "1:/hello", appRequest{}, 403, "not on the allow-list", 0},
		{"url to a non-loopback address on the list", "GET", "", appRequest{URL: "http://192.0.2.1:80/x"}, 403, "not a loopback address", 0},
		{"url off the list", "GET", "", appRequest{URL: "http://192.0.2.7:81/x"}, 403, "not on the allow-list", 0},
		{"redirect to another host", "GET", port + ":/away", appRequest{}, 403, "redirect", 1},
		{"redirect on the same target is passed on", "GET", port + ":/here", appRequest{}, 302, "", 1},
		{"request body over the cap", "POST", port + ":/hello", appRequest{Body: bytes.Repeat([]byte("y"), 2048)}, 413, "limit is 1024", 0},
		{"answer body over the cap", "GET", port + ":/big", appRequest{}, 502, "larger than 1024", 1},
		{"application too slow", "GET", port + ":/slow", appRequest{}, 504, "no answer", 1},
		{"bad resource", "GET", "abc", appRequest{}, 400, "want <port>:/<path>", 0},
		{"content not a request", "GET", port + ":/hello", "just a string", 400, "bad request content", 0},
		{"bad method", "GET", port + ":/hello", appRequest{Method: "G E T"}, 400, "bad HTTP method", 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, h := startBus(t, []string{allowed, "192.0.2.1:80"}, "")
			before := calls.Load()
			req := cloudRequest(t, tc.op, tc.resource, tc.content)
			if err := h.Deliver(req); err != nil {
				t.Fatal(err)
			}
			resp := answerTo(t, h, req)
			if resp.StatusCode != tc.wantStatus || !strings.Contains(string(resp.Body), tc.wantBody) {
				t.Fatalf("got %d %q, want %d containing %q", resp.StatusCode, resp.Body, tc.wantStatus, tc.wantBody)
			}
			if got := calls.Load() - before; got != tc.wantCalls {
				t.Fatalf("application called %d times, want %d", got, tc.wantCalls)
			}
			if sent := h.Sent(); len(sent) != 1 || sent[0].Kind != sdktest.KindGroup || sent[0].Target != sdk.GroupHub {
				t.Fatalf("answer not sent to the hub group: %+v", sent)
			}
		})
	}
}

func TestSyncCloudRequestAnsweredByResponse(t *testing.T) {
	app, _ := newApp(t)
	_, port, _ := net.SplitHostPort(app.Listener.Addr().String())
	_, h := startBus(t, []string{"127.0.0.1:" + port}, "")
	req := cloudRequest(t, "GET", port+":/hello", appRequest{})
	req.Header.Sync = true
	if err := h.Deliver(req); err != nil {
		t.Fatal(err)
	}
	sent := h.Sent()
	if len(sent) != 1 || sent[0].Kind != sdktest.KindResponse || sent[0].Target != req.Header.ID {
		t.Fatalf("sent %+v", sent)
	}
}

func postLocal(t *testing.T, m *ServiceBus, body io.Reader) (int, localReply) {
	t.Helper()
	resp, err := http.Post("http://"+m.Addr().String()+"/", "application/json", body)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var r localReply
	_ = json.NewDecoder(resp.Body).Decode(&r)
	return resp.StatusCode, r
}

func TestLocalToCloud(t *testing.T) {
	dir := t.TempDir()
	m, h := startBus(t, nil, dir)
	h.OnSync(cloudModule, func(req *sdk.Message) (*sdk.Message, error) {
		if req.Router.Resource != "/abc" || req.Router.Operation != opUpload || req.Router.Group != sdk.WireGroupUser {
			return nil, fmt.Errorf("unexpected request %+v", req.Router)
		}
		var whole []byte
		if err := json.Unmarshal(req.Content, &whole); err != nil || !bytes.Contains(whole, []byte(`"targetURL":"/abc"`)) {
			return nil, fmt.Errorf("request content %s", req.Content)
		}
		answer, _ := json.Marshal([]byte("cloud says hi")) // bytes travel as base64
		return sdk.NewResponse(req, json.RawMessage(answer))
	})
	request := `{"method":"POST","targetURL":"/abc","payload":{"a":1}}`

	code, r := postLocal(t, m, strings.NewReader(request))
	if code != 403 || r.Code != 403 {
		t.Fatalf("target not started: %d %+v", code, r)
	}
	if err := h.Deliver(cloudRequest(t, opStart, "/abc", nil)); err != nil {
		t.Fatal(err)
	}
	code, r = postLocal(t, m, strings.NewReader(request))
	if code != 200 || r.Body != "cloud says hi" {
		t.Fatalf("allowed target: %d %+v", code, r)
	}
	if code, _ := postLocal(t, m, strings.NewReader("not json")); code != 400 {
		t.Fatalf("bad JSON: %d", code)
	}

	// An oversized body is refused without being read whole.
	total := int64(64 << 20)
	counter := &countingReader{limit: total}
	code, _ = postLocal(t, m, counter)
	if code != http.StatusRequestEntityTooLarge {
		t.Fatalf("oversized body: %d", code)
	}
	if n := counter.n.Load(); n >= total/2 {
		t.Fatalf("server let the client send %d of %d bytes", n, total)
	}

	// The started target survives a restart.
	h.Stop()
	m2, _ := startBus(t, nil, dir)
	if !m2.targets.has("/abc") {
		t.Fatal("started target lost across a restart")
	}
	if err := m2.Handle(context.Background(), cloudRequest(t, opStop, "/abc", nil)); err != nil {
		t.Fatal(err)
	}
	if m2.targets.has("/abc") {
		t.Fatal("stop did not remove the target")
	}
}

type countingReader struct {
	limit int64
	n     atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	left := c.limit - c.n.Load()
	if left <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > left {
		p = p[:left]
	}
	for i := range p {
		p[i] = 'z'
	}
	c.n.Add(int64(len(p)))
	return len(p), nil
}
