package metaserver

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	"github.com/edgehive/edgehive/plugins/metamanager/store"
)

// FuzzRequest: any GET path and query is answered without a panic, with
// JSON, and with a metav1.Status for every error.
func FuzzRequest(f *testing.F) {
	for _, seed := range []string{
		"/api/v1/pods", "/api/v1/namespaces/default/pods/a", "/api/v1/watch/nodes", "/api/v1/namespaces//pods",
		"/api/v1/pods?labelSelector=a%20in%20(b,c),!d&fieldSelector=spec.nodeName!%3Dx",
		"/api/v1/pods?watch=1&resourceVersion=0&sendInitialEvents=true&allowWatchBookmarks=true",
		"/api/v1/namespaces/default/secrets/s", "/api/v1/nodes/n/status", "/api", "/api/v1",
	} {
		f.Add(seed)
	}
	fs := &fakeStore{objs: map[string]store.Object{}}
	hub := NewHub(1000, 0, 0)
	fs.put(hub, "default/pod/a", pod("a", "web"))
	fs.put(hub, "null/node/n", `{"metadata":{"name":"n"}}`)
	srv := New(fs, hub, Options{WatchTimeout: time.Millisecond})
	f.Fuzz(func(t *testing.T, target string) {
		u, err := url.Parse(target)
		if err != nil || u.Path == "" || u.Path[0] != '/' {
			return
		}
		req := httptest.NewRequest(http.MethodGet, "http://127.0.0.1/", nil)
		req.URL = u
		rec := httptest.NewRecorder()
		srv.ServeHTTP(rec, req)
		if rec.Code >= 400 {
			var st struct {
				Kind string `json:"kind"`
				Code int    `json:"code"`
			}
			if err := json.Unmarshal(rec.Body.Bytes(), &st); err != nil || st.Kind != "Status" || st.Code != rec.Code {
				t.Fatalf("%s: HTTP %d %q", target, rec.Code, rec.Body.String())
			}
		}
	})
}
