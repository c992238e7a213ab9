//go:build containerd

// Integration test of the edged module against a real, private containerd.
// Run it with `make test-cri`, which starts containerd and sets CONTAINERD_ADDRESS.
package edged

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/utils/clock"

	"github.com/edgehive/edgehive/plugins/edged/container"
	"github.com/edgehive/edgehive/plugins/edged/cri"
	"github.com/edgehive/edgehive/sdk"
	"github.com/edgehive/edgehive/sdk/sdktest"
)

func itRuntime(t *testing.T) *cri.Client {
	t.Helper()
	addr := os.Getenv("CONTAINERD_ADDRESS")
	if addr == "" {
		t.Fatal("CONTAINERD_ADDRESS is not set: run this test with `make test-cri`")
	}
	if !strings.Contains(addr, "://") {
		addr = "unix://" + addr
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := cri.New(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestContainerdPods(t *testing.T) {
	check := itRuntime(t)
	defer check.Close()
	h := sdktest.New(t, NewWithRuntime(itRuntime(t), clock.RealClock{}),
		sdktest.Options{ConfigJSON: `{"sandbox_image":"edgehive.local/pause:3.10"}`})
	h.OnSync(metaManager, func(req *sdk.Message) (*sdk.Message, error) {
		resp := sdk.NewMessage(req.Header.ID).BuildRouter(metaManager, sdk.GroupMeta, req.Router.Resource, sdk.OpResponse)
		return resp, resp.FillBody([]string{})
	})
	suffix := time.Now().Format("150405")
	hostPod := mkPod("it-host-"+suffix, "it-host-"+suffix, true, "app")
	bridgePod := mkPod("it-bridge-"+suffix, "it-bridge-"+suffix, false, "app")
	crash := mkPod("it-crash-"+suffix, "it-crash-"+suffix, true, "crash")
	crash.Spec.Containers[0].Command = []string{"sh", "-c", "sleep 1; exit 1"}
	pods := []*v1.Pod{hostPod, bridgePod, crash}
	defer func() {
		for _, p := range pods {
			h.Deliver(podMsg(t, sdk.OpDelete, p))
		}
	}()

	for _, p := range []*v1.Pod{hostPod, bridgePod} {
		t0 := time.Now()
		if err := h.Deliver(podMsg(t, sdk.OpInsert, p)); err != nil {
			t.Fatal(err)
		}
		st := waitStatus(t, h, p.Name, 60*time.Second, running)
		t.Logf("%s (hostNetwork=%v): arrival → Running reported in %v, podIP %s", p.Name, p.Spec.HostNetwork, time.Since(t0), st.PodIP)
		if !p.Spec.HostNetwork && !strings.HasPrefix(st.PodIP, "10.88.") {
			t.Fatalf("bridge pod IP %q", st.PodIP)
		}
	}

	if err := h.Deliver(podMsg(t, sdk.OpInsert, crash)); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	st := waitStatus(t, h, crash.Name, 60*time.Second, func(s v1.PodStatus) bool {
		return len(s.ContainerStatuses) == 1 && s.ContainerStatuses[0].RestartCount >= 1
	})
	t.Logf("crashing container restarted after %v: %+v", time.Since(t0), st.ContainerStatuses[0].LastTerminationState.Terminated)

	// Delete removes sandbox and containers.
	for _, p := range []*v1.Pod{hostPod, bridgePod, crash} {
		t0 := time.Now()
		if err := h.Deliver(podMsg(t, sdk.OpDelete, p)); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(60 * time.Second)
		for {
			ps, err := container.GetPodStatus(context.Background(), check, p.UID, p.Name, p.Namespace)
			if err != nil {
				t.Fatal(err)
			}
			if len(ps.Sandboxes) == 0 && len(ps.Containers) == 0 {
				t.Logf("%s removed in %v", p.Name, time.Since(t0))
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s not removed: %+v", p.Name, ps)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}

// TestContainerdProbes: readiness flips both ways and a failing liveness exec
// probe restarts the container.
func TestContainerdProbes(t *testing.T) {
	check := itRuntime(t)
	defer check.Close()
	h := sdktest.New(t, NewWithRuntime(itRuntime(t), clock.RealClock{}),
		sdktest.Options{ConfigJSON: `{"sandbox_image":"edgehive.local/pause:3.10"}`})
	h.OnSync(metaManager, func(req *sdk.Message) (*sdk.Message, error) {
		resp := sdk.NewMessage(req.Header.ID).BuildRouter(metaManager, sdk.GroupMeta, req.Router.Resource, sdk.OpResponse)
		return resp, resp.FillBody([]string{})
	})
	suffix := time.Now().Format("150405")
	pod := mkPod("it-probe-"+suffix, "it-probe-"+suffix, true, "app")
	grace := int64(1)
	pod.Spec.TerminationGracePeriodSeconds = &grace
	c := &pod.Spec.Containers[0]
	c.Command = []string{"sh", "-c", "touch /tmp/ready; exec sleep 300"}
	c.ReadinessProbe = &v1.Probe{ProbeHandler: v1.ProbeHandler{Exec: &v1.ExecAction{Command: []string{"cat", "/tmp/ready"}}}, PeriodSeconds: 1}
	c.LivenessProbe = &v1.Probe{ProbeHandler: v1.ProbeHandler{Exec: &v1.ExecAction{Command: []string{"sh", "-c", "test ! -f /tmp/dead"}}},
		PeriodSeconds: 1, FailureThreshold: 2}
	defer h.Deliver(podMsg(t, sdk.OpDelete, pod))
	if err := h.Deliver(podMsg(t, sdk.OpInsert, pod)); err != nil {
		t.Fatal(err)
	}
	isReady := func(want bool) func(v1.PodStatus) bool {
		return func(s v1.PodStatus) bool {
			r, cr := podReady(s)
			return r == want && cr == want && len(s.ContainerStatuses) == 1 && s.ContainerStatuses[0].State.Running != nil
		}
	}
	st := waitStatus(t, h, pod.Name, 60*time.Second, isReady(true))
	id := strings.TrimPrefix(st.ContainerStatuses[0].ContainerID, "containerd://")
	exec := func(cmd ...string) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if r, err := check.ExecSync(ctx, id, cmd, 5*time.Second); err != nil || r.ExitCode != 0 {
			t.Fatalf("exec %v: %v %+v", cmd, err, r)
		}
	}
	t0 := time.Now()
	exec("rm", "/tmp/ready")
	waitStatus(t, h, pod.Name, 10*time.Second, isReady(false))
	t.Logf("readiness → not ready in %v", time.Since(t0))
	exec("touch", "/tmp/ready")
	waitStatus(t, h, pod.Name, 10*time.Second, isReady(true))

	t0 = time.Now()
	exec("touch", "/tmp/dead")
	st = waitStatus(t, h, pod.Name, 30*time.Second, func(s v1.PodStatus) bool {
		return len(s.ContainerStatuses) == 1 && s.ContainerStatuses[0].RestartCount >= 1 && s.ContainerStatuses[0].State.Running != nil
	})
	t.Logf("liveness failure → restarted in %v; last state %+v", time.Since(t0), st.ContainerStatuses[0].LastTerminationState.Terminated)
	// The new container has no /tmp/dead and gets ready again.
	waitStatus(t, h, pod.Name, 10*time.Second, isReady(true))
}

// TestContainerdVolumes: a configMap volume is mounted, its file is read
// through ExecSync, and a changed configMap shows in the running container.
func TestContainerdVolumes(t *testing.T) {
	check := itRuntime(t)
	defer check.Close()
	var mu sync.Mutex
	content := "hello v1"
	m := NewWithRuntime(itRuntime(t), clock.RealClock{})
	m.volumeRefresh = 0
	dataDir := t.TempDir()
	h := sdktest.New(t, m, sdktest.Options{DataDir: dataDir, ConfigJSON: `{"sandbox_image":"edgehive.local/pause:3.10"}`})
	h.OnSync(metaManager, func(req *sdk.Message) (*sdk.Message, error) {
		resp := sdk.NewMessage(req.Header.ID).BuildRouter(metaManager, sdk.GroupMeta, req.Router.Resource, sdk.OpResponse)
		if req.Router.Resource == "default/configmap/it-cfg" {
			mu.Lock()
			defer mu.Unlock()
			return resp, resp.FillBody(&v1.ConfigMap{Data: map[string]string{"app.conf": content}})
		}
		return resp, resp.FillBody([]string{})
	})
	suffix := time.Now().Format("150405")
	pod := mkPod("it-vol-"+suffix, "it-vol-"+suffix, true, "app")
	grace := int64(1)
	pod.Spec.TerminationGracePeriodSeconds = &grace
	pod.Spec.Volumes = []v1.Volume{
		{Name: "cfg", VolumeSource: v1.VolumeSource{ConfigMap: &v1.ConfigMapVolumeSource{LocalObjectReference: v1.LocalObjectReference{Name: "it-cfg"}}}},
		{Name: "scratch", VolumeSource: v1.VolumeSource{EmptyDir: &v1.EmptyDirVolumeSource{}}},
	}
	pod.Spec.Containers[0].VolumeMounts = []v1.VolumeMount{
		{Name: "cfg", MountPath: "/etc/app", ReadOnly: true},
		{Name: "scratch", MountPath: "/scratch"},
	}
	pod.Spec.Containers[0].Command = []string{"sh", "-c", "echo written > /scratch/out; exec sleep 300"}
	defer h.Deliver(podMsg(t, sdk.OpDelete, pod))
	if err := h.Deliver(podMsg(t, sdk.OpInsert, pod)); err != nil {
		t.Fatal(err)
	}
	st := waitStatus(t, h, pod.Name, 60*time.Second, running)
	id := strings.TrimPrefix(st.ContainerStatuses[0].ContainerID, "containerd://")
	cat := func(p string) string {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		r, err := check.ExecSync(ctx, id, []string{"cat", p}, 5*time.Second)
		if err != nil {
			t.Fatalf("exec cat %s: %v", p, err)
		}
		return string(r.Stdout)
	}
	if got := cat("/etc/app/app.conf"); got != "hello v1" {
		t.Fatalf("app.conf = %q", got)
	}
	mu.Lock()
	content = "hello v2"
	mu.Unlock()
	t0 := time.Now()
	if err := h.Deliver(podMsg(t, sdk.OpUpdate, pod)); err != nil {
		t.Fatal(err)
	}
	for cat("/etc/app/app.conf") != "hello v2" {
		if time.Since(t0) > 20*time.Second {
			t.Fatal("the changed configMap did not show in the container")
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("configMap change seen in the container after %v", time.Since(t0))
	out, err := os.ReadFile(filepath.Join(dataDir, "pods", string(pod.UID), "volumes", "kubernetes.io~empty-dir", "scratch", "out"))
	if err != nil || string(out) != "written\n" {
		t.Fatalf("emptyDir on the host: %q %v", out, err)
	}
	if err := h.Deliver(podMsg(t, sdk.OpDelete, pod)); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		if _, err := os.Stat(filepath.Join(dataDir, "pods", string(pod.UID))); os.IsNotExist(err) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("pod volume dir not removed")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestContainerdBadSpecs: bad pod specs get a Failed status with a reason on
// the real runtime, nothing of theirs runs, and a good pod still runs.
func TestContainerdBadSpecs(t *testing.T) {
	check := itRuntime(t)
	defer check.Close()
	h := sdktest.New(t, NewWithRuntime(itRuntime(t), clock.RealClock{}),
		sdktest.Options{ConfigJSON: `{"sandbox_image":"edgehive.local/pause:3.10","http_address":"127.0.0.1:0"}`})
	h.OnSync(metaManager, func(req *sdk.Message) (*sdk.Message, error) {
		resp := sdk.NewMessage(req.Header.ID).BuildRouter(metaManager, sdk.GroupMeta, req.Router.Resource, sdk.OpResponse)
		return resp, resp.FillBody([]string{})
	})
	prefix := "it-bad-" + time.Now().Format("150405") + "-"
	specs := badPodSpecs(prefix)
	for name, s := range specs {
		if err := h.Deliver(rawPodMsg(sdk.OpInsert, prefix+name, s[0])); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	for name, s := range specs {
		st := waitStatus(t, h, prefix+name, 10*time.Second, func(s v1.PodStatus) bool { return s.Phase == v1.PodFailed })
		if st.Reason != ReasonInvalidPodSpec || !strings.Contains(st.Message, s[1]) {
			t.Errorf("%s: want reason %s and a message with %q: %+v", name, ReasonInvalidPodSpec, s[1], st)
		}
	}
	good := mkPod(prefix+"good", prefix+"good", true, "app")
	grace := int64(1)
	good.Spec.TerminationGracePeriodSeconds = &grace
	defer deleteAndWait(t, h, check, good)
	if err := h.Deliver(podMsg(t, sdk.OpInsert, good)); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, h, good.Name, 60*time.Second, running)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sbs, err := check.ListPodSandbox(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, sb := range sbs {
		if n := sb.GetMetadata().GetName(); strings.HasPrefix(n, prefix) && n != good.Name {
			t.Errorf("a bad pod got a sandbox: %s", n)
		}
	}
}

// deleteAndWait deletes pod and waits until its sandboxes and containers are gone.
func deleteAndWait(t *testing.T, h *sdktest.Harness, check *cri.Client, pod *v1.Pod) {
	t.Helper()
	if err := h.Deliver(podMsg(t, sdk.OpDelete, pod)); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		ps, err := container.GetPodStatus(context.Background(), check, pod.UID, pod.Name, pod.Namespace)
		if err == nil && len(ps.Sandboxes) == 0 && len(ps.Containers) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not removed: %v %+v", pod.Name, err, ps)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
