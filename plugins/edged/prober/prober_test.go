package prober

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/edgehive/edgehive/plugins/edged/cri"
)

const img = "edgehive.local/busybox:1.36"

type fixture struct {
	rt      *cri.FakeRuntime
	clk     *clocktesting.FakeClock
	m       *Manager
	pod     *v1.Pod
	id      string
	mu      sync.Mutex
	st      v1.PodStatus
	changed int
	exit    int32
}

// newFixture runs one container "app" in the fake runtime; its status says
// it started at the fake clock's now.
func newFixture(t *testing.T, c v1.Container) *fixture {
	t.Helper()
	ctx := context.Background()
	f := &fixture{rt: cri.NewFakeRuntime(img), clk: clocktesting.NewFakeClock(time.Unix(1_700_000_000, 0))}
	f.rt.ExecFunc = func(string, []string) ([]byte, []byte, int32) {
		f.mu.Lock()
		defer f.mu.Unlock()
		return []byte("out"), nil, f.exit
	}
	sb, err := f.rt.RunPodSandbox(ctx, &runtimeapi.PodSandboxConfig{Metadata: &runtimeapi.PodSandboxMetadata{Name: "p", Namespace: "default", Uid: "u1"}}, "")
	if err != nil {
		t.Fatal(err)
	}
	f.id, err = f.rt.CreateContainer(ctx, sb, &runtimeapi.ContainerConfig{Metadata: &runtimeapi.ContainerMetadata{Name: "app"}, Image: &runtimeapi.ImageSpec{Image: img}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.rt.StartContainer(ctx, f.id); err != nil {
		t.Fatal(err)
	}
	c.Name, c.Image = "app", img
	f.pod = &v1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "default", UID: "u1"},
		Spec: v1.PodSpec{Containers: []v1.Container{c}, RestartPolicy: v1.RestartPolicyAlways, HostNetwork: true}}
	f.setRunning(f.id)
	f.m = NewManager(f.rt, f.clk, nil, func(types.UID) (v1.PodStatus, bool) {
		f.mu.Lock()
		defer f.mu.Unlock()
		return f.st, true
	}, func(types.UID) { f.mu.Lock(); f.changed++; f.mu.Unlock() })
	// Workers are driven by Probe; the cancelled ctx keeps their loops idle.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	f.m.AddPod(cctx, f.pod)
	return f
}

func (f *fixture) setRunning(id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.st = v1.PodStatus{PodIP: "127.0.0.1", ContainerStatuses: []v1.ContainerStatus{{Name: "app", ContainerID: "containerd://" + id,
		State: v1.ContainerState{Running: &v1.ContainerStateRunning{StartedAt: metav1.NewTime(f.clk.Now())}}}}}
}

func (f *fixture) setExit(code int32) { f.mu.Lock(); f.exit = code; f.mu.Unlock() }

func (f *fixture) probe(t *testing.T, typ Type) Result {
	t.Helper()
	if !f.m.Probe(context.Background(), "u1", "app", typ) {
		t.Fatal("worker ended")
	}
	r, _ := f.m.result(f.id, typ)
	return r
}

func execProbe(p v1.Probe) *v1.Probe {
	p.Exec = &v1.ExecAction{Command: []string{"check"}}
	return &p
}

func TestThresholds(t *testing.T) {
	tests := []struct {
		name  string
		typ   Type
		probe v1.Probe
		exits []int32
		want  []Result
	}{
		{"readiness starts failing, one success readies", Readiness, v1.Probe{}, []int32{0, 1, 0},
			[]Result{Success, Failure, Success}},
		{"readiness successThreshold 2", Readiness, v1.Probe{SuccessThreshold: 2, FailureThreshold: 1}, []int32{0, 0, 1, 0, 0},
			[]Result{Failure, Success, Failure, Failure, Success}},
		{"liveness failureThreshold 3", Liveness, v1.Probe{FailureThreshold: 3}, []int32{1, 1, 0, 1, 1, 1},
			[]Result{Success, Success, Success, Success, Success, Failure}},
		{"startup failureThreshold 2", Startup, v1.Probe{FailureThreshold: 2}, []int32{1, 1},
			[]Result{Unknown, Failure}},
		{"startup succeeds once, then stops probing", Startup, v1.Probe{FailureThreshold: 3}, []int32{1, 0, 1},
			[]Result{Unknown, Success, Success}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := v1.Container{}
			switch tc.typ {
			case Liveness:
				c.LivenessProbe = execProbe(tc.probe)
			case Readiness:
				c.ReadinessProbe = execProbe(tc.probe)
			case Startup:
				c.StartupProbe = execProbe(tc.probe)
			}
			f := newFixture(t, c)
			for i, code := range tc.exits {
				f.setExit(code)
				if got := f.probe(t, tc.typ); got != tc.want[i] {
					t.Fatalf("probe %d (exit %d): %v, want %v", i, code, got, tc.want[i])
				}
			}
		})
	}
}

func TestInitialDelayAndStartupGate(t *testing.T) {
	f := newFixture(t, v1.Container{
		LivenessProbe: execProbe(v1.Probe{InitialDelaySeconds: 5}),
		StartupProbe:  execProbe(v1.Probe{FailureThreshold: 10}),
	})
	f.setExit(1)
	f.clk.Step(10 * time.Second)
	// The startup probe has not succeeded: liveness does not run.
	f.probe(t, Liveness)
	if n := strings.Count(strings.Join(f.rt.Calls(), " "), "ExecSync"); n != 0 {
		t.Fatalf("liveness ran before startup: %d execs", n)
	}
	if r := f.probe(t, Startup); r != Unknown {
		t.Fatalf("startup after 1 failure of 10 = %v", r)
	}
	f.setExit(0)
	if r := f.probe(t, Startup); r != Success {
		t.Fatalf("startup = %v", r)
	}
	f.setExit(1)
	if r := f.probe(t, Liveness); r != Failure {
		t.Fatalf("liveness = %v", r)
	}
	why, bad := f.m.Unhealthy(f.pod, "app", f.id)
	if !bad || !strings.Contains(why, "failed liveness probe") {
		t.Fatalf("Unhealthy = %q %v", why, bad)
	}
	// On hold until the container is replaced; a new one starts fresh
	// after its own initial delay.
	f.rt.ResetCalls()
	f.probe(t, Liveness)
	old := f.id
	f.id = "new-id"
	f.setRunning("new-id")
	f.m.Probe(context.Background(), "u1", "app", Liveness)
	if n := strings.Count(strings.Join(f.rt.Calls(), " "), "ExecSync"); n != 0 {
		t.Fatalf("probed on hold or inside the initial delay: %d execs", n)
	}
	if _, ok := f.m.result(old, Liveness); ok {
		t.Fatal("old container's result kept")
	}
	if _, bad := f.m.Unhealthy(f.pod, "app", "new-id"); bad {
		t.Fatal("new container unhealthy")
	}
}

func TestUpdatePodStatus(t *testing.T) {
	f := newFixture(t, v1.Container{ReadinessProbe: execProbe(v1.Probe{})})
	st := func() v1.ContainerStatus {
		f.mu.Lock()
		s := []v1.ContainerStatus{f.st.ContainerStatuses[0]}
		f.mu.Unlock()
		f.m.UpdatePodStatus(f.pod, s)
		return s[0]
	}
	if s := st(); s.Ready || s.Started == nil || !*s.Started {
		t.Fatalf("before any probe: %+v", s)
	}
	f.probe(t, Readiness)
	if s := st(); !s.Ready {
		t.Fatal("not ready after success")
	}
	f.setExit(1)
	f.probe(t, Readiness)
	if s := st(); s.Ready {
		t.Fatal("ready after failure")
	}
	if f.changed < 3 {
		t.Fatalf("onChange called %d times", f.changed)
	}
}

func TestHTTPAndTCP(t *testing.T) {
	code := http.StatusOK
	var mu sync.Mutex
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if r.URL.Path != "/healthz" || r.Header.Get("X-Probe") != "1" {
			w.WriteHeader(http.StatusNotFound)
			return
		}
		w.WriteHeader(code)
	}))
	defer srv.Close()
	_, portS, _ := net.SplitHostPort(strings.TrimPrefix(srv.URL, "http://"))
	port, _ := strconv.Atoi(portS)
	closed, _ := net.Listen("tcp", "127.0.0.1:0")
	closedPort := closed.Addr().(*net.TCPAddr).Port
	closed.Close()

	tests := []struct {
		name   string
		handle v1.ProbeHandler
		status int
		want   Result
	}{
		{"http 200", v1.ProbeHandler{HTTPGet: &v1.HTTPGetAction{Path: "/healthz", Port: intstr.FromString("web"),
			HTTPHeaders: []v1.HTTPHeader{{Name: "X-Probe", Value: "1"}}}}, 200, Success},
		{"http 302", v1.ProbeHandler{HTTPGet: &v1.HTTPGetAction{Path: "healthz", Port: intstr.FromInt32(int32(port)),
			HTTPHeaders: []v1.HTTPHeader{{Name: "X-Probe", Value: "1"}}}}, 302, Success},
		{"http 500", v1.ProbeHandler{HTTPGet: &v1.HTTPGetAction{Path: "/healthz", Port: intstr.FromInt32(int32(port)),
			HTTPHeaders: []v1.HTTPHeader{{Name: "X-Probe", Value: "1"}}}}, 500, Failure},
		{"http refused", v1.ProbeHandler{HTTPGet: &v1.HTTPGetAction{Port: intstr.FromInt32(int32(closedPort))}}, 200, Failure},
		{"tcp open", v1.ProbeHandler{TCPSocket: &v1.TCPSocketAction{Port: intstr.FromInt32(int32(port))}}, 200, Success},
		{"tcp refused", v1.ProbeHandler{TCPSocket: &v1.TCPSocketAction{Port: intstr.FromInt32(int32(closedPort))}}, 200, Failure},
		{"bad named port", v1.ProbeHandler{TCPSocket: &v1.TCPSocketAction{Port: intstr.FromString("nope")}}, 200, Failure},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			mu.Lock()
			code = tc.status
			mu.Unlock()
			f := newFixture(t, v1.Container{Ports: []v1.ContainerPort{{Name: "web", ContainerPort: int32(port)}},
				ReadinessProbe: &v1.Probe{ProbeHandler: tc.handle, TimeoutSeconds: 2}})
			if got := f.probe(t, Readiness); got != tc.want {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestRemovePodStopsWorkers(t *testing.T) {
	f := newFixture(t, v1.Container{ReadinessProbe: execProbe(v1.Probe{})})
	w := f.m.worker("u1", "app", Readiness)
	f.m.RemovePod("u1")
	if w.doProbe(context.Background()) {
		t.Fatal("stopped worker still probes")
	}
	if f.m.Probe(context.Background(), "u1", "app", Readiness) {
		t.Fatal("worker still registered")
	}
}

func TestAddPodFollowsProbeSpecChanges(t *testing.T) {
	f := newFixture(t, v1.Container{ReadinessProbe: execProbe(v1.Probe{PeriodSeconds: 5}), LivenessProbe: execProbe(v1.Probe{})})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	old := f.m.worker("u1", "app", Readiness)
	live := f.m.worker("u1", "app", Liveness)
	// Same spec: the worker stays.
	f.m.AddPod(ctx, f.pod.DeepCopy())
	if f.m.worker("u1", "app", Readiness) != old {
		t.Fatal("an unchanged probe got a new worker")
	}
	// Readiness changes, liveness goes away.
	pod := f.pod.DeepCopy()
	pod.Spec.Containers[0].ReadinessProbe.PeriodSeconds = 1
	pod.Spec.Containers[0].LivenessProbe = nil
	f.m.AddPod(ctx, pod)
	nw := f.m.worker("u1", "app", Readiness)
	if nw == old || nw.spec.PeriodSeconds != 1 {
		t.Fatalf("readiness worker not replaced: %+v", nw.spec)
	}
	if old.doProbe(context.Background()) || live.doProbe(context.Background()) {
		t.Fatal("a replaced or removed worker still probes")
	}
	if f.m.Probe(context.Background(), "u1", "app", Liveness) {
		t.Fatal("the removed liveness probe still has a worker")
	}
}
