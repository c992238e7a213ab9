package edged

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/utils/clock"

	"github.com/edgehive/edgehive/plugins/edged/cri"
	"github.com/edgehive/edgehive/plugins/edged/volume"
	"github.com/edgehive/edgehive/sdk"
	"github.com/edgehive/edgehive/sdk/sdktest"
)

// TestConfigMapVolume: metamanager serves a configMap; the pod runs with the
// file mounted, a changed configMap changes the file, deletion removes the
// pod's volume directory.
func TestConfigMapVolume(t *testing.T) {
	var mu sync.Mutex
	data := map[string]string{"app.conf": "v1"}
	asked := map[string]int{}
	meta := func(req *sdk.Message) (*sdk.Message, error) {
		mu.Lock()
		defer mu.Unlock()
		asked[req.Router.Resource]++
		switch req.Router.Resource {
		case "default/pod":
			resp := sdk.NewMessage(req.Header.ID).BuildRouter(metaManager, sdk.GroupMeta, req.Router.Resource, sdk.OpResponse)
			return resp, resp.FillBody([]string{})
		case "default/configmap/cfg":
			cm := &v1.ConfigMap{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"},
				ObjectMeta: metav1.ObjectMeta{Name: "cfg", Namespace: "default"}, Data: map[string]string{}}
			for k, v := range data {
				cm.Data[k] = v
			}
			resp := sdk.NewMessage(req.Header.ID).BuildRouter(metaManager, sdk.GroupMeta, req.Router.Resource, sdk.OpResponse)
			return resp, resp.FillBody(cm)
		}
		return sdk.NewErrorResponse(req, errors.New(req.Router.Resource+" not found in the local store, and the cloud is disconnected")), nil
	}
	rt := cri.NewFakeRuntime(busybox, pause)
	m := NewWithRuntime(rt, clock.RealClock{})
	m.volumeRefresh = 0 // every sync fetches
	dataDir := t.TempDir()
	h := sdktest.New(t, m, sdktest.Options{
		DataDir:    dataDir,
		ConfigJSON: `{"sandbox_image":"` + pause + `","http_address":"127.0.0.1:0"}`,
		Sync:       map[string]sdktest.SyncHandler{metaManager: meta},
	})

	pod := mkPod("web", "uid-web", false, "app")
	pod.Spec.Volumes = []v1.Volume{
		{Name: "config", VolumeSource: v1.VolumeSource{ConfigMap: &v1.ConfigMapVolumeSource{LocalObjectReference: v1.LocalObjectReference{Name: "cfg"}}}},
		{Name: "scratch", VolumeSource: v1.VolumeSource{EmptyDir: &v1.EmptyDirVolumeSource{}}},
	}
	pod.Spec.Containers[0].VolumeMounts = []v1.VolumeMount{
		{Name: "config", MountPath: "/etc/app", ReadOnly: true},
		{Name: "scratch", MountPath: "/scratch"},
	}
	if err := h.Deliver(podMsg(t, sdk.OpInsert, pod)); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, h, "web", 5*time.Second, running)

	volDir := filepath.Join(dataDir, "pods", "uid-web", "volumes")
	cfgDir := filepath.Join(volDir, volume.PluginConfigMap, "config")
	file := filepath.Join(cfgDir, "app.conf")
	if b, err := os.ReadFile(file); err != nil || string(b) != "v1" {
		t.Fatalf("app.conf = %q, %v", b, err)
	}
	ctrs, _ := rt.ListContainers(context.Background(), nil)
	if len(ctrs) != 1 {
		t.Fatalf("containers %v", ctrs)
	}
	cfg := rt.ContainerConfig(ctrs[0].Id)
	if len(cfg.Mounts) != 3 || cfg.Mounts[2].ContainerPath != "/etc/hosts" || cfg.Mounts[0].HostPath != cfgDir || cfg.Mounts[0].ContainerPath != "/etc/app" || !cfg.Mounts[0].Readonly ||
		cfg.Mounts[1].HostPath != filepath.Join(volDir, volume.PluginEmptyDir, "scratch") {
		t.Fatalf("mounts %v", cfg.Mounts)
	}

	// The configMap changes; the next sync (here an update) rewrites the file.
	mu.Lock()
	data = map[string]string{"app.conf": "v2"}
	mu.Unlock()
	if err := h.Deliver(podMsg(t, sdk.OpUpdate, pod)); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		b, _ := os.ReadFile(file)
		if string(b) == "v2" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("app.conf = %q after the change", b)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if slicesCount(rt.Calls(), "CreateContainer") != 1 {
		t.Fatalf("a configMap change restarted the container: %v", rt.Calls())
	}

	// A pod whose configMap is missing does not start, with a clear reason.
	bad := mkPod("bad", "uid-bad", false, "app")
	bad.Spec.Volumes = []v1.Volume{{Name: "c", VolumeSource: v1.VolumeSource{ConfigMap: &v1.ConfigMapVolumeSource{LocalObjectReference: v1.LocalObjectReference{Name: "gone"}}}}}
	bad.Spec.Containers[0].VolumeMounts = []v1.VolumeMount{{Name: "c", MountPath: "/c"}}
	if err := h.Deliver(podMsg(t, sdk.OpInsert, bad)); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, h, "bad", 5*time.Second, func(s v1.PodStatus) bool {
		return len(s.ContainerStatuses) == 1 && s.ContainerStatuses[0].State.Waiting != nil &&
			s.ContainerStatuses[0].State.Waiting.Reason == "CreateContainerConfigError"
	})

	// Deletion removes the pod's volumes once its containers are gone.
	if err := h.Deliver(podMsg(t, sdk.OpDelete, pod)); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(5 * time.Second)
	for {
		if _, err := os.Stat(filepath.Join(dataDir, "pods", "uid-web")); os.IsNotExist(err) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("pod volume dir not removed")
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, c := range mustList(t, rt) {
		if c.Labels["io.kubernetes.pod.uid"] == "uid-web" {
			t.Fatal("volumes removed before the containers")
		}
	}
}

func slicesCount(s []string, v string) int {
	n := 0
	for _, x := range s {
		if x == v {
			n++
		}
	}
	return n
}

func mustList(t *testing.T, rt *cri.FakeRuntime) []*runtimeapi.Container {
	cs, err := rt.ListContainers(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

func TestDecodeObject(t *testing.T) {
	req := sdk.NewMessage("").BuildRouter(Name, sdk.GroupMeta, "default/secret/s", sdk.OpQuery)
	sec := v1.Secret{Data: map[string][]byte{"k": []byte("v")}, StringData: map[string]string{"s": "t"}}
	b, _ := json.Marshal(sec)
	for name, content := range map[string]any{
		"object":     sec,
		"string":     string(b),
		"objectresp": map[string]any{"Object": sec, "Err": nil},
	} {
		resp := sdk.NewMessage(req.Header.ID).BuildRouter(metaManager, sdk.GroupMeta, req.Router.Resource, sdk.OpResponse)
		if err := resp.FillBody(content); err != nil {
			t.Fatal(err)
		}
		got, err := decodeObject(volume.KindSecret, resp)
		if err != nil || string(got["k"]) != "v" || string(got["s"]) != "t" {
			t.Errorf("%s: %v %v", name, got, err)
		}
	}
	_, err := decodeObject(volume.KindSecret, sdk.NewErrorResponse(req, errors.New("default/secret/s not found in the local store")))
	if !errors.Is(err, volume.ErrNotFound) {
		t.Fatalf("err = %v", err)
	}
	_, err = decodeObject(volume.KindSecret, sdk.NewErrorResponse(req, errors.New("timeout")))
	if err == nil || errors.Is(err, volume.ErrNotFound) {
		t.Fatalf("err = %v", err)
	}
}
