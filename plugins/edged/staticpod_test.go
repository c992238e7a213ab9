package edged

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/utils/clock"

	"github.com/edgehive/edgehive/plugins/edged/container"
	"github.com/edgehive/edgehive/plugins/edged/cri"
	"github.com/edgehive/edgehive/sdk"
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

func TestStaticPodMirror(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "web.yaml"), []byte("apiVersion: v1\nkind: Pod\nmetadata: {name: web, namespace: kube-system}\n"+
		"spec:\n  containers:\n  - {name: app, image: "+busybox+", command: [sleep, '300']}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	rt := cri.NewFakeRuntime(busybox, pause)
	m := NewWithRuntime(rt, clock.RealClock{})
	m.staticPeriod = 100 * time.Millisecond
	h := sdktest.New(t, m, sdktest.Options{ConfigJSON: `{"sandbox_image":"` + pause + `","static_pod_dir":"` + dir + `","register_node":false}`})
	name := "web-" + sdktest.DefaultNodeName
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	sent, ok := h.WaitSent(ctx, func(s sdktest.Sent) bool {
		return s.Target == metaManager && s.Message.Router.Operation == sdk.OpInsert && s.Message.Router.Resource == "kube-system/pod/"+name
	})
	if !ok {
		t.Fatal("no mirror pod sent")
	}
	var mirror v1.Pod
	if err := sent.Message.DecodeContent(&mirror); err != nil || mirror.Annotations["kubernetes.io/config.mirror"] == "" {
		t.Fatalf("mirror pod %+v %v", mirror.ObjectMeta, err)
	}
	// The cloud's mirror (its own UID) comes back down: it must not run twice.
	mirror.UID = "uid-from-the-apiserver"
	if err := h.Deliver(podMsg(t, sdk.OpInsert, &mirror)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	sbs, _ := rt.ListPodSandbox(context.Background(), nil)
	if len(sbs) != 1 || sbs[0].Metadata.Uid == "uid-from-the-apiserver" {
		t.Fatalf("sandboxes %v", sbs)
	}
}
