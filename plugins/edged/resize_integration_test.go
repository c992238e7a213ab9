//go:build containerd

package edged

import (
	"strconv"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/edgehive/edgehive/sdk"
)

func itResources(cpuReq, cpuLim, memReq, memLim string) v1.ResourceRequirements {
	r := v1.ResourceRequirements{Requests: v1.ResourceList{}, Limits: v1.ResourceList{}}
	for _, e := range []struct {
		list v1.ResourceList
		name v1.ResourceName
		v    string
	}{{r.Requests, v1.ResourceCPU, cpuReq}, {r.Limits, v1.ResourceCPU, cpuLim}, {r.Requests, v1.ResourceMemory, memReq}, {r.Limits, v1.ResourceMemory, memLim}} {
		if e.v != "" {
			e.list[e.name] = resource.MustParse(e.v)
		}
	}
	return r
}

func atoi(s string) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		return -1
	}
	return n
}

// hasCondition finds a true condition (a patch also carries delete
// directives for conditions that ended: type only, no status).
func hasCondition(s v1.PodStatus, t v1.PodConditionType) *v1.PodCondition {
	for i := range s.Conditions {
		if s.Conditions[i].Type == t && s.Conditions[i].Status == v1.ConditionTrue {
			return &s.Conditions[i]
		}
	}
	return nil
}

// cgroupValues reads the container's own cgroup files from inside it,
// cgroup v2 or v1: "quota" (µs per 100 ms period, "max" without a limit),
// "cpu" (cpu.weight or cpu.shares) and "mem" (the memory limit in bytes).
func cgroupValues(t *testing.T, id string, exec func(id string, cmd ...string) (string, int32)) map[string]string {
	t.Helper()
	read := func(f string) string {
		v, code := exec(id, "cat", "/sys/fs/cgroup/"+f)
		if code != 0 {
			t.Fatalf("cat %s: exit %d: %s", f, code, v)
		}
		return strings.TrimSpace(v)
	}
	if _, code := exec(id, "test", "-f", "/sys/fs/cgroup/cgroup.controllers"); code == 0 {
		quota, _, _ := strings.Cut(read("cpu.max"), " ")
		return map[string]string{"quota": quota, "cpu": read("cpu.weight"), "mem": read("memory.max")}
	}
	quota := read("cpu/cpu.cfs_quota_us")
	if quota == "-1" {
		quota = "max"
	}
	return map[string]string{"quota": quota, "cpu": read("cpu/cpu.shares"), "mem": read("memory/memory.limit_in_bytes")}
}

// TestContainerdInPlaceResize: a running pod's CPU and memory are resized
// in place — the new values are in the container's cgroup, read inside it,
// and reported in status resources/allocatedResources — without a restart;
// a container whose memory resizePolicy is RestartContainer is restarted
// with its new limit; a resize the node cannot take stays PodResizePending
// (Infeasible) and changes nothing.
func TestContainerdInPlaceResize(t *testing.T) {
	h, check, _ := itHarness(t, &itMeta{}, "")
	name := "it-resize-" + time.Now().Format("150405")
	pod := mkPod(name, name, true, "app", "rc")
	pod.Generation = 1
	grace := int64(1)
	pod.Spec.TerminationGracePeriodSeconds = &grace
	app, rc := &pod.Spec.Containers[0], &pod.Spec.Containers[1]
	app.Resources = itResources("100m", "200m", "32Mi", "64Mi")
	rc.Resources = itResources("50m", "", "16Mi", "48Mi")
	rc.ResizePolicy = []v1.ContainerResizePolicy{{ResourceName: v1.ResourceMemory, RestartPolicy: v1.RestartContainer}}
	defer deleteAndWait(t, h, check, pod)
	if err := h.Deliver(podMsg(t, sdk.OpInsert, pod)); err != nil {
		t.Fatal(err)
	}
	st := waitStatus(t, h, name, 60*time.Second, func(s v1.PodStatus) bool {
		return s.Phase == v1.PodRunning && len(s.ContainerStatuses) == 2 &&
			s.ContainerStatuses[0].State.Running != nil && s.ContainerStatuses[1].State.Running != nil
	})
	exec := func(id string, cmd ...string) (string, int32) { return execIn(t, check, id, cmd...) }
	appID, rcID := statusOf(st, "app").ContainerID, statusOf(st, "rc").ContainerID
	if r := statusOf(st, "app").Resources; r == nil || !equality.Semantic.DeepEqual(*r, app.Resources) {
		t.Fatalf("app status resources %+v, want %+v", r, app.Resources)
	}
	before := cgroupValues(t, appID, exec)
	if before["quota"] != "20000" || before["mem"] != "67108864" {
		t.Fatalf("cgroup before the resize: %v", before)
	}

	// Resize: the API's /resize changes the spec and the generation; the
	// update reaches edged as any pod update.
	resized := pod.DeepCopy()
	resized.Generation = 2
	resized.Spec.Containers[0].Resources = itResources("300m", "500m", "48Mi", "128Mi")
	resized.Spec.Containers[1].Resources = itResources("50m", "", "16Mi", "96Mi")
	start := time.Now()
	if err := h.Deliver(podMsg(t, sdk.OpUpdate, resized)); err != nil {
		t.Fatal(err)
	}
	st = waitStatus(t, h, name, 60*time.Second, func(s v1.PodStatus) bool {
		a, r := statusOf(s, "app"), statusOf(s, "rc")
		return s.ObservedGeneration == 2 && hasCondition(s, v1.PodResizeInProgress) == nil && hasCondition(s, v1.PodResizePending) == nil &&
			a != nil && a.Resources != nil && equality.Semantic.DeepEqual(*a.Resources, resized.Spec.Containers[0].Resources) &&
			r != nil && r.State.Running != nil && r.RestartCount == 1 && r.Ready
	})
	t.Logf("resize reported done after %s", time.Since(start).Round(time.Millisecond))
	a := statusOf(st, "app")
	if a.ContainerID != appID || a.RestartCount != 0 {
		t.Fatalf("app restarted by an in-place resize: %s (restartCount %d), was %s", a.ContainerID, a.RestartCount, appID)
	}
	if !equality.Semantic.DeepEqual(a.AllocatedResources, resized.Spec.Containers[0].Resources.Requests) {
		t.Fatalf("app allocatedResources %+v", a.AllocatedResources)
	}
	after := cgroupValues(t, appID, exec)
	if after["quota"] != "50000" || after["mem"] != "134217728" {
		t.Fatalf("cgroup after the resize: %v", after)
	}
	if atoi(after["cpu"]) <= atoi(before["cpu"]) {
		t.Fatalf("cpu.weight did not grow with the request: %s → %s", before["cpu"], after["cpu"])
	}
	r := statusOf(st, "rc")
	if r.ContainerID == rcID {
		t.Fatalf("rc (memory RestartContainer) was not restarted")
	}
	if v := cgroupValues(t, r.ContainerID, exec)["mem"]; v != "100663296" {
		t.Fatalf("rc memory.max after its restart: %s", v)
	}

	// A request beyond the node's allocatable: pending, nothing applied.
	infeasible := resized.DeepCopy()
	infeasible.Generation = 3
	infeasible.Spec.Containers[0].Resources = itResources("100000", "100000", "48Mi", "128Mi")
	if err := h.Deliver(podMsg(t, sdk.OpUpdate, infeasible)); err != nil {
		t.Fatal(err)
	}
	st = waitStatus(t, h, name, 30*time.Second, func(s v1.PodStatus) bool {
		c := hasCondition(s, v1.PodResizePending)
		return s.ObservedGeneration == 3 && c != nil && c.Reason == v1.PodReasonInfeasible
	})
	if c := hasCondition(st, v1.PodResizePending); !strings.Contains(c.Message, "cpu") {
		t.Fatalf("pending condition %+v", c)
	}
	if a := statusOf(st, "app"); !equality.Semantic.DeepEqual(*a.Resources, resized.Spec.Containers[0].Resources) ||
		!equality.Semantic.DeepEqual(a.AllocatedResources, resized.Spec.Containers[0].Resources.Requests) {
		t.Fatalf("infeasible resize changed the reported resources: %+v / %+v", a.Resources, a.AllocatedResources)
	}
	if v := cgroupValues(t, appID, exec)["quota"]; v != "50000" {
		t.Fatalf("infeasible resize changed the cpu quota: %s", v)
	}

	// Back to what runs: the pending condition is deleted upstream (a
	// strategic merge keeps conditions the patch does not name).
	back := resized.DeepCopy()
	back.Generation = 4
	if err := h.Deliver(podMsg(t, sdk.OpUpdate, back)); err != nil {
		t.Fatal(err)
	}
	st = waitStatus(t, h, name, 30*time.Second, func(s v1.PodStatus) bool {
		return s.ObservedGeneration == 4 && hasCondition(s, v1.PodResizePending) == nil
	})
	deleted := false
	for _, c := range st.Conditions {
		deleted = deleted || (c.Type == v1.PodResizePending && c.Status == "")
	}
	if !deleted {
		t.Fatalf("no delete directive for PodResizePending in %+v", st.Conditions)
	}
}
