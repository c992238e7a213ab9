package kuberuntime

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/edgehive/edgehive/plugins/edged/cri"
	"github.com/edgehive/edgehive/plugins/edged/status"
)

func rl(pairs ...string) v1.ResourceList {
	if len(pairs) == 0 {
		return nil
	}
	out := v1.ResourceList{}
	for i := 0; i < len(pairs); i += 2 {
		out[v1.ResourceName(pairs[i])] = resource.MustParse(pairs[i+1])
	}
	return out
}

func TestHashIgnoresResources(t *testing.T) {
	c := v1.Container{Name: "a", Image: busybox, Resources: v1.ResourceRequirements{Requests: rl("cpu", "100m")}}
	d := c
	d.Resources = v1.ResourceRequirements{Requests: rl("cpu", "200m"), Limits: rl("memory", "64Mi")}
	if HashContainer(&c) != HashContainer(&d) {
		t.Fatal("a resources change changed the hash")
	}
	e := c
	e.Image = "other"
	if HashContainer(&c) == HashContainer(&e) {
		t.Fatal("an image change kept the hash")
	}
}

func TestResize(t *testing.T) {
	restart := v1.RestartContainer
	tests := []struct {
		name        string
		from, to    v1.ResourceRequirements
		memPolicy   *v1.ResourceResizeRestartPolicy
		nodeCPU     int64
		wantUpdate  bool // UpdateContainerResources called
		wantRestart bool // a new instance with restartCount 1
		wantApplied v1.ResourceRequirements
		wantLinux   [3]int64 // shares, quota, memory limit of the running instance
	}{
		{
			name:       "cpu and memory up in place",
			from:       v1.ResourceRequirements{Requests: rl("cpu", "100m", "memory", "32Mi"), Limits: rl("cpu", "200m", "memory", "64Mi")},
			to:         v1.ResourceRequirements{Requests: rl("cpu", "300m", "memory", "48Mi"), Limits: rl("cpu", "500m", "memory", "128Mi")},
			wantUpdate: true, wantApplied: v1.ResourceRequirements{Requests: rl("cpu", "300m", "memory", "48Mi"), Limits: rl("cpu", "500m", "memory", "128Mi")},
			wantLinux: [3]int64{307, 50000, 128 << 20},
		},
		{
			name:       "limits added",
			from:       v1.ResourceRequirements{Requests: rl("cpu", "20m")},
			to:         v1.ResourceRequirements{Requests: rl("cpu", "25m"), Limits: rl("cpu", "35m", "memory", "50Mi")},
			wantUpdate: true, wantApplied: v1.ResourceRequirements{Requests: rl("cpu", "25m"), Limits: rl("cpu", "35m", "memory", "50Mi")},
			wantLinux: [3]int64{25, 3500, 50 << 20},
		},
		{
			name:       "equivalent cgroup values still recorded",
			from:       v1.ResourceRequirements{Requests: rl("cpu", "2m"), Limits: rl("cpu", "10m")},
			to:         v1.ResourceRequirements{Requests: rl("cpu", "1m"), Limits: rl("cpu", "5m")},
			wantUpdate: true, wantApplied: v1.ResourceRequirements{Requests: rl("cpu", "1m"), Limits: rl("cpu", "5m")},
			wantLinux: [3]int64{2, 1000, 0},
		},
		{
			name:      "memory with RestartContainer restarts",
			from:      v1.ResourceRequirements{Requests: rl("memory", "32Mi"), Limits: rl("memory", "64Mi")},
			to:        v1.ResourceRequirements{Requests: rl("memory", "32Mi"), Limits: rl("memory", "96Mi")},
			memPolicy: &restart, wantRestart: true,
			wantApplied: v1.ResourceRequirements{Requests: rl("memory", "32Mi"), Limits: rl("memory", "96Mi")},
			wantLinux:   [3]int64{2, 0, 96 << 20},
		},
		{
			name:      "cpu only with memory RestartContainer stays in place",
			from:      v1.ResourceRequirements{Requests: rl("cpu", "100m", "memory", "32Mi")},
			to:        v1.ResourceRequirements{Requests: rl("cpu", "150m", "memory", "32Mi")},
			memPolicy: &restart, wantUpdate: true,
			wantApplied: v1.ResourceRequirements{Requests: rl("cpu", "150m", "memory", "32Mi")},
			wantLinux:   [3]int64{153, 0, 0},
		},
		{
			name:    "infeasible is not applied",
			from:    v1.ResourceRequirements{Requests: rl("cpu", "100m")},
			to:      v1.ResourceRequirements{Requests: rl("cpu", "64")},
			nodeCPU: 2, wantApplied: v1.ResourceRequirements{Requests: rl("cpu", "100m")},
			wantLinux: [3]int64{102, 0, 0},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rt := cri.NewFakeRuntime(busybox, pause)
			clk := clocktesting.NewFakeClock(time.Unix(10000, 0))
			m := newManager(t, rt, clk)
			m.cfg.NodeCPU, m.cfg.NodeMemory = tt.nodeCPU, 8<<30
			pod := testPod(v1.RestartPolicyAlways, "app")
			pod.Spec.Containers[0].Resources = tt.from
			if tt.memPolicy != nil {
				pod.Spec.Containers[0].ResizePolicy = []v1.ContainerResizePolicy{{ResourceName: v1.ResourceMemory, RestartPolicy: *tt.memPolicy}}
			}
			_, ps, err := syncOnce(t, m, pod)
			if err != nil {
				t.Fatal(err)
			}
			first := ps.FindContainer("app")
			if first.Resources == nil || status.ResourcesDiffer(first.Resources, &tt.from) {
				t.Fatalf("applied at creation %+v, want %+v", first.Resources, tt.from)
			}
			rt.ResetCalls()
			resized := pod.DeepCopy()
			resized.Spec.Containers[0].Resources = tt.to
			resized.Generation = 2
			if _, ps, err = syncOnce(t, m, resized); err != nil {
				t.Fatal(err)
			}
			if got := slices.Contains(rt.Calls(), "UpdateContainerResources"); got != tt.wantUpdate {
				t.Fatalf("UpdateContainerResources called %v, want %v (calls %v)", got, tt.wantUpdate, rt.Calls())
			}
			cur := ps.FindContainer("app")
			if !cur.Running() {
				t.Fatalf("container not running: %v", cur.State)
			}
			if restarted := cur.Id != first.Id; restarted != tt.wantRestart || (tt.wantRestart && cur.RestartCount != 1) {
				t.Fatalf("restarted %v (restartCount %d), want %v", restarted, cur.RestartCount, tt.wantRestart)
			}
			if cur.Resources == nil || status.ResourcesDiffer(cur.Resources, &tt.wantApplied) {
				t.Fatalf("applied %+v, want %+v", cur.Resources, tt.wantApplied)
			}
			lin := cur.GetResources().GetLinux()
			if got := [3]int64{lin.GetCpuShares(), lin.GetCpuQuota(), lin.GetMemoryLimitInBytes()}; got != tt.wantLinux {
				t.Fatalf("runtime resources %v, want %v", got, tt.wantLinux)
			}
			// A second sync has nothing left to do.
			rt.ResetCalls()
			if _, _, err := syncOnce(t, m, resized); err != nil {
				t.Fatal(err)
			}
			if slices.Contains(rt.Calls(), "UpdateContainerResources") || slices.Contains(rt.Calls(), "CreateContainer") {
				t.Fatalf("a resized pod synced again made calls %v", rt.Calls())
			}
			// Another manager over the same pod directory (an edged
			// restart) knows what was applied.
			m2 := New(rt, clk, nil, m.cfg)
			ps2, err := m2.GetPodStatus(context.Background(), pod.UID, pod.Name, pod.Namespace)
			if err != nil {
				t.Fatal(err)
			}
			if got := ps2.FindContainer("app").Resources; got == nil || status.ResourcesDiffer(got, &tt.wantApplied) {
				t.Fatalf("after a restart applied %+v, want %+v", got, tt.wantApplied)
			}
		})
	}
}

func TestResizeInfeasibleMessage(t *testing.T) {
	m := New(cri.NewFakeRuntime(), clocktesting.NewFakeClock(time.Unix(0, 0)), nil, Config{NodeCPU: 2, NodeMemory: 1 << 30})
	pod := testPod(v1.RestartPolicyAlways, "a", "b")
	pod.Spec.Containers[0].Resources.Requests = rl("cpu", "1500m")
	if msg := m.ResizeInfeasible(pod); msg != "" {
		t.Fatalf("fitting pod: %q", msg)
	}
	pod.Spec.Containers[1].Resources.Requests = rl("cpu", "1", "memory", "2Gi")
	if msg := m.ResizeInfeasible(pod); msg != "Node didn't have enough capacity: cpu, requested: 2500, capacity: 2000" {
		t.Fatalf("message %q", msg)
	}
	pod.Spec.Containers[1].Resources.Requests = rl("memory", "2Gi")
	if msg := m.ResizeInfeasible(pod); msg != "Node didn't have enough capacity: memory, requested: 2147483648, capacity: 1073741824" {
		t.Fatalf("message %q", msg)
	}
}

// TestResizeMemoryBelowUsage: a memory limit lowered to at most what the
// container uses is not applied; the error is the pod's resize status
// until a viable limit comes.
func TestResizeMemoryBelowUsage(t *testing.T) {
	rt := cri.NewFakeRuntime(busybox, pause)
	clk := clocktesting.NewFakeClock(time.Unix(10000, 0))
	m := newManager(t, rt, clk)
	pod := testPod(v1.RestartPolicyAlways, "app")
	pod.Spec.Containers[0].Resources = v1.ResourceRequirements{Requests: rl("memory", "35Mi"), Limits: rl("memory", "35Mi")}
	_, ps, err := syncOnce(t, m, pod)
	if err != nil {
		t.Fatal(err)
	}
	id := ps.FindContainer("app").Id
	rt.MemoryUsage = map[string]uint64{id: 20 << 20}
	tiny := pod.DeepCopy()
	tiny.Spec.Containers[0].Resources = v1.ResourceRequirements{Requests: rl("memory", "10Ki"), Limits: rl("memory", "10Ki")}
	if _, ps, err = syncOnce(t, m, tiny); err == nil {
		t.Fatal("a limit below usage was applied without an error")
	}
	if got := ps.FindContainer("app").GetResources().GetLinux().GetMemoryLimitInBytes(); got != 35<<20 {
		t.Fatalf("memory limit %d after a refused resize", got)
	}
	msg := m.ResizeStatus(tiny).Error
	if want := "attempting to set container \"app\" memory limit (10240) below current usage (20971520)"; !strings.Contains(msg, want) {
		t.Fatalf("resize error %q, want it to contain %q", msg, want)
	}
	// A limit above usage goes through and clears the error.
	viable := pod.DeepCopy()
	viable.Spec.Containers[0].Resources = v1.ResourceRequirements{Requests: rl("memory", "30Mi"), Limits: rl("memory", "30Mi")}
	if _, ps, err = syncOnce(t, m, viable); err != nil {
		t.Fatal(err)
	}
	if got := ps.FindContainer("app").GetResources().GetLinux().GetMemoryLimitInBytes(); got != 30<<20 {
		t.Fatalf("memory limit %d after a viable resize", got)
	}
	if msg := m.ResizeStatus(viable).Error; msg != "" {
		t.Fatalf("resize error %q after a viable resize", msg)
	}
}

// TestResizeSidecar: a sidecar (restartable init container) is resized in
// place like an app container.
func TestResizeSidecar(t *testing.T) {
	rt := cri.NewFakeRuntime(busybox, pause)
	clk := clocktesting.NewFakeClock(time.Unix(10000, 0))
	m := newManager(t, rt, clk)
	always := v1.ContainerRestartPolicyAlways
	pod := testPod(v1.RestartPolicyAlways, "app")
	pod.Spec.InitContainers = []v1.Container{{Name: "side", Image: busybox, Command: []string{"sleep", "300"}, RestartPolicy: &always,
		Resources: v1.ResourceRequirements{Requests: rl("cpu", "100m"), Limits: rl("cpu", "200m")}}}
	for i := 0; i < 3; i++ {
		if _, _, err := syncOnce(t, m, pod); err != nil {
			t.Fatal(err)
		}
	}
	_, before, _ := syncOnce(t, m, pod)
	side := before.FindContainer("side")
	if side == nil || !side.Running() || before.FindContainer("app") == nil {
		t.Fatalf("pod not up: %+v", before.Containers)
	}
	resized := pod.DeepCopy()
	resized.Spec.InitContainers[0].Resources = v1.ResourceRequirements{Requests: rl("cpu", "300m"), Limits: rl("cpu", "400m")}
	rt.ResetCalls()
	_, after, err := syncOnce(t, m, resized)
	if err != nil {
		t.Fatal(err)
	}
	got := after.FindContainer("side")
	if got.Id != side.Id || !slices.Contains(rt.Calls(), "UpdateContainerResources") {
		t.Fatalf("sidecar not resized in place: id %s → %s, calls %v", side.Id, got.Id, rt.Calls())
	}
	if q := got.GetResources().GetLinux().GetCpuQuota(); q != 40000 {
		t.Fatalf("sidecar quota %d, want 40000", q)
	}
	if got.Resources == nil || status.ResourcesDiffer(got.Resources, &resized.Spec.InitContainers[0].Resources) {
		t.Fatalf("sidecar applied %+v", got.Resources)
	}
}
