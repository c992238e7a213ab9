package edged

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
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
	notFound := json.RawMessage(`{"ErrStatus":{"metadata":{},"status":"Failure","message":"secrets \"s\" not found","reason":"NotFound","details":{"name":"s","kind":"secrets"},"code":404}}`)
	forbidden := json.RawMessage(`{"ErrStatus":{"metadata":{},"status":"Failure","message":"secrets \"s\" is forbidden","reason":"Forbidden","code":403}}`)
	respond := func(op string, content any) *sdk.Message {
		resp := sdk.NewMessage(req.Header.ID).BuildRouter(metaManager, sdk.GroupMeta, req.Router.Resource, op)
		if err := resp.FillBody(content); err != nil {
			t.Fatal(err)
		}
		return resp
	}
	for _, tc := range []struct {
		name      string
		resp      *sdk.Message
		wantData  bool
		notFound  bool
		errSubstr string
	}{
		{name: "object", resp: respond(sdk.OpResponse, sec), wantData: true},
		{name: "string", resp: respond(sdk.OpResponse, string(b)), wantData: true},
		{name: "objectresp", resp: respond(sdk.OpResponse, map[string]any{"Object": sec, "Err": nil}), wantData: true},
		{name: "errstatus not found", resp: respond(sdk.OpResponse, notFound), notFound: true, errSubstr: "not found"},
		{name: "errstatus forbidden", resp: respond(sdk.OpResponse, forbidden), errSubstr: "forbidden"},
		{name: "objectresp not found", resp: respond(sdk.OpResponse, map[string]any{"Object": map[string]any{}, "Err": notFound}), notFound: true},
		{name: "objectresp forbidden", resp: respond(sdk.OpResponse, map[string]any{"Object": nil, "Err": forbidden}), errSubstr: "Forbidden"},
		{name: "metamanager not found", resp: sdk.NewErrorResponse(req, errors.New("default/secret/s not found in the local store")), notFound: true},
		{name: "metamanager timeout", resp: sdk.NewErrorResponse(req, errors.New("timeout")), errSubstr: "timeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := decodeObject(volume.KindSecret, tc.resp)
			if tc.wantData {
				if err != nil || string(got["k"]) != "v" || string(got["s"]) != "t" {
					t.Fatalf("got %v, %v", got, err)
				}
				return
			}
			if err == nil || got != nil {
				t.Fatalf("an error answer decoded as %v", got)
			}
			if errors.Is(err, volume.ErrNotFound) != tc.notFound {
				t.Fatalf("err = %v; not found %v, want %v", err, !tc.notFound, tc.notFound)
			}
			if !strings.Contains(err.Error(), tc.errSubstr) {
				t.Fatalf("err = %v, want it to say %q", err, tc.errSubstr)
			}
		})
	}
}

// TestCloudErrorAnswers: the cloud answers configMap and secret queries with
// Kubernetes API errors. NotFound makes optional references absent (the pod
// runs, the optional volume is empty); Forbidden on a required secret keeps
// the pod waiting with the cloud's reason instead of mounting empty data.
func TestCloudErrorAnswers(t *testing.T) {
	notFound := json.RawMessage(`{"ErrStatus":{"metadata":{},"status":"Failure","message":"configmaps \"opt\" not found","reason":"NotFound","details":{"name":"opt","kind":"configmaps"},"code":404}}`)
	forbidden := json.RawMessage(`{"ErrStatus":{"metadata":{},"status":"Failure","message":"secrets \"creds\" is forbidden: node edge-1 has no pod using it","reason":"Forbidden","code":403}}`)
	meta := func(req *sdk.Message) (*sdk.Message, error) {
		resp := sdk.NewMessage(req.Header.ID).BuildRouter(metaManager, sdk.GroupMeta, req.Router.Resource, sdk.OpResponse)
		switch req.Router.Resource {
		case "default/pod":
			return resp, resp.FillBody([]string{})
		case "default/configmap/opt":
			return resp, resp.FillBody(map[string]any{"Object": map[string]any{}, "Err": notFound}) // ObjectResp
		case "default/secret/creds":
			return resp, resp.FillBody(forbidden) // a bare API error
		}
		return sdk.NewErrorResponse(req, errors.New(req.Router.Resource+" not found in the local store")), nil
	}
	rt := cri.NewFakeRuntime(busybox, pause)
	m := NewWithRuntime(rt, clock.RealClock{})
	dataDir := t.TempDir()
	h := sdktest.New(t, m, sdktest.Options{
		DataDir:    dataDir,
		ConfigJSON: `{"sandbox_image":"` + pause + `","http_address":"127.0.0.1:0"}`,
		Sync:       map[string]sdktest.SyncHandler{metaManager: meta},
	})

	yes := true
	opt := mkPod("opt", "uid-opt", false, "app")
	opt.Spec.Volumes = []v1.Volume{{Name: "c", VolumeSource: v1.VolumeSource{ConfigMap: &v1.ConfigMapVolumeSource{
		LocalObjectReference: v1.LocalObjectReference{Name: "opt"}, Optional: &yes}}}}
	opt.Spec.Containers[0].VolumeMounts = []v1.VolumeMount{{Name: "c", MountPath: "/c"}}
	opt.Spec.Containers[0].Env = []v1.EnvVar{{Name: "MODE", ValueFrom: &v1.EnvVarSource{ConfigMapKeyRef: &v1.ConfigMapKeySelector{
		LocalObjectReference: v1.LocalObjectReference{Name: "opt"}, Key: "mode", Optional: &yes}}}}
	if err := h.Deliver(podMsg(t, sdk.OpInsert, opt)); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, h, "opt", 5*time.Second, running)
	dir := filepath.Join(dataDir, "pods", "uid-opt", "volumes", volume.PluginConfigMap, "c")
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), "..") {
			t.Fatalf("the optional, missing configMap projected %s", e.Name())
		}
	}

	req := mkPod("req", "uid-req", false, "app")
	req.Spec.Volumes = []v1.Volume{{Name: "s", VolumeSource: v1.VolumeSource{Secret: &v1.SecretVolumeSource{SecretName: "creds"}}}}
	req.Spec.Containers[0].VolumeMounts = []v1.VolumeMount{{Name: "s", MountPath: "/s"}}
	if err := h.Deliver(podMsg(t, sdk.OpInsert, req)); err != nil {
		t.Fatal(err)
	}
	st := waitStatus(t, h, "req", 5*time.Second, func(s v1.PodStatus) bool {
		return len(s.ContainerStatuses) == 1 && s.ContainerStatuses[0].State.Waiting != nil &&
			s.ContainerStatuses[0].State.Waiting.Reason == "CreateContainerConfigError"
	})
	if msg := st.ContainerStatuses[0].State.Waiting.Message; !strings.Contains(msg, "is forbidden") {
		t.Fatalf("waiting message %q does not give the cloud's reason", msg)
	}
	for _, c := range mustList(t, rt) {
		if c.Labels["io.kubernetes.pod.uid"] == "uid-req" {
			t.Fatal("a container started without its secret")
		}
	}
}
