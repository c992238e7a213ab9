package edged

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/utils/clock"

	"github.com/edgehive/edgehive/plugins/edged/cri"
	"github.com/edgehive/edgehive/sdk"
	"github.com/edgehive/edgehive/sdk/sdktest"
)

const (
	busybox = "edgehive.local/busybox:1.36"
	pause   = "registry.k8s.io/pause:3.10"
)

// shared keeps a fake runtime across module instances (a restart).
type shared struct{ *cri.FakeRuntime }

func (shared) Close() error { return nil }

func mkPod(name, uid string, hostNet bool, containers ...string) *v1.Pod {
	p := &v1.Pod{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", UID: types.UID(uid)},
		Spec:       v1.PodSpec{NodeName: sdktest.DefaultNodeName, HostNetwork: hostNet, RestartPolicy: v1.RestartPolicyAlways}}
	for _, c := range containers {
		p.Spec.Containers = append(p.Spec.Containers, v1.Container{Name: c, Image: busybox, Command: []string{"sleep", "300"}})
	}
	return p
}

func podMsg(t *testing.T, op string, pod *v1.Pod) *sdk.Message {
	m := sdk.NewMessage("").BuildRouter(metaManager, "resource", pod.Namespace+"/pod/"+pod.Name, op)
	if err := m.FillBody(pod); err != nil {
		t.Fatal(err)
	}
	return m
}

type patch struct {
	Metadata struct{ UID string }
	Status   v1.PodStatus
}

// waitStatus waits for a podpatch of pod name matching ok.
func waitStatus(t *testing.T, h *sdktest.Harness, name string, timeout time.Duration, ok func(v1.PodStatus) bool) v1.PodStatus {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var last v1.PodStatus
	_, found := h.WaitSent(ctx, func(s sdktest.Sent) bool {
		m := s.Message
		if s.Target != metaManager || m.Router.Operation != sdk.OpPatch || m.Router.Resource != "default/podpatch/"+name {
			return false
		}
		var p patch
		if err := m.DecodeContent(&p); err != nil {
			t.Errorf("bad patch %s: %v", m.Content, err)
			return false
		}
		last = p.Status
		return ok(p.Status)
	})
	if !found {
		t.Fatalf("no status of %s as wanted; last %+v", name, last)
	}
	return last
}

func start(t *testing.T, rt cri.Runtime, pods ...*v1.Pod) *sdktest.Harness {
	m := NewWithRuntime(rt, clock.RealClock{})
	// metamanager answers the stored pod list edged asks for at start.
	stored := func(req *sdk.Message) (*sdk.Message, error) {
		resp := sdk.NewMessage(req.Header.ID).BuildRouter(metaManager, sdk.GroupMeta, req.Router.Resource, sdk.OpResponse)
		items := []string{}
		for _, p := range pods {
			b, _ := json.Marshal(p)
			items = append(items, string(b))
		}
		return resp, resp.FillBody(items)
	}
	return sdktest.New(t, m, sdktest.Options{
		ConfigJSON: `{"sandbox_image":"` + pause + `","http_address":"127.0.0.1:0"}`,
		Sync:       map[string]sdktest.SyncHandler{metaManager: stored},
	})
}

func running(s v1.PodStatus) bool { return s.Phase == v1.PodRunning && s.PodIP != "" }

func TestPodLifecycle(t *testing.T) {
	rt := cri.NewFakeRuntime(busybox, pause)
	h := start(t, rt)
	pod := mkPod("web", "uid-web", false, "app", "side")
	t0 := time.Now()
	if err := h.Deliver(podMsg(t, sdk.OpInsert, pod)); err != nil {
		t.Fatal(err)
	}
	st := waitStatus(t, h, "web", 5*time.Second, running)
	t.Logf("arrival → Running reported: %v", time.Since(t0))
	if st.PodIP != "10.88.0.2" || len(st.ContainerStatuses) != 2 || !st.ContainerStatuses[0].Ready {
		t.Fatalf("status %+v", st)
	}
	if slices.Contains(rt.Calls(), "PullImage") {
		t.Fatal("pulled a present image")
	}

	// A crash is restarted.
	sbs, _ := rt.ListContainers(context.Background(), nil)
	for _, c := range sbs {
		if c.Metadata.Name == "side" {
			rt.SetContainerExited(c.Id, 1)
		}
	}
	waitStatus(t, h, "web", 5*time.Second, func(s v1.PodStatus) bool {
		return len(s.ContainerStatuses) == 2 && s.ContainerStatuses[1].RestartCount == 1 && s.ContainerStatuses[1].State.Running != nil
	})

	// An update is idempotent: nothing restarts.
	rt.ResetCalls()
	if err := h.Deliver(podMsg(t, sdk.OpUpdate, pod)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if slices.Contains(rt.Calls(), "CreateContainer") {
		t.Fatalf("update restarted containers: %v", rt.Calls())
	}

	// Delete stops and removes everything.
	if err := h.Deliver(podMsg(t, sdk.OpDelete, pod)); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		s, _ := rt.ListPodSandbox(context.Background(), nil)
		c, _ := rt.ListContainers(context.Background(), nil)
		if len(s) == 0 && len(c) == 0 {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("pod not removed from the runtime")
}

// badPodSpecs are pods edged must report Failed with a reason and never run:
// name → the pod's JSON and a word the status message must hold.
func badPodSpecs(prefix string) map[string][2]string {
	pod := func(name, spec string) string {
		return `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"` + prefix + name + `","namespace":"default","uid":"uid-` +
			prefix + name + `"},"spec":` + spec + `}`
	}
	c := func(extra string) string {
		return `{"name":"app","image":"` + busybox + `","command":["sleep","300"]` + extra + `}`
	}
	return map[string][2]string{
		"empty":        {pod("empty", `{"containers":[]}`), "no containers"},
		"dup":          {pod("dup", `{"containers":[`+c("")+`,`+c("")+`]}`), "duplicate container name"},
		"dup-init":     {pod("dup-init", `{"initContainers":[`+c("")+`],"containers":[`+c("")+`]}`), "duplicate container name"},
		"no-image":     {pod("no-image", `{"containers":[{"name":"app"}]}`), "needs a name and an image"},
		"bad-quantity": {pod("bad-quantity", `{"containers":[`+c(`,"resources":{"limits":{"memory":"lots"}}`)+`]}`), "quantities must match"},
		"negative":     {pod("negative", `{"containers":[`+c(`,"resources":{"requests":{"cpu":"-1"}}`)+`]}`), "negative"},
		"over-limit": {pod("over-limit", `{"containers":[`+c(`,"resources":{"requests":{"memory":"2Gi"},"limits":{"memory":"1Gi"}}`)+`]}`),
			"exceeds its limit"},
		"unknown-volume": {pod("unknown-volume", `{"volumes":[{"name":"v","fancyVolume":{"size":1}}],"containers":[`+c("")+`]}`),
			"no volume source"},
		"pvc-volume": {pod("pvc-volume", `{"volumes":[{"name":"v","persistentVolumeClaim":{"claimName":"x"}}],"containers":[`+c("")+`]}`),
			"not supported"},
		"no-such-mount": {pod("no-such-mount", `{"containers":[`+c(`,"volumeMounts":[{"name":"nope","mountPath":"/x"}]`)+`]}`),
			"names no volume"},
		"bad-name":   {pod("bad-name", `{"containers":[{"name":"App_1","image":"`+busybox+`"}]}`), "container name"},
		"bad-policy": {pod("bad-policy", `{"restartPolicy":"Sometimes","containers":[`+c("")+`]}`), "restartPolicy"},
	}
}

func rawPodMsg(op, name, raw string) *sdk.Message {
	m := sdk.NewMessage("").BuildRouter(metaManager, "resource", "default/pod/"+name, op)
	m.Content = json.RawMessage(raw)
	return m
}

func TestBadSpecs(t *testing.T) {
	rt := cri.NewFakeRuntime(busybox, pause)
	h := start(t, rt)
	specs := badPodSpecs("")
	for name, s := range specs {
		if err := h.Deliver(rawPodMsg(sdk.OpInsert, name, s[0])); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	for name, s := range specs {
		t.Run(name, func(t *testing.T) {
			st := waitStatus(t, h, name, 5*time.Second, func(s v1.PodStatus) bool { return s.Phase == v1.PodFailed })
			if st.Reason != ReasonInvalidPodSpec || !strings.Contains(st.Message, s[1]) {
				t.Fatalf("want reason %s and a message with %q: %+v", ReasonInvalidPodSpec, s[1], st)
			}
		})
	}
	if slices.Contains(rt.Calls(), "RunPodSandbox") {
		t.Fatal("a bad pod was run")
	}
	// A good pod still runs after them: nothing crashed.
	good := mkPod("good", "uid-good", true, "app")
	if err := h.Deliver(podMsg(t, sdk.OpInsert, good)); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, h, "good", 5*time.Second, running)
	// Content without even metadata is an error for the message, not a crash.
	bad := sdk.NewMessage("").BuildRouter(metaManager, "resource", "default/pod/x", sdk.OpInsert)
	bad.FillBody("not json")
	if err := h.Deliver(bad); err == nil || !strings.Contains(err.Error(), "default/pod/x") {
		t.Fatalf("err %v", err)
	}
	// A bad pod that is deleted goes away like any other.
	if err := h.Deliver(rawPodMsg(sdk.OpDelete, "bad-quantity", specs["bad-quantity"][0])); err != nil {
		t.Fatal(err)
	}
}

func TestAdoptionAfterRestart(t *testing.T) {
	fake := cri.NewFakeRuntime(busybox, pause)
	rt := shared{fake}
	pod := mkPod("keep", "uid-keep", true, "app")
	orphan := mkPod("orphan", "uid-orphan", true, "app")
	h1 := start(t, rt)
	for _, p := range []*v1.Pod{pod, orphan} {
		if err := h1.Deliver(podMsg(t, sdk.OpInsert, p)); err != nil {
			t.Fatal(err)
		}
		waitStatus(t, h1, p.Name, 5*time.Second, func(s v1.PodStatus) bool { return s.Phase == v1.PodRunning })
	}
	h1.Stop()

	// The new edged learns only "keep" from metamanager; "orphan" was deleted meanwhile.
	fake.ResetCalls()
	h2 := start(t, rt, pod)
	waitStatus(t, h2, "keep", 5*time.Second, func(s v1.PodStatus) bool { return s.Phase == v1.PodRunning })
	deadline := time.Now().Add(6 * time.Second)
	for time.Now().Before(deadline) {
		s, _ := fake.ListPodSandbox(context.Background(), nil)
		if len(s) == 1 && s[0].Metadata.Name == "keep" {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, c := range fake.Calls() {
		if c == "CreateContainer" || c == "RunPodSandbox" {
			t.Fatalf("edged restart recreated containers: %v", fake.Calls())
		}
	}
	if s, _ := fake.ListPodSandbox(context.Background(), nil); len(s) != 1 {
		t.Fatalf("sandboxes after restart: %v", s)
	}
	if q := h2.Sent(); !slices.ContainsFunc(q, func(s sdktest.Sent) bool {
		return s.Message.Router.Operation == sdk.OpQuery && s.Message.Router.Resource == "default/pod"
	}) {
		t.Fatal("no pod list query")
	}
}

func TestReadOnlyAPIShowsPods(t *testing.T) {
	rt := cri.NewFakeRuntime(busybox, pause)
	m := NewWithRuntime(rt, clock.RealClock{})
	h := sdktest.New(t, m, sdktest.Options{ConfigJSON: `{"sandbox_image":"` + pause + `","http_address":"127.0.0.1:0"}`})
	pod := mkPod("api", "uid-api", false, "app")
	if err := h.Deliver(podMsg(t, sdk.OpInsert, pod)); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, h, "api", 10*time.Second, running)
	if m.APIAddr() == "" {
		t.Fatal("the read-only API does not listen")
	}
	resp, err := http.Get("http://" + m.APIAddr() + "/pods")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var list v1.PodList
	if err := json.NewDecoder(resp.Body).Decode(&list); err != nil {
		t.Fatal(err)
	}
	if len(list.Items) != 1 || list.Items[0].Name != "api" || list.Items[0].Status.Phase != v1.PodRunning {
		t.Fatalf("/pods: %+v", list.Items)
	}
	if r, err := http.Get("http://" + m.APIAddr() + "/healthz"); err != nil || r.StatusCode != 200 {
		t.Fatalf("/healthz: %v %v", r, err)
	}
}

func TestEphemeralContainer(t *testing.T) {
	rt := cri.NewFakeRuntime(busybox, pause)
	h := start(t, rt)
	pod := mkPod("dbg", "uid-dbg", true, "app")
	if err := h.Deliver(podMsg(t, sdk.OpInsert, pod)); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, h, "dbg", 5*time.Second, running)
	// kubectl debug: the pod comes back with an ephemeral container.
	pod.Spec.EphemeralContainers = []v1.EphemeralContainer{{TargetContainerName: "app",
		EphemeralContainerCommon: v1.EphemeralContainerCommon{Name: "debugger", Image: busybox, Command: []string{"sh"}}}}
	if err := h.Deliver(podMsg(t, sdk.OpUpdate, pod)); err != nil {
		t.Fatal(err)
	}
	st := waitStatus(t, h, "dbg", 5*time.Second, func(s v1.PodStatus) bool {
		return len(s.EphemeralContainerStatuses) == 1 && s.EphemeralContainerStatuses[0].State.Running != nil
	})
	if st.Phase != v1.PodRunning || len(st.ContainerStatuses) != 1 || st.ContainerStatuses[0].RestartCount != 0 {
		t.Fatalf("the app container was disturbed: %+v", st)
	}
	id := strings.TrimPrefix(st.EphemeralContainerStatuses[0].ContainerID, "containerd://")
	cfg := rt.ContainerConfig(id)
	appID := strings.TrimPrefix(st.ContainerStatuses[0].ContainerID, "containerd://")
	if ns := cfg.GetLinux().GetSecurityContext().GetNamespaceOptions(); ns.GetPid() != runtimeapi.NamespaceMode_TARGET || ns.GetTargetId() != appID {
		t.Fatalf("ephemeral container namespaces %+v, want the target %s", ns, appID)
	}
	// It ends and is never restarted.
	if err := rt.SetContainerExited(id, 0); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, h, "dbg", 5*time.Second, func(s v1.PodStatus) bool {
		return len(s.EphemeralContainerStatuses) == 1 && s.EphemeralContainerStatuses[0].State.Terminated != nil
	})
	rt.ResetCalls()
	if err := h.Deliver(podMsg(t, sdk.OpUpdate, pod)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if slices.Contains(rt.Calls(), "CreateContainer") {
		t.Fatalf("an ended ephemeral container was restarted: %v", rt.Calls())
	}
}

// TestStatusesResentOnCloudConnected: statuses are sent on change only, so
// one lost while the cloud was unreachable would never be sent again. When
// edgehub announces the cloud connected, every pod's current status is sent
// once more; a disconnection sends nothing.
func TestStatusesResentOnCloudConnected(t *testing.T) {
	rt := cri.NewFakeRuntime(busybox, pause)
	h := start(t, rt)
	names := []string{"web", "db"}
	for _, name := range names {
		if err := h.Deliver(podMsg(t, sdk.OpInsert, mkPod(name, "uid-"+name, false, "app"))); err != nil {
			t.Fatal(err)
		}
	}
	last := map[string]v1.PodStatus{}
	for _, name := range names {
		last[name] = waitStatus(t, h, name, 5*time.Second, running)
	}
	patches := func(name string) []v1.PodStatus {
		var out []v1.PodStatus
		for _, s := range h.Sent() {
			m := s.Message
			if s.Target == metaManager && m.Router.Operation == sdk.OpPatch && m.Router.Resource == "default/podpatch/"+name {
				var p patch
				if err := m.DecodeContent(&p); err != nil {
					t.Fatal(err)
				}
				out = append(out, p.Status)
			}
		}
		return out
	}
	time.Sleep(300 * time.Millisecond) // let the first syncs settle
	before := map[string]int{}
	for _, name := range names {
		before[name] = len(patches(name))
	}
	event := func(content string) *sdk.Message {
		m := sdk.NewMessage("").BuildRouter("edgehub", sdk.GroupEdged, resourceConnection, "connect")
		if err := m.FillBody(content); err != nil {
			t.Fatal(err)
		}
		return m
	}

	if err := h.Deliver(event("cloud_disconnected")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	for _, name := range names {
		if n := len(patches(name)); n != before[name] {
			t.Fatalf("%s: %d status patches after a disconnection, want %d", name, n, before[name])
		}
	}

	if err := h.Deliver(event(cloudConnected)); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for _, name := range names {
		for len(patches(name)) == before[name] {
			if time.Now().After(deadline) {
				t.Fatalf("%s: status not resent after the cloud connected", name)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	time.Sleep(300 * time.Millisecond)
	for _, name := range names {
		got := patches(name)
		if len(got) != before[name]+1 {
			t.Fatalf("%s: %d status patches after the connection, want %d (one resend)", name, len(got), before[name]+1)
		}
		if st := got[len(got)-1]; st.Phase != v1.PodRunning || st.PodIP != last[name].PodIP {
			t.Fatalf("%s: resent status %+v, want the current one", name, st)
		}
	}
}
