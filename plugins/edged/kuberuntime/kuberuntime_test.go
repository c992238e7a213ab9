package kuberuntime

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/edgehive/edgehive/plugins/edged/container"
	"github.com/edgehive/edgehive/plugins/edged/cri"
)

const (
	busybox = "edgehive.local/busybox:1.36"
	pause   = "edgehive.local/pause:3.10"
)

func testPod(restart v1.RestartPolicy, names ...string) *v1.Pod {
	p := &v1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default", UID: "uid-1"},
		Spec: v1.PodSpec{RestartPolicy: restart, NodeName: "node-a"}}
	for _, n := range names {
		p.Spec.Containers = append(p.Spec.Containers, v1.Container{Name: n, Image: busybox, Command: []string{"sleep", "300"}})
	}
	return p
}

func readySandbox(attempt uint32, ip string, hostNet bool) *runtimeapi.PodSandboxStatus {
	mode := runtimeapi.NamespaceMode_POD
	if hostNet {
		mode = runtimeapi.NamespaceMode_NODE
	}
	return &runtimeapi.PodSandboxStatus{Id: "sb", State: runtimeapi.PodSandboxState_SANDBOX_READY,
		Metadata: &runtimeapi.PodSandboxMetadata{Attempt: attempt},
		Network:  &runtimeapi.PodSandboxNetworkStatus{Ip: ip},
		Linux:    &runtimeapi.LinuxPodSandboxStatus{Namespaces: &runtimeapi.Namespace{Options: &runtimeapi.NamespaceOption{Network: mode}}}}
}

func cstatus(pod *v1.Pod, name string, state runtimeapi.ContainerState, exit int32) *container.ContainerStatus {
	var hash string
	if c := container.FindSpec(pod, name); c != nil {
		hash = HashContainer(c)
	}
	return &container.ContainerStatus{ContainerStatus: &runtimeapi.ContainerStatus{Id: "id-" + name, State: state, ExitCode: exit}, Name: name, Hash: hash}
}

func TestComputePodActions(t *testing.T) {
	running, exited := runtimeapi.ContainerState_CONTAINER_RUNNING, runtimeapi.ContainerState_CONTAINER_EXITED
	always := testPod(v1.RestartPolicyAlways, "a", "b")
	never := testPod(v1.RestartPolicyNever, "a", "b")
	onFailure := testPod(v1.RestartPolicyOnFailure, "a", "b")
	changed := testPod(v1.RestartPolicyAlways, "a", "b")
	withInit := testPod(v1.RestartPolicyAlways, "a")
	withInit.Spec.InitContainers = []v1.Container{{Name: "i1", Image: busybox}, {Name: "i2", Image: busybox}}
	neverInit := withInit.DeepCopy()
	neverInit.Spec.RestartPolicy = v1.RestartPolicyNever
	hostNet := testPod(v1.RestartPolicyAlways, "a")
	hostNet.Spec.HostNetwork = true

	ps := func(sb *runtimeapi.PodSandboxStatus, cs ...*container.ContainerStatus) *container.PodStatus {
		s := &container.PodStatus{Containers: cs}
		if sb != nil {
			s.Sandboxes = []*runtimeapi.PodSandboxStatus{sb}
		}
		return s
	}
	notReady := readySandbox(2, "", false)
	notReady.State = runtimeapi.PodSandboxState_SANDBOX_NOTREADY
	changedStatus := cstatus(changed, "a", running, 0)
	changedStatus.Hash = "old"

	tests := []struct {
		name                     string
		pod                      *v1.Pod
		status                   *container.PodStatus
		kill, create, initFailed bool
		attempt                  uint32
		next                     string
		start                    []int
		killed                   []string
	}{
		{"new pod", always, nil, true, true, false, 0, "", []int{0, 1}, nil},
		{"all running", always, ps(readySandbox(0, "10.0.0.2", false), cstatus(always, "a", running, 0), cstatus(always, "b", running, 0)), false, false, false, 0, "", nil, nil},
		{"one exited, Always", always, ps(readySandbox(0, "10.0.0.2", false), cstatus(always, "a", running, 0), cstatus(always, "b", exited, 0)), false, false, false, 0, "", []int{1}, nil},
		{"one failed, OnFailure", onFailure, ps(readySandbox(0, "10.0.0.2", false), cstatus(onFailure, "a", running, 0), cstatus(onFailure, "b", exited, 2)), false, false, false, 0, "", []int{1}, nil},
		{"one succeeded, OnFailure", onFailure, ps(readySandbox(0, "10.0.0.2", false), cstatus(onFailure, "a", running, 0), cstatus(onFailure, "b", exited, 0)), false, false, false, 0, "", nil, nil},
		{"all ended, Never", never, ps(readySandbox(0, "10.0.0.2", false), cstatus(never, "a", exited, 1), cstatus(never, "b", exited, 0)), true, false, false, 0, "", nil, nil},
		{"sandbox died, Never, ran", never, ps(notReady, cstatus(never, "a", exited, 1)), true, false, false, 3, "", nil, nil},
		{"sandbox died, Always", always, ps(notReady, cstatus(always, "a", exited, 137)), true, true, false, 3, "", []int{0, 1}, nil},
		{"no pod IP", always, ps(readySandbox(1, "", false)), true, true, false, 2, "", []int{0, 1}, nil},
		{"host network, no IP is fine", hostNet, ps(readySandbox(0, "", true), cstatus(hostNet, "a", running, 0)), false, false, false, 0, "", nil, nil},
		{"network mode changed", hostNet, ps(readySandbox(0, "10.0.0.2", false), cstatus(hostNet, "a", running, 0)), true, true, false, 1, "", []int{0}, nil},
		{"spec changed", changed, ps(readySandbox(0, "10.0.0.2", false), changedStatus, cstatus(changed, "b", running, 0)), false, false, false, 0, "", []int{0}, []string{"id-a"}},
		{"container not in spec", testPod(v1.RestartPolicyAlways, "a"), ps(readySandbox(0, "10.0.0.2", false), cstatus(always, "a", running, 0), cstatus(always, "b", running, 0)), false, false, false, 0, "", nil, []string{"id-b"}},
		{"init: new pod", withInit, nil, true, true, false, 0, "i1", nil, nil},
		{"init: first done", withInit, ps(readySandbox(0, "10.0.0.2", false), cstatus(withInit, "i1", exited, 0)), false, false, false, 0, "i2", nil, nil},
		{"init: running, wait", withInit, ps(readySandbox(0, "10.0.0.2", false), cstatus(withInit, "i1", running, 0)), false, false, false, 0, "", nil, nil},
		{"init: failed, restart", withInit, ps(readySandbox(0, "10.0.0.2", false), cstatus(withInit, "i1", exited, 1)), false, false, false, 0, "i1", nil, nil},
		{"init: failed, Never", neverInit, ps(readySandbox(0, "10.0.0.2", false), cstatus(neverInit, "i1", exited, 1)), true, false, true, 0, "", nil, nil},
		{"init: all done, apps start", withInit, ps(readySandbox(0, "10.0.0.2", false), cstatus(withInit, "i2", exited, 0), cstatus(withInit, "i1", exited, 0)), false, false, false, 0, "", []int{0}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := computePodActions(tt.pod, tt.status)
			next := ""
			if a.NextInitContainer != nil {
				next = a.NextInitContainer.Name
			}
			var killed []string
			for id := range a.ContainersToKill {
				killed = append(killed, id)
			}
			slices.Sort(killed)
			if a.KillPod != tt.kill || a.CreateSandbox != tt.create || a.InitFailed != tt.initFailed || (tt.create && a.Attempt != tt.attempt) ||
				next != tt.next || !slices.Equal(a.ContainersToStart, tt.start) || !slices.Equal(killed, tt.killed) {
				t.Fatalf("actions = %+v (next %q, killed %v)", a, next, killed)
			}
		})
	}
}

func TestExpand(t *testing.T) {
	vars := map[string]string{"A": "x", "B": "y"}
	for in, want := range map[string]string{
		"plain": "plain", "$(A)": "x", "$(A)-$(B)": "x-y", "$$(A)": "$(A)", "$(C)": "$(C)", "$(A": "$(A", "a$b": "a$b", "$": "$",
	} {
		if got := expand(in, vars); got != want {
			t.Errorf("expand(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestPullPolicy(t *testing.T) {
	for img, want := range map[string]v1.PullPolicy{
		"busybox": v1.PullAlways, "busybox:latest": v1.PullAlways, "busybox:1.36": v1.PullIfNotPresent,
		"host:5000/busybox": v1.PullAlways, "host:5000/b:1": v1.PullIfNotPresent, "b@sha256:00": v1.PullIfNotPresent,
	} {
		if got := pullPolicy(img, ""); got != want {
			t.Errorf("%s: %s, want %s", img, got, want)
		}
	}
}

func newManager(t *testing.T, rt *cri.FakeRuntime, clk *clocktesting.FakeClock) *Manager {
	resolv := filepath.Join(t.TempDir(), "resolv.conf")
	os.WriteFile(resolv, []byte("nameserver 192.0.2.53\nsearch lan\n"), 0o644)
	rt.Now = clk.Now
	return New(rt, clk, nil, Config{SandboxImage: pause, PodLogsRoot: t.TempDir(), ResolvConf: resolv, ClusterDNS: []string{"10.96.0.10"}})
}

func syncOnce(t *testing.T, m *Manager, pod *v1.Pod) (SyncResult, *container.PodStatus, error) {
	t.Helper()
	ctx := context.Background()
	ps, err := m.GetPodStatus(ctx, pod.UID, pod.Name, pod.Namespace)
	if err != nil {
		t.Fatal(err)
	}
	res, err := m.SyncPod(ctx, pod, ps)
	after, err2 := m.GetPodStatus(ctx, pod.UID, pod.Name, pod.Namespace)
	if err2 != nil {
		t.Fatal(err2)
	}
	return res, after, err
}

func TestSyncPodStartsAndConfigures(t *testing.T) {
	rt := cri.NewFakeRuntime(busybox, pause)
	clk := clocktesting.NewFakeClock(time.Unix(10000, 0))
	m := newManager(t, rt, clk)
	pod := testPod(v1.RestartPolicyAlways, "app")
	pod.Spec.Containers[0].Env = []v1.EnvVar{
		{Name: "POD", ValueFrom: &v1.EnvVarSource{FieldRef: &v1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
		{Name: "IP", ValueFrom: &v1.EnvVarSource{FieldRef: &v1.ObjectFieldSelector{FieldPath: "status.podIP"}}},
		{Name: "NODE", ValueFrom: &v1.EnvVarSource{FieldRef: &v1.ObjectFieldSelector{FieldPath: "spec.nodeName"}}},
		{Name: "GREETING", Value: "hi $(POD) on $(NODE)"},
	}
	pod.Spec.Containers[0].Args = []string{"$(IP)"}
	pod.Spec.Containers[0].WorkingDir = "/tmp"
	pod.Spec.Containers[0].Ports = []v1.ContainerPort{{ContainerPort: 80, HostPort: 8080}}
	res, ps, err := syncOnce(t, m, pod)
	if err != nil || !slices.Equal(res.Started, []string{"app"}) {
		t.Fatalf("res %+v err %v", res, err)
	}
	if len(ps.Sandboxes) != 1 || ps.PodIP() != "10.88.0.2" || !ps.FindContainer("app").Running() {
		t.Fatalf("status %+v", ps)
	}
	calls := strings.Join(rt.Calls(), " ")
	if strings.Contains(calls, "PullImage") {
		t.Fatalf("a present image was pulled: %s", calls)
	}
	// Inspect what the runtime was given.
	sb, _ := rt.PodSandboxStatus(context.Background(), ps.Sandboxes[0].Id, false)
	if sb.Status.Labels[container.LabelPodUID] != "uid-1" || sb.Status.Labels[container.LabelPodName] != "web" {
		t.Fatalf("sandbox labels %v", sb.Status.Labels)
	}
	cs := ps.FindContainer("app")
	env := map[string]string{}
	ctrs, _ := rt.ListContainers(context.Background(), nil)
	_ = ctrs
	st, _ := rt.ContainerStatus(context.Background(), cs.Id, true)
	_ = st
	cfg, _, err := m.containerConfig(context.Background(), pod, &pod.Spec.Containers[0], 0, "10.88.0.2", busybox)
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range cfg.Envs {
		env[kv.Key] = string(kv.Value)
	}
	if env["GREETING"] != "hi web on node-a" || env["IP"] != "10.88.0.2" || cfg.Args[0] != "10.88.0.2" || cfg.WorkingDir != "/tmp" ||
		cfg.LogPath != "app/0.log" || cfg.Labels[container.LabelContainerName] != "app" {
		t.Fatalf("container config %+v env %v", cfg, env)
	}
	sbc, _ := m.sandboxConfig(pod, 0)
	if sbc.Hostname != "web" || len(sbc.PortMappings) != 1 || sbc.PortMappings[0].HostPort != 8080 ||
		sbc.DnsConfig.Servers[0] != "10.96.0.10" || sbc.DnsConfig.Searches[0] != "default.svc.cluster.local" {
		t.Fatalf("sandbox config %+v", sbc)
	}
	pod.Spec.HostNetwork = true
	sbc, _ = m.sandboxConfig(pod, 0)
	if sbc.Hostname != "" || sbc.DnsConfig.Servers[0] != "192.0.2.53" {
		t.Fatalf("host network sandbox config %+v", sbc)
	}

	// A second sync does nothing.
	rt.ResetCalls()
	res, _, err = syncOnce(t, m, pod.DeepCopy())
	_ = res
	if err != nil {
		t.Fatal(err)
	}
}

func TestSyncPodNoopWhenRunning(t *testing.T) {
	rt := cri.NewFakeRuntime(busybox, pause)
	clk := clocktesting.NewFakeClock(time.Unix(10000, 0))
	m := newManager(t, rt, clk)
	pod := testPod(v1.RestartPolicyAlways, "a", "b")
	if _, _, err := syncOnce(t, m, pod); err != nil {
		t.Fatal(err)
	}
	rt.ResetCalls()
	res, _, err := syncOnce(t, m, pod)
	if err != nil || len(res.Started) != 0 {
		t.Fatal(res, err)
	}
	for _, c := range rt.Calls() {
		if c != "ListPodSandbox" && c != "ListContainers" && c != "PodSandboxStatus" && c != "ContainerStatus" {
			t.Fatalf("a synced pod made call %s", c)
		}
	}
}

func TestRestartBackOff(t *testing.T) {
	rt := cri.NewFakeRuntime(busybox, pause)
	clk := clocktesting.NewFakeClock(time.Unix(10000, 0))
	m := newManager(t, rt, clk)
	pod := testPod(v1.RestartPolicyAlways, "crash")
	_, ps, err := syncOnce(t, m, pod)
	if err != nil {
		t.Fatal(err)
	}
	want := 1
	for round := range 3 {
		rt.SetContainerExited(ps.FindContainer("crash").Id, 1)
		// First restart at once (the back-off starts), later ones wait.
		if round > 0 {
			res, _, err := syncOnce(t, m, pod)
			if err == nil || !strings.Contains(err.Error(), ReasonCrashLoopBackOff) || res.BackOff <= 0 {
				t.Fatalf("round %d: restarted inside the back-off: %+v %v", round, res, err)
			}
			if r := m.Reasons(pod.UID)["crash"]; r.Reason != ReasonCrashLoopBackOff {
				t.Fatalf("reason %+v", r)
			}
			clk.Step(BackOffInitial << (round - 1))
		}
		res, after, err := syncOnce(t, m, pod)
		if err != nil || len(res.Started) != 1 {
			t.Fatalf("round %d: %+v %v", round, res, err)
		}
		ps = after
		if got := ps.FindContainer("crash").RestartCount; got != want {
			t.Fatalf("restartCount %d, want %d", got, want)
		}
		if n := len(ps.ContainersNamed("crash")); n != 2 {
			t.Fatalf("%d instances kept, want the new one and the last dead one", n)
		}
		if _, ok := m.Reasons(pod.UID)["crash"]; ok {
			t.Fatal("reason kept after a start")
		}
		want++
	}
}

func TestPullPolicyHonoured(t *testing.T) {
	rt := cri.NewFakeRuntime(pause)
	clk := clocktesting.NewFakeClock(time.Unix(10000, 0))
	m := newManager(t, rt, clk)
	pod := testPod(v1.RestartPolicyAlways, "a")
	pod.Spec.Containers[0].ImagePullPolicy = v1.PullNever
	_, _, err := syncOnce(t, m, pod)
	if err == nil || m.Reasons(pod.UID)["a"].Reason != ReasonErrImageNeverPull {
		t.Fatalf("err %v reasons %v", err, m.Reasons(pod.UID))
	}
	// IfNotPresent with a missing image pulls it.
	pod.Spec.Containers[0].ImagePullPolicy = v1.PullIfNotPresent
	if _, ps, err := syncOnce(t, m, pod); err != nil || !ps.FindContainer("a").Running() {
		t.Fatal(err)
	}
	if !slices.Contains(rt.Calls(), "PullImage") {
		t.Fatal("no pull")
	}
	// A failing pull backs off.
	pod2 := testPod(v1.RestartPolicyAlways, "b")
	pod2.UID = "uid-2"
	pod2.Spec.Containers[0].Image = "edgehive.local/none:1"
	rt.InjectError("PullImage", context.DeadlineExceeded)
	if _, _, err := syncOnce(t, m, pod2); err == nil || m.Reasons("uid-2")["b"].Reason != ReasonErrImagePull {
		t.Fatalf("err %v", err)
	}
	if _, _, err := syncOnce(t, m, pod2); err == nil || m.Reasons("uid-2")["b"].Reason != ReasonImagePullBackOff {
		t.Fatalf("err %v %v", err, m.Reasons("uid-2"))
	}
}

func TestKillPod(t *testing.T) {
	rt := cri.NewFakeRuntime(busybox, pause)
	clk := clocktesting.NewFakeClock(time.Unix(10000, 0))
	m := newManager(t, rt, clk)
	pod := testPod(v1.RestartPolicyAlways, "a", "b")
	grace := int64(7)
	pod.Spec.TerminationGracePeriodSeconds = &grace
	_, ps, err := syncOnce(t, m, pod)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.KillPod(context.Background(), pod, ps, GracePeriod(pod), true); err != nil {
		t.Fatal(err)
	}
	sbs, _ := rt.ListPodSandbox(context.Background(), nil)
	cs, _ := rt.ListContainers(context.Background(), nil)
	if len(sbs) != 0 || len(cs) != 0 {
		t.Fatalf("left %v %v", sbs, cs)
	}
	if n := strings.Count(strings.Join(rt.Calls(), " "), "StopContainer"); n != 2 {
		t.Fatalf("%d StopContainer calls", n)
	}
}

func TestComputePodActionsUnhealthy(t *testing.T) {
	for _, policy := range []v1.RestartPolicy{v1.RestartPolicyAlways, v1.RestartPolicyNever} {
		pod := testPod(policy, "app", "side")
		app := cstatus(pod, "app", runtimeapi.ContainerState_CONTAINER_RUNNING, 0)
		side := cstatus(pod, "side", runtimeapi.ContainerState_CONTAINER_RUNNING, 0)
		ps := &container.PodStatus{ID: pod.UID, Sandboxes: []*runtimeapi.PodSandboxStatus{readySandbox(0, "10.0.0.2", false)},
			Containers: []*container.ContainerStatus{app, side}}
		a := computePodActionsProbed(pod, ps, fakeProbes{unhealthy: map[string]bool{app.Id: true}})
		if a.KillPod || a.ContainersToKill[app.Id] == "" || !a.KeepKilled[app.Id] || len(a.ContainersToKill) != 1 {
			t.Fatalf("%s: actions %+v", policy, a)
		}
		wantStart := 1
		if policy == v1.RestartPolicyNever {
			wantStart = 0
		}
		if len(a.ContainersToStart) != wantStart {
			t.Fatalf("%s: start %v", policy, a.ContainersToStart)
		}
	}
}

// fakeProbes answers for the prober: ids in unhealthy failed liveness, ids
// in notStarted have not passed their startup probe.
type fakeProbes struct{ unhealthy, notStarted map[string]bool }

var _ Probes = fakeProbes{}

func (f fakeProbes) Unhealthy(_ *v1.Pod, _, id string) (string, bool) {
	return "failed liveness probe", f.unhealthy[id]
}

func (f fakeProbes) Started(_ *v1.Pod, _, id string) bool { return !f.notStarted[id] }

func TestComputePodActionsSidecars(t *testing.T) {
	running, exited := runtimeapi.ContainerState_CONTAINER_RUNNING, runtimeapi.ContainerState_CONTAINER_EXITED
	always := v1.ContainerRestartPolicyAlways
	pod := func(policy v1.RestartPolicy) *v1.Pod {
		p := testPod(policy, "app")
		p.Spec.InitContainers = []v1.Container{
			{Name: "side", Image: busybox, RestartPolicy: &always, StartupProbe: &v1.Probe{}},
			{Name: "init", Image: busybox},
		}
		return p
	}
	sb := readySandbox(0, "10.0.0.2", false)
	ps := func(p *v1.Pod, states ...any) *container.PodStatus {
		s := &container.PodStatus{Sandboxes: []*runtimeapi.PodSandboxStatus{sb}}
		for i := 0; i < len(states); i += 3 {
			s.Containers = append(s.Containers, cstatus(p, states[i].(string), states[i+1].(runtimeapi.ContainerState), int32(states[i+2].(int))))
		}
		return s
	}
	a, n := pod(v1.RestartPolicyAlways), pod(v1.RestartPolicyNever)
	tests := []struct {
		name     string
		pod      *v1.Pod
		status   *container.PodStatus
		probes   fakeProbes
		next     string
		start    []int
		sidecars []int
		kill     bool
		killed   []string
	}{
		{"new pod starts the sidecar first", a, nil, fakeProbes{}, "side", nil, nil, true, nil},
		{"sidecar not started: wait", a, ps(a, "side", running, 0), fakeProbes{notStarted: map[string]bool{"id-side": true}}, "", nil, nil, false, nil},
		{"sidecar started: next init", a, ps(a, "side", running, 0), fakeProbes{}, "init", nil, nil, false, nil},
		{"sidecar exited before init: restart it, even under Never", n, ps(n, "side", exited, 0), fakeProbes{}, "side", nil, nil, false, nil},
		{"initialized: apps start beside the sidecar", a, ps(a, "side", running, 0, "init", exited, 0), fakeProbes{}, "", []int{0}, nil, false, nil},
		{"sidecar exits later: restarted, apps keep running", n, ps(n, "side", exited, 1, "init", exited, 0, "app", running, 0), fakeProbes{}, "", nil, []int{0}, false, nil},
		{"sidecar unhealthy: killed and restarted", a, ps(a, "side", running, 0, "init", exited, 0, "app", running, 0), fakeProbes{unhealthy: map[string]bool{"id-side": true}}, "", nil, []int{0}, false, []string{"id-side"}},
		{"apps done under Never: sidecars go with the pod", n, ps(n, "side", running, 0, "init", exited, 0, "app", exited, 0), fakeProbes{}, "", nil, nil, true, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			act := computePodActionsProbed(tt.pod, tt.status, tt.probes)
			next := ""
			if act.NextInitContainer != nil {
				next = act.NextInitContainer.Name
			}
			var killed []string
			for id := range act.ContainersToKill {
				killed = append(killed, id)
			}
			if next != tt.next || !slices.Equal(act.ContainersToStart, tt.start) || !slices.Equal(act.SidecarsToStart, tt.sidecars) ||
				act.KillPod != tt.kill || !slices.Equal(killed, tt.killed) {
				t.Fatalf("actions = %+v (next %q)", act, next)
			}
		})
	}
}

// stopOrder records the containers StopContainer is called for.
type stopOrder struct {
	cri.Runtime
	mu      sync.Mutex
	stopped []string
}

func (s *stopOrder) StopContainer(ctx context.Context, id string, timeout int64) error {
	s.mu.Lock()
	s.stopped = append(s.stopped, id)
	s.mu.Unlock()
	return s.Runtime.StopContainer(ctx, id, timeout)
}

func TestKillPodStopsSidecarsLastInReverseOrder(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Unix(10000, 0))
	rec := &stopOrder{Runtime: cri.NewFakeRuntime(busybox, pause)}
	m := New(rec, clk, nil, Config{SandboxImage: pause, PodLogsRoot: t.TempDir()})
	always := v1.ContainerRestartPolicyAlways
	pod := testPod(v1.RestartPolicyAlways, "app1", "app2")
	pod.Spec.InitContainers = []v1.Container{
		{Name: "side1", Image: busybox, RestartPolicy: &always},
		{Name: "side2", Image: busybox, RestartPolicy: &always},
	}
	run := runtimeapi.ContainerState_CONTAINER_RUNNING
	ps := &container.PodStatus{ID: pod.UID, Containers: []*container.ContainerStatus{
		cstatus(pod, "side1", run, 0), cstatus(pod, "app1", run, 0), cstatus(pod, "side2", run, 0), cstatus(pod, "app2", run, 0),
	}}
	if err := m.KillPod(context.Background(), pod, ps, 1, false); err != nil {
		t.Fatal(err)
	}
	if len(rec.stopped) != 4 {
		t.Fatalf("stopped %v", rec.stopped)
	}
	apps := append([]string(nil), rec.stopped[:2]...)
	slices.Sort(apps)
	if !slices.Equal(apps, []string{"id-app1", "id-app2"}) || !slices.Equal(rec.stopped[2:], []string{"id-side2", "id-side1"}) {
		t.Fatalf("stop order %v, want the apps, then side2, then side1", rec.stopped)
	}
}
