package staticpod

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const yamlPod = `apiVersion: v1
kind: Pod
metadata:
  name: web
  labels: {app: web}
spec:
  containers:
  - name: app
    image: busybox
    command: ["sleep", "300"]
`

const jsonPod = `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"db","namespace":"data"},
 "spec":{"restartPolicy":"Never","containers":[{"name":"db","image":"busybox"}]}}`

func write(t *testing.T, dir, name, content string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestScanAndDiff(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "web.yaml", yamlPod)
	write(t, dir, "db.json", jsonPod)
	write(t, dir, "notes.txt", "ignored")
	write(t, dir, ".hidden.yaml", yamlPod)
	write(t, dir, "bad.yml", "kind: Deployment\nmetadata: {name: x}\n")
	pods, errs := Scan(dir, "Edge-1")
	if len(errs) != 1 || !strings.Contains(errs[0].Error(), "not Pod") {
		t.Fatalf("errs %v", errs)
	}
	if len(pods) != 2 || pods[0].Name != "db-edge-1" || pods[0].Namespace != "data" || pods[1].Name != "web-edge-1" ||
		pods[1].Namespace != "default" || pods[1].Spec.NodeName != "Edge-1" || pods[1].Spec.RestartPolicy != "Always" ||
		pods[0].Spec.RestartPolicy != "Never" || pods[1].Labels["app"] != "web" {
		t.Fatalf("pods %+v", pods)
	}
	web := pods[1]
	if web.UID == "" || web.Annotations[AnnotationSource] != "file" || web.Annotations[AnnotationHash] != string(web.UID) {
		t.Fatalf("web meta %+v", web.ObjectMeta)
	}
	again, _ := Scan(dir, "Edge-1")
	if again[1].UID != web.UID {
		t.Fatal("UID not stable")
	}
	add, del, known := Diff(nil, pods)
	if len(add) != 2 || len(del) != 0 {
		t.Fatalf("first diff %v %v", add, del)
	}
	// Change web, remove db.
	write(t, dir, "web.yaml", strings.Replace(yamlPod, "300", "400", 1))
	os.Remove(filepath.Join(dir, "db.json"))
	pods, _ = Scan(dir, "Edge-1")
	add, del, _ = Diff(known, pods)
	if len(add) != 1 || add[0].UID == web.UID || len(del) != 2 {
		t.Fatalf("second diff add %d del %d", len(add), len(del))
	}
	if p, errs := Scan(filepath.Join(dir, "missing"), "n"); p != nil || errs != nil {
		t.Fatal("missing dir")
	}
}
