package status

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/strategicpatch"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/edgehive/edgehive/plugins/edged/container"
)

var (
	running = runtimeapi.ContainerState_CONTAINER_RUNNING
	exited  = runtimeapi.ContainerState_CONTAINER_EXITED
)

func pod(restart v1.RestartPolicy, names ...string) *v1.Pod {
	p := &v1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "default", UID: "u"}, Spec: v1.PodSpec{RestartPolicy: restart}}
	for _, n := range names {
		p.Spec.Containers = append(p.Spec.Containers, v1.Container{Name: n, Image: "busybox:1.36"})
	}
	return p
}

func cs(name string, st runtimeapi.ContainerState, exit int32, restarts int) *container.ContainerStatus {
	return &container.ContainerStatus{ContainerStatus: &runtimeapi.ContainerStatus{Id: name + "-id", State: st, ExitCode: exit, ImageRef: "sha256:1", StartedAt: 1e9, FinishedAt: 2e9},
		Name: name, RestartCount: restarts}
}

func rps(cs ...*container.ContainerStatus) *container.PodStatus {
	return &container.PodStatus{IPs: []string{"10.88.0.9"}, Containers: cs,
		Sandboxes: []*runtimeapi.PodSandboxStatus{{Id: "sb", State: runtimeapi.PodSandboxState_SANDBOX_READY}}}
}

func TestCompute(t *testing.T) {
	now := time.Unix(5000, 0)
	tests := []struct {
		name    string
		pod     *v1.Pod
		ps      *container.PodStatus
		reasons map[string]Reason
		phase   v1.PodPhase
		ready   bool
		ip      string
		check   func(t *testing.T, s v1.PodStatus)
	}{
		{"nothing yet", pod(v1.RestartPolicyAlways, "a"), nil, nil, v1.PodPending, false, "", func(t *testing.T, s v1.PodStatus) {
			if s.ContainerStatuses[0].State.Waiting.Reason != "ContainerCreating" {
				t.Fatal(s.ContainerStatuses[0])
			}
		}},
		{"running", pod(v1.RestartPolicyAlways, "a", "b"), rps(cs("a", running, 0, 0), cs("b", running, 0, 2)), nil, v1.PodRunning, true, "10.88.0.9", func(t *testing.T, s v1.PodStatus) {
			b := s.ContainerStatuses[1]
			if b.RestartCount != 2 || !b.Ready || !*b.Started || b.ContainerID != "containerd://b-id" || b.ImageID != "sha256:1" || b.State.Running == nil {
				t.Fatalf("%+v", b)
			}
		}},
		{"one not started", pod(v1.RestartPolicyAlways, "a", "b"), rps(cs("a", running, 0, 0)), nil, v1.PodPending, false, "10.88.0.9", nil},
		{"crash loop", pod(v1.RestartPolicyAlways, "a"), rps(cs("a", exited, 1, 3)), map[string]Reason{"a": {"CrashLoopBackOff", "back-off"}}, v1.PodRunning, false, "10.88.0.9", func(t *testing.T, s v1.PodStatus) {
			a := s.ContainerStatuses[0]
			if a.State.Waiting == nil || a.State.Waiting.Reason != "CrashLoopBackOff" || a.LastTerminationState.Terminated.ExitCode != 1 || a.RestartCount != 3 {
				t.Fatalf("%+v", a)
			}
		}},
		{"restarted keeps last state", pod(v1.RestartPolicyAlways, "a"), rps(cs("a", running, 0, 1), cs("a", exited, 1, 0)), nil, v1.PodRunning, true, "10.88.0.9", func(t *testing.T, s v1.PodStatus) {
			if s.ContainerStatuses[0].LastTerminationState.Terminated == nil {
				t.Fatal("no last state")
			}
		}},
		{"succeeded", pod(v1.RestartPolicyNever, "a", "b"), rps(cs("a", exited, 0, 0), cs("b", exited, 0, 0)), nil, v1.PodSucceeded, false, "10.88.0.9", nil},
		{"failed", pod(v1.RestartPolicyNever, "a", "b"), rps(cs("a", exited, 0, 0), cs("b", exited, 2, 0)), nil, v1.PodFailed, false, "10.88.0.9", nil},
		{"OnFailure restarting", pod(v1.RestartPolicyOnFailure, "a"), rps(cs("a", exited, 2, 0)), nil, v1.PodRunning, false, "10.88.0.9", nil},
	}
	initPod := pod(v1.RestartPolicyAlways, "a")
	initPod.Spec.InitContainers = []v1.Container{{Name: "i", Image: "busybox:1.36"}}
	tests = append(tests, struct {
		name    string
		pod     *v1.Pod
		ps      *container.PodStatus
		reasons map[string]Reason
		phase   v1.PodPhase
		ready   bool
		ip      string
		check   func(t *testing.T, s v1.PodStatus)
	}{"init running", initPod, rps(cs("i", running, 0, 0)), nil, v1.PodPending, false, "10.88.0.9", func(t *testing.T, s v1.PodStatus) {
		if s.Conditions[1].Type != v1.PodInitialized || s.Conditions[1].Status != v1.ConditionFalse {
			t.Fatal(s.Conditions)
		}
	}})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := Compute(tt.pod, tt.ps, tt.reasons, now, nil)
			if s.Phase != tt.phase || s.PodIP != tt.ip {
				t.Fatalf("phase %s ip %q", s.Phase, s.PodIP)
			}
			ready := s.Conditions[3]
			if ready.Type != v1.PodReady || (ready.Status == v1.ConditionTrue) != tt.ready {
				t.Fatalf("conditions %+v", s.Conditions)
			}
			if tt.check != nil {
				tt.check(t, s)
			}
		})
	}
}

func TestTransitionTimesKept(t *testing.T) {
	p := pod(v1.RestartPolicyAlways, "a")
	first := Compute(p, rps(cs("a", running, 0, 0)), nil, time.Unix(100, 0), nil)
	second := Compute(p, rps(cs("a", running, 0, 0)), nil, time.Unix(200, 0), &first)
	if !second.Conditions[3].LastTransitionTime.Equal(&first.Conditions[3].LastTransitionTime) || !second.StartTime.Equal(first.StartTime) {
		t.Fatal("times moved without a change")
	}
}

func TestManagerSendsChangesOnly(t *testing.T) {
	var sent [][]byte
	m := NewManager(func(ctx context.Context, uid types.UID, ns, name string, patch []byte) error {
		sent = append(sent, patch)
		return nil
	})
	p := pod(v1.RestartPolicyAlways, "a")
	s1 := Compute(p, nil, nil, time.Unix(100, 0), nil)
	for range 2 {
		if _, err := m.Set(context.Background(), p, s1); err != nil {
			t.Fatal(err)
		}
	}
	s2 := Compute(p, rps(cs("a", running, 0, 0)), nil, time.Unix(101, 0), &s1)
	m.Set(context.Background(), p, s2)
	if len(sent) != 2 {
		t.Fatalf("%d sends", len(sent))
	}
	var body struct {
		Metadata struct{ UID string }
		Status   v1.PodStatus
	}
	if err := json.Unmarshal(sent[1], &body); err != nil || body.Metadata.UID != "u" || body.Status.Phase != v1.PodRunning {
		t.Fatalf("%s %v", sent[1], err)
	}
}

// TestManagerResendAll: after ResendAll, an unchanged status is sent once
// more (a failed send keeps the resend due), then only changes again.
func TestManagerResendAll(t *testing.T) {
	var sent int
	fail := false
	m := NewManager(func(ctx context.Context, uid types.UID, ns, name string, patch []byte) error {
		if fail {
			return errors.New("link down")
		}
		sent++
		return nil
	})
	ctx := context.Background()
	p := pod(v1.RestartPolicyAlways, "a")
	st := Compute(p, nil, nil, time.Unix(100, 0), nil)
	set := func(wantSent bool) {
		t.Helper()
		did, err := m.Set(ctx, p, st)
		if (err != nil) != fail || did != wantSent {
			t.Fatalf("Set = %v, %v; want sent %v, failing %v", did, err, wantSent, fail)
		}
	}
	set(true)
	set(false)
	m.ResendAll()
	fail = true
	set(false) // the send failed: still due
	fail = false
	set(true)
	set(false)
	if sent != 2 {
		t.Fatalf("%d sends, want 2", sent)
	}
	m.ResendAll()
	m.Forget(p.UID)
	m.ResendAll() // a forgotten pod is not marked again
	if len(m.resend) != 0 {
		t.Fatalf("resend marks left: %v", m.resend)
	}
}

func TestQOSClass(t *testing.T) {
	q := func(s string) resource.Quantity { return resource.MustParse(s) }
	both := v1.ResourceList{v1.ResourceCPU: q("1"), v1.ResourceMemory: q("1Gi")}
	tests := []struct {
		name string
		cs   []v1.ResourceRequirements
		want v1.PodQOSClass
	}{
		{"nothing", []v1.ResourceRequirements{{}, {}}, v1.PodQOSBestEffort},
		{"limits equal requests", []v1.ResourceRequirements{{Requests: both, Limits: both}}, v1.PodQOSGuaranteed},
		{"limits only", []v1.ResourceRequirements{{Limits: both}}, v1.PodQOSGuaranteed},
		{"one container without", []v1.ResourceRequirements{{Limits: both}, {}}, v1.PodQOSBurstable},
		{"requests below limits", []v1.ResourceRequirements{{Requests: v1.ResourceList{v1.ResourceCPU: q("100m")}, Limits: both}}, v1.PodQOSBurstable},
		{"memory limit only", []v1.ResourceRequirements{{Limits: v1.ResourceList{v1.ResourceMemory: q("1Gi")}}}, v1.PodQOSBurstable},
	}
	for _, tt := range tests {
		pod := &v1.Pod{}
		for i, r := range tt.cs {
			pod.Spec.Containers = append(pod.Spec.Containers, v1.Container{Name: fmt.Sprint(i), Resources: r})
		}
		if got := QOSClass(pod); got != tt.want {
			t.Errorf("%s: %s, want %s", tt.name, got, tt.want)
		}
	}
}

func TestPatchReplacesPodIPsUnderStrategicMerge(t *testing.T) {
	old := v1.Pod{Status: v1.PodStatus{
		PodIP:      "10.0.0.5",
		PodIPs:     []v1.PodIP{{IP: "10.0.0.5"}},
		HostIPs:    []v1.HostIP{{IP: "192.0.2.1"}},
		Conditions: []v1.PodCondition{{Type: v1.PodReady, Status: v1.ConditionTrue}},
	}}
	oldJSON, err := json.Marshal(old)
	if err != nil {
		t.Fatal(err)
	}
	patch, err := Patch("uid-1", v1.PodStatus{PodIP: "10.0.0.8", PodIPs: []v1.PodIP{{IP: "10.0.0.8"}},
		HostIPs: []v1.HostIP{{IP: "192.0.2.1"}}})
	if err != nil {
		t.Fatal(err)
	}
	merged, err := strategicpatch.StrategicMergePatch(oldJSON, patch, v1.Pod{})
	if err != nil {
		t.Fatalf("strategic merge: %v", err)
	}
	var got v1.Pod
	if err := json.Unmarshal(merged, &got); err != nil {
		t.Fatal(err)
	}
	if len(got.Status.PodIPs) != 1 || got.Status.PodIPs[0].IP != "10.0.0.8" {
		t.Fatalf("podIPs after patch = %v, want only 10.0.0.8", got.Status.PodIPs)
	}
	if len(got.Status.HostIPs) != 1 || got.Status.HostIPs[0].IP != "192.0.2.1" {
		t.Fatalf("hostIPs after patch = %v", got.Status.HostIPs)
	}
	if len(got.Status.Conditions) != 1 {
		t.Fatalf("conditions merge by type and must stay: %v", got.Status.Conditions)
	}
}

func TestPodInitializingWhileInitContainersRun(t *testing.T) {
	p := pod(v1.RestartPolicyAlways, "app")
	p.Spec.InitContainers = []v1.Container{{Name: "init", Image: "busybox:1.36"}}
	s := Compute(p, rps(cs("init", running, 0, 0)), nil, time.Unix(100, 0), nil)
	if got := s.ContainerStatuses[0].State.Waiting; got == nil || got.Reason != "PodInitializing" {
		t.Fatalf("app container while init runs: %+v, want waiting PodInitializing", s.ContainerStatuses[0].State)
	}
	if s.Phase != v1.PodPending {
		t.Fatalf("phase %s, want Pending", s.Phase)
	}
}

func TestSidecarStatus(t *testing.T) {
	always := v1.ContainerRestartPolicyAlways
	p := pod(v1.RestartPolicyNever, "app")
	p.Spec.InitContainers = []v1.Container{
		{Name: "side", Image: "busybox:1.36", RestartPolicy: &always},
		{Name: "init", Image: "busybox:1.36"},
	}
	notStarted := func(_ *v1.Pod, statuses []v1.ContainerStatus) {
		for i := range statuses {
			f := false
			statuses[i].Started, statuses[i].Ready = &f, false
		}
	}
	tests := []struct {
		name        string
		ps          *container.PodStatus
		adjust      Adjust
		phase       v1.PodPhase
		initialized bool
		initReady   []bool
	}{
		{"sidecar not started", rps(cs("side", running, 0, 0)), notStarted, v1.PodPending, false, []bool{false, false}},
		{"sidecar started, init runs", rps(cs("side", running, 0, 0), cs("init", running, 0, 0)), nil, v1.PodPending, false, []bool{true, false}},
		{"initialized", rps(cs("side", running, 0, 0), cs("init", exited, 0, 0)), nil, v1.PodPending, true, []bool{true, true}},
		{"app runs", rps(cs("side", running, 0, 0), cs("init", exited, 0, 0), cs("app", running, 0, 0)), nil, v1.PodRunning, true, []bool{true, true}},
		{"sidecar restarting keeps the pod initialized and running", rps(cs("side", exited, 1, 0), cs("init", exited, 0, 0), cs("app", running, 0, 0)), nil, v1.PodRunning, true, []bool{false, true}},
		{"app succeeded, sidecar stopped with the pod", rps(cs("side", exited, 137, 0), cs("init", exited, 0, 0), cs("app", exited, 0, 0)), nil, v1.PodSucceeded, true, []bool{false, true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := ComputeWith(p, tt.ps, nil, time.Unix(100, 0), nil, tt.adjust)
			if s.Phase != tt.phase {
				t.Fatalf("phase %s, want %s", s.Phase, tt.phase)
			}
			var initialized bool
			for _, c := range s.Conditions {
				if c.Type == v1.PodInitialized {
					initialized = c.Status == v1.ConditionTrue
				}
			}
			if initialized != tt.initialized {
				t.Fatalf("Initialized %v, want %v", initialized, tt.initialized)
			}
			for i, want := range tt.initReady {
				if s.InitContainerStatuses[i].Ready != want {
					t.Fatalf("init container %s ready %v, want %v", s.InitContainerStatuses[i].Name, s.InitContainerStatuses[i].Ready, want)
				}
			}
		})
	}
}

func TestConditionMessagesNameContainers(t *testing.T) {
	p := pod(v1.RestartPolicyAlways, "run1")
	p.Spec.InitContainers = []v1.Container{{Name: "init1", Image: "busybox:1.36"}, {Name: "init2", Image: "busybox:1.36"}}
	// init1 failed and waits out its back-off (restartPolicy Always).
	s := Compute(p, rps(cs("init1", exited, 1, 2)), map[string]Reason{"init1": {Reason: "CrashLoopBackOff"}}, time.Unix(100, 0), nil)
	want := map[v1.PodConditionType]string{
		v1.PodInitialized:  "containers with incomplete status: [init1 init2]",
		v1.ContainersReady: "containers with unready status: [run1]",
		v1.PodReady:        "containers with unready status: [run1]",
	}
	for _, c := range s.Conditions {
		if w, ok := want[c.Type]; ok && (c.Status != v1.ConditionFalse || c.Message != w) {
			t.Errorf("%s = %s %q, want False %q", c.Type, c.Status, c.Message, w)
		}
	}
	if s.InitContainerStatuses[0].Ready {
		t.Errorf("failed init container reported ready")
	}
}

func TestObservedGeneration(t *testing.T) {
	p := pod(v1.RestartPolicyAlways, "app")
	p.Generation = 3
	s := Compute(p, rps(cs("app", running, 0, 0)), nil, time.Unix(100, 0), nil)
	if s.ObservedGeneration != 3 {
		t.Errorf("observedGeneration %d, want 3", s.ObservedGeneration)
	}
	for _, c := range s.Conditions {
		if c.ObservedGeneration != 3 {
			t.Errorf("condition %s observedGeneration %d, want 3", c.Type, c.ObservedGeneration)
		}
	}
}

func TestInitializedFalseWhenAnInitContainerFailedForGood(t *testing.T) {
	p := pod(v1.RestartPolicyNever, "run1")
	p.Spec.InitContainers = []v1.Container{{Name: "init1", Image: "busybox:1.36"}, {Name: "init2", Image: "busybox:1.36"}}
	s := Compute(p, rps(cs("init1", exited, 0, 0), cs("init2", exited, 1, 0)), nil, time.Unix(100, 0), nil)
	if s.Phase != v1.PodFailed {
		t.Fatalf("phase %s, want Failed", s.Phase)
	}
	for _, c := range s.Conditions {
		if c.Type == v1.PodInitialized && (c.Status != v1.ConditionFalse || c.Message != "containers with incomplete status: [init2]") {
			t.Fatalf("Initialized = %s %q", c.Status, c.Message)
		}
	}
}
