package metaserver

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgehive/edgehive/plugins/metamanager/store"
)

// fakeStore is an in-memory Reader; tests write it and publish to the hub
// in the order metamanager does (store, then publish).
type fakeStore struct {
	mu   sync.Mutex
	objs map[string]store.Object
}

var _ Reader = (*fakeStore)(nil)

func (f *fakeStore) Get(_ context.Context, key string) (store.Object, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	o, ok := f.objs[key]
	if !ok {
		return store.Object{}, fmt.Errorf("get %s: %w", key, store.ErrNotFound)
	}
	return o, nil
}

func (f *fakeStore) List(_ context.Context, typ, ns string) ([]store.Object, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []store.Object
	for _, o := range f.objs {
		if o.Type == typ && (ns == "" || o.Namespace == ns) {
			out = append(out, o)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out, nil
}

func (f *fakeStore) put(hub *Hub, key, value string) {
	ns, typ, name, _ := store.SplitKey(key)
	o := store.Object{Key: key, Type: typ, Namespace: ns, Name: name, Value: json.RawMessage(value)}
	f.mu.Lock()
	_, existed := f.objs[key]
	f.objs[key] = o
	f.mu.Unlock()
	if existed {
		hub.Publish(Modified, o)
	} else {
		hub.Publish(Added, o)
	}
}

func pod(name, app string) string {
	return fmt.Sprintf(`{"metadata":{"name":%q,"namespace":"default","labels":{"app":%q}},"spec":{"nodeName":"n1"}}`, name, app)
}

func newTestServer(t *testing.T, secrets bool) (*httptest.Server, *fakeStore, *Hub) {
	t.Helper()
	fs := &fakeStore{objs: map[string]store.Object{}}
	hub := NewHub(1000, 0, 0)
	srv := New(fs, hub, Options{Secrets: secrets})
	ts := httptest.NewServer(srv)
	t.Cleanup(func() {
		_ = srv.Stop(context.Background())
		ts.Close()
	})
	return ts, fs, hub
}

type status struct {
	Kind    string `json:"kind"`
	Status  string `json:"status"`
	Reason  string `json:"reason"`
	Code    int    `json:"code"`
	Message string `json:"message"`
	Details struct {
		Name   string `json:"name"`
		Kind   string `json:"kind"`
		Causes []struct {
			Reason string `json:"reason"`
		} `json:"causes"`
	} `json:"details"`
}

func TestErrors(t *testing.T) {
	ts, fs, hub := newTestServer(t, false)
	fs.put(hub, "default/pod/a", pod("a", "web"))
	tests := []struct {
		method, path string
		code         int
		reason       string
	}{
		{"GET", "/api/v1/namespaces/default/pods/nope", 404, "NotFound"},
		{"GET", "/api/v1/deployments", 404, "NotFound"},
		{"GET", "/apis/apps/v1/deployments", 404, "NotFound"},
		{"GET", "/api/v1/namespaces/default/pods/a/log", 404, "NotFound"},
		{"GET", "/api/v1/pods/a", 404, "NotFound"},                   // a namespaced object needs its namespace
		{"GET", "/api/v1/namespaces/default/nodes", 404, "NotFound"}, // nodes have none
		{"GET", "/api/v1/namespaces/default/secrets", 403, "Forbidden"},
		{"GET", "/api/v1/secrets?watch=true", 403, "Forbidden"},
		{"POST", "/api/v1/namespaces/default/pods", 405, "MethodNotAllowed"},
		{"PUT", "/api/v1/namespaces/default/pods/a", 405, "MethodNotAllowed"},
		{"PATCH", "/api/v1/namespaces/default/pods/a", 405, "MethodNotAllowed"},
		{"DELETE", "/api/v1/namespaces/default/pods/a", 405, "MethodNotAllowed"},
		{"GET", "/api/v1/pods?labelSelector=app+in+(x", 400, "BadRequest"},
		{"GET", "/api/v1/pods?fieldSelector=status.phase%3DRunning", 400, "BadRequest"},
		{"GET", "/api/v1/nodes?fieldSelector=spec.nodeName%3Dx", 400, "BadRequest"},
		{"GET", "/api/v1/pods?fieldSelector=metadata.name", 400, "BadRequest"},
		{"GET", "/api/v1/pods?watch=maybe", 400, "BadRequest"},
		{"GET", "/api/v1/pods?watch=true&resourceVersion=abc", 400, "BadRequest"},
		{"GET", "/api/v1/pods?watch=true&timeoutSeconds=-1", 400, "BadRequest"},
		{"GET", "/api/v1/pods?watch=true&resourceVersion=5", 410, "Expired"},
		{"GET", "/api/v1/pods?watch=true&resourceVersion=99999", 504, "Timeout"},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			req, _ := http.NewRequest(tt.method, ts.URL+tt.path, strings.NewReader("{}"))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var st status
			if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tt.code || st.Code != tt.code || st.Reason != tt.reason || st.Kind != "Status" || st.Status != "Failure" || st.Message == "" {
				t.Fatalf("HTTP %d %+v, want %d %s", resp.StatusCode, st, tt.code, tt.reason)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
				t.Fatalf("Content-Type %q", ct)
			}
		})
	}
	// The details name what was not found, as the API server does.
	resp, _ := http.Get(ts.URL + "/api/v1/namespaces/default/pods/nope")
	var st status
	_ = json.NewDecoder(resp.Body).Decode(&st)
	resp.Body.Close()
	if st.Details.Name != "nope" || st.Details.Kind != "pods" {
		t.Fatalf("details %+v", st.Details)
	}
	// A too-large version carries the cause client-go looks for.
	resp, _ = http.Get(ts.URL + "/api/v1/pods?watch=true&resourceVersion=99999")
	body := readAll(t, resp)
	if !strings.Contains(body, `"ResourceVersionTooLarge"`) {
		t.Fatalf("too large: %s", body)
	}
}

func readAll(t *testing.T, resp *http.Response) string {
	t.Helper()
	defer resp.Body.Close()
	var b strings.Builder
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		b.WriteString(sc.Text())
	}
	return b.String()
}

func TestListShape(t *testing.T) {
	ts, fs, hub := newTestServer(t, true)
	fs.put(hub, "default/pod/a", pod("a", "web"))
	fs.put(hub, "null/node/n1", `{"metadata":{"name":"n1"}}`)
	for _, tt := range []struct{ path, want string }{
		{"/api/v1/namespaces/other/configmaps", `{"kind":"ConfigMapList","apiVersion":"v1","metadata":{"resourceVersion":"1002"},"items":[]}`},
		{"/api/v1/namespaces/default/pods?labelSelector=app%3Dweb",
			`{"kind":"PodList","apiVersion":"v1","metadata":{"resourceVersion":"1002"},"items":[` +
				`{"apiVersion":"v1","kind":"Pod","metadata":{"labels":{"app":"web"},"name":"a","namespace":"default","resourceVersion":"1001"},"spec":{"nodeName":"n1"}}]}`},
		{"/api/v1/pods?fieldSelector=spec.nodeName%3Dother", `{"kind":"PodList","apiVersion":"v1","metadata":{"resourceVersion":"1002"},"items":[]}`},
		{"/api/v1/nodes/n1", `{"apiVersion":"v1","kind":"Node","metadata":{"name":"n1","resourceVersion":"1002"}}`},
		{"/api/v1/secrets", `{"kind":"SecretList","apiVersion":"v1","metadata":{"resourceVersion":"1002"},"items":[]}`},
	} {
		resp, err := http.Get(ts.URL + tt.path)
		if err != nil {
			t.Fatal(err)
		}
		if got := readAll(t, resp); resp.StatusCode != 200 || got != tt.want {
			t.Errorf("%s: HTTP %d\n got %s\nwant %s", tt.path, resp.StatusCode, got, tt.want)
		}
	}
}

// A watch with sendInitialEvents streams the current objects, a bookmark
// marking their end, then changes, one JSON event per line.
func TestWatchStream(t *testing.T) {
	ts, fs, hub := newTestServer(t, false)
	fs.put(hub, "default/pod/a", pod("a", "web"))
	fs.put(hub, "default/pod/b", pod("b", "db"))
	resp, err := http.Get(ts.URL + "/api/v1/namespaces/default/pods?watch=1&sendInitialEvents=true&allowWatchBookmarks=true&resourceVersionMatch=NotOlderThan&labelSelector=app%3Dweb")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("HTTP %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	lines := make(chan string, 10)
	go func() {
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	next := func() string {
		select {
		case l := <-lines:
			return l
		case <-time.After(5 * time.Second):
			t.Fatal("no event")
		}
		return ""
	}
	want := []string{
		`{"type":"ADDED","object":{"apiVersion":"v1","kind":"Pod","metadata":{"labels":{"app":"web"},"name":"a","namespace":"default","resourceVersion":"1001"},"spec":{"nodeName":"n1"}}}`,
		`{"type":"BOOKMARK","object":{"apiVersion":"v1","kind":"Pod","metadata":{"annotations":{"k8s.io/initial-events-end":"true"},"resourceVersion":"1002"}}}`,
	}
	for _, w := range want {
		if got := next(); got != w {
			t.Fatalf("got  %s\nwant %s", got, w)
		}
	}
	fs.put(hub, "default/pod/b", pod("b", "web")) // starts matching
	if got := next(); !strings.HasPrefix(got, `{"type":"ADDED","object":`) || !strings.Contains(got, `"name":"b"`) || !strings.Contains(got, `"resourceVersion":"1003"`) {
		t.Fatalf("relabelled: %s", got)
	}
	fs.put(hub, "default/pod/a", pod("a", "db")) // stops matching
	if got := next(); !strings.HasPrefix(got, `{"type":"DELETED","object":`) || !strings.Contains(got, `"name":"a"`) {
		t.Fatalf("unlabelled: %s", got)
	}
}

func TestHubSlowWatcherDoesNotBlock(t *testing.T) {
	hub := NewHub(0, 16, 4)
	stuck, _ := hub.WatchNow("pod", "")       // never read
	other, _ := hub.WatchNow("configmap", "") // another type: untouched
	done := make(chan struct{})
	go func() {
		for i := range 10000 {
			hub.Publish(Added, store.Object{Key: fmt.Sprintf("default/pod/p%d", i), Type: "pod", Namespace: "default", Value: json.RawMessage(`{}`)})
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Publish blocked on a slow watcher")
	}
	if !stuck.Overflowed() {
		t.Fatal("the slow watcher was not closed")
	}
	n := 0
	for range stuck.ch { // what it buffered, then closed
		n++
	}
	if n != 4 {
		t.Fatalf("buffered %d, want 4", n)
	}
	if hub.Watchers() != 1 || other.Overflowed() {
		t.Fatalf("watchers %d, other overflowed %v", hub.Watchers(), other.Overflowed())
	}
	other.Stop()
	other.Stop() // twice is fine
	if hub.Watchers() != 0 {
		t.Fatal("Stop left the watcher registered")
	}
}

func TestHubResume(t *testing.T) {
	hub := NewHub(100, 3, 0)
	for i := range 5 {
		hub.Publish(Added, store.Object{Key: fmt.Sprintf("default/pod/p%d", i), Type: "pod", Namespace: "default", Value: json.RawMessage(`{}`)})
	}
	if hub.Current() != 105 || hub.Revision("default/pod/p4") != 105 || hub.Revision("default/pod/old") != 100 {
		t.Fatalf("current %d", hub.Current())
	}
	for _, tt := range []struct {
		from    uint64
		backlog int
		err     error
	}{
		{100, 0, ErrExpired}, {101, 0, ErrExpired}, {102, 3, nil}, {104, 1, nil}, {105, 0, nil}, {106, 0, ErrTooLarge},
	} {
		w, err := hub.Watch("pod", "", tt.from)
		if !errors.Is(err, tt.err) {
			t.Fatalf("from %d: err %v, want %v", tt.from, err, tt.err)
		}
		if err == nil {
			if len(w.backlog) != tt.backlog || (tt.backlog > 0 && w.backlog[0].rev != tt.from+1) {
				t.Fatalf("from %d: backlog %d", tt.from, len(w.backlog))
			}
			w.Stop()
		}
	}
	// Types the MetaServer does not serve are not numbered.
	hub.Publish(Added, store.Object{Key: "default/podpatch/p", Type: "podpatch", Value: json.RawMessage(`{}`)})
	if hub.Current() != 105 {
		t.Fatal("an unserved type was published")
	}
}

func TestStopEndsWatches(t *testing.T) {
	fs := &fakeStore{objs: map[string]store.Object{}}
	srv := New(fs, NewHub(1, 0, 0), Options{})
	ctx := context.Background()
	if err := srv.Start(ctx, "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get("http://" + srv.Addr() + "/api/v1/pods?watch=true")
	if err != nil {
		t.Fatal(err)
	}
	ended := make(chan struct{})
	go func() { readAll(t, resp); close(ended) }()
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := srv.Stop(sctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ended:
	case <-time.After(5 * time.Second):
		t.Fatal("the watch outlived Stop")
	}
	if err := New(fs, NewHub(1, 0, 0), Options{}).Start(ctx, "[::]:0"); err == nil {
		t.Fatal("listened on a non-loopback address")
	}
}

// A watch on one name (the path form, and the old /watch/ path) sees only
// that object; past the watch limit, 429.
func TestWatchOneName(t *testing.T) {
	fs := &fakeStore{objs: map[string]store.Object{}}
	hub := NewHub(1000, 0, 0)
	srv := New(fs, hub, Options{MaxWatches: 2})
	ts := httptest.NewServer(srv)
	t.Cleanup(func() { _ = srv.Stop(context.Background()); ts.Close() })
	fs.put(hub, "default/pod/a", pod("a", "web"))
	fs.put(hub, "default/pod/b", pod("b", "web"))
	var streams []*bufio.Scanner
	for _, path := range []string{"/api/v1/namespaces/default/pods/b?watch=true&resourceVersion=1002", "/api/v1/watch/namespaces/default/pods/b?resourceVersion=1002"} {
		resp, err := http.Get(ts.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("%s: HTTP %d", path, resp.StatusCode)
		}
		streams = append(streams, bufio.NewScanner(resp.Body))
	}
	resp, err := http.Get(ts.URL + "/api/v1/pods?watch=true")
	if err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, resp); resp.StatusCode != http.StatusTooManyRequests || !strings.Contains(got, `"TooManyRequests"`) {
		t.Fatalf("third watch: HTTP %d %s", resp.StatusCode, got)
	}
	fs.put(hub, "default/pod/a", pod("a", "x"))
	fs.put(hub, "default/pod/b", pod("b", "x"))
	for i, sc := range streams { // b's change first: a's was not sent
		if !sc.Scan() {
			t.Fatalf("stream %d ended", i)
		}
		if got := sc.Text(); !strings.HasPrefix(got, `{"type":"MODIFIED"`) || !strings.Contains(got, `"name":"b"`) {
			t.Fatalf("stream %d: %s", i, got)
		}
	}
}
