package edged

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/utils/clock"

	"github.com/edgehive/edgehive/plugins/edged/container"
	"github.com/edgehive/edgehive/plugins/edged/cri"
	"github.com/edgehive/edgehive/sdk/sdktest"
)

// Static pods run with no metamanager at all and go when their file goes.
func TestStaticPods(t *testing.T) {
	dir := t.TempDir()
	manifest := filepath.Join(dir, "web.yaml")
	if err := os.WriteFile(manifest, []byte("apiVersion: v1\nkind: Pod\nmetadata: {name: web, namespace: kube-system}\n"+
		"spec:\n  containers:\n  - {name: app, image: "+busybox+", command: [sleep, '300']}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	rt := cri.NewFakeRuntime(busybox, pause)
	m := NewWithRuntime(rt, clock.RealClock{})
	m.staticPeriod = 100 * time.Millisecond
	h := sdktest.New(t, m, sdktest.Options{ConfigJSON: `{"sandbox_image":"` + pause + `","static_pod_dir":"` + dir + `","register_node":false}`})
	h.FailSendsTo(metaManager, errors.New("no metamanager"))
	name := "web-" + sdktest.DefaultNodeName
	count := func() (int, int) {
		cs, _ := rt.ListContainers(context.Background(), &runtimeapi.ContainerFilter{LabelSelector: map[string]string{container.LabelPodName: name}})
		running := 0
		for _, c := range cs {
			if c.State == runtimeapi.ContainerState_CONTAINER_RUNNING && c.Labels[container.LabelPodNamespace] == "kube-system" {
				running++
			}
		}
		return running, len(cs)
	}
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for !ok() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s; calls %v", what, rt.Calls())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitFor("static pod running", func() bool { r, _ := count(); return r == 1 })
	if err := os.Remove(manifest); err != nil {
		t.Fatal(err)
	}
	waitFor("static pod removed", func() bool { _, n := count(); return n == 0 })
}
