package server

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

type fakeSource struct {
	pods []*v1.Pod
	dir  string
}

func (f fakeSource) Pods() []*v1.Pod           { return f.pods }
func (f fakeSource) LogDir(pod *v1.Pod) string { return filepath.Join(f.dir, pod.Name) }

func TestAPI(t *testing.T) {
	dir := t.TempDir()
	pod := &v1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default"}, Status: v1.PodStatus{Phase: v1.PodRunning}}
	if err := os.MkdirAll(filepath.Join(dir, "web", "app"), 0o755); err != nil {
		t.Fatal(err)
	}
	write := func(name, text string) {
		if err := os.WriteFile(filepath.Join(dir, "web", "app", name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("0.log", "2026-01-01T00:00:00Z stdout F first run\n")
	write("1.log", "2026-01-01T00:00:01Z stdout F one\n2026-01-01T00:00:02Z stderr P tw\n2026-01-01T00:00:02Z stderr F o\n2026-01-01T00:00:03Z stdout F three\nnot a cri line\n")
	srv := httptest.NewServer(New(fakeSource{pods: []*v1.Pod{pod}, dir: dir}))
	defer srv.Close()
	get := func(path string) (int, string) {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	tests := []struct {
		path string
		code int
		body string
	}{
		{"/healthz", 200, "ok"},
		{"/containerLogs/default/web/app", 200, "one\ntwo\nthree\n"},
		{"/containerLogs/default/web/app?tailLines=1", 200, "three\n"},
		{"/containerLogs/default/web/app?tailLines=0", 200, ""},
		{"/containerLogs/default/web/app?timestamps=true&tailLines=1", 200, "2026-01-01T00:00:03Z three\n"},
		{"/containerLogs/default/web/app?previous=true", 200, "first run\n"},
		{"/containerLogs/default/web/app?tailLines=x", 400, "tailLines \"x\": want a number >= 0\n"},
		{"/containerLogs/default/nope/app", 404, "pod default/nope not found\n"},
		{"/containerLogs/default/web/nope", 404, ""},
	}
	for _, tc := range tests {
		code, body := get(tc.path)
		if code != tc.code || (tc.body != "" || code == 200) && body != tc.body {
			t.Errorf("%s: %d %q, want %d %q", tc.path, code, body, tc.code, tc.body)
		}
	}
	code, body := get("/pods")
	var list v1.PodList
	if code != 200 || json.Unmarshal([]byte(body), &list) != nil || len(list.Items) != 1 || list.Items[0].Status.Phase != v1.PodRunning || list.Kind != "PodList" {
		t.Fatalf("/pods: %d %s", code, body)
	}
	if resp, err := http.Post(srv.URL+"/pods", "text/plain", nil); err != nil || resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("POST /pods: %v %v", resp.StatusCode, err)
	}
}
