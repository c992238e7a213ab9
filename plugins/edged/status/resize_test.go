package status

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/strategicpatch"
)

func reqs(cpu, mem string) v1.ResourceList {
	out := v1.ResourceList{}
	if cpu != "" {
		out[v1.ResourceCPU] = resource.MustParse(cpu)
	}
	if mem != "" {
		out[v1.ResourceMemory] = resource.MustParse(mem)
	}
	return out
}

func condition(st v1.PodStatus, t v1.PodConditionType) *v1.PodCondition {
	for i := range st.Conditions {
		if st.Conditions[i].Type == t {
			return &st.Conditions[i]
		}
	}
	return nil
}

func TestResizeStatus(t *testing.T) {
	now := time.Unix(7000, 0)
	spec := v1.ResourceRequirements{Requests: reqs("25m", "40Mi"), Limits: reqs("35m", "")}
	old := v1.ResourceRequirements{Requests: reqs("20m", "35Mi")}
	tests := []struct {
		name          string
		applied       *v1.ResourceRequirements
		state         bool // running
		infeasible    string
		err           string
		wantCondition v1.PodConditionType // "" for none
		wantResources v1.ResourceRequirements
		wantAllocated v1.ResourceList
	}{
		{"done", &spec, true, "", "", "", spec, spec.Requests},
		{"done: an old error is gone", &spec, true, "", "boom", "", spec, spec.Requests},
		{"in progress", &old, true, "", "", v1.PodResizeInProgress, old, spec.Requests},
		{"in progress with an error", &old, true, "", "cannot decrease memory limits", v1.PodResizeInProgress, old, spec.Requests},
		{"equivalent values differ", &v1.ResourceRequirements{Requests: reqs("25m", "40Mi"), Limits: reqs("36m", "")}, true, "", "", v1.PodResizeInProgress,
			v1.ResourceRequirements{Requests: reqs("25m", "40Mi"), Limits: reqs("36m", "")}, spec.Requests},
		{"infeasible keeps the old allocation", &old, true, "Node didn't have enough capacity", "", v1.PodResizePending, old, old.Requests},
		{"unknown applied: the spec", nil, true, "", "", "", spec, spec.Requests},
		{"exited: the spec", &old, false, "", "", "", spec, spec.Requests},
		{"too big but not resizing: no condition", &spec, true, "Node didn't have enough capacity", "", "", spec, spec.Requests},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := pod(v1.RestartPolicyAlways, "a")
			p.Generation = 3
			p.Spec.Containers[0].Resources = spec
			c := cs("a", running, 0, 0)
			if !tt.state {
				c = cs("a", exited, 1, 0)
			}
			c.Resources = tt.applied
			ps := rps(c)
			st := Compute(p, ps, nil, now, nil)
			SetResizeConditions(&st, p, ps, Resize{Infeasible: tt.infeasible, Error: tt.err}, now, nil)
			got := st.ContainerStatuses[0]
			if got.Resources == nil || !equality.Semantic.DeepEqual(*got.Resources, tt.wantResources) {
				t.Fatalf("resources %+v, want %+v", got.Resources, tt.wantResources)
			}
			if !equality.Semantic.DeepEqual(got.AllocatedResources, tt.wantAllocated) {
				t.Fatalf("allocated %+v, want %+v", got.AllocatedResources, tt.wantAllocated)
			}
			for _, ct := range []v1.PodConditionType{v1.PodResizeInProgress, v1.PodResizePending} {
				c := condition(st, ct)
				if (c != nil) != (ct == tt.wantCondition) {
					t.Fatalf("condition %s present %v, want %v (%+v)", ct, c != nil, ct == tt.wantCondition, st.Conditions)
				}
				if c == nil {
					continue
				}
				if c.Status != v1.ConditionTrue || c.ObservedGeneration != 3 {
					t.Fatalf("condition %+v", c)
				}
				if ct == v1.PodResizePending && (c.Reason != v1.PodReasonInfeasible || c.Message != tt.infeasible) {
					t.Fatalf("pending condition %+v", c)
				}
				if ct == v1.PodResizeInProgress && tt.err != "" && (c.Reason != v1.PodReasonError || c.Message != tt.err) {
					t.Fatalf("in-progress condition %+v, want reason Error with %q", c, tt.err)
				}
				if ct == v1.PodResizeInProgress && tt.err == "" && c.Reason != "" {
					t.Fatalf("in-progress condition %+v has a reason", c)
				}
			}
		})
	}
}

func TestResizeConditionTransitionKept(t *testing.T) {
	p := pod(v1.RestartPolicyAlways, "a")
	p.Spec.Containers[0].Resources.Requests = reqs("30m", "")
	c := cs("a", running, 0, 0)
	c.Resources = &v1.ResourceRequirements{Requests: reqs("20m", "")}
	ps := rps(c)
	t0 := time.Unix(1000, 0)
	first := Compute(p, ps, nil, t0, nil)
	SetResizeConditions(&first, p, ps, Resize{}, t0, nil)
	later := Compute(p, ps, nil, t0.Add(time.Minute), &first)
	SetResizeConditions(&later, p, ps, Resize{}, t0.Add(time.Minute), &first)
	if got := condition(later, v1.PodResizeInProgress); got == nil || !got.LastTransitionTime.Time.Equal(t0) {
		t.Fatalf("condition %+v, want the first transition time kept", got)
	}
}

func TestNoResourcesWithoutAnInstance(t *testing.T) {
	p := pod(v1.RestartPolicyAlways, "a")
	p.Spec.Containers[0].Resources.Requests = reqs("30m", "")
	st := Compute(p, rps(), nil, time.Unix(1, 0), nil)
	if st.ContainerStatuses[0].Resources != nil || st.ContainerStatuses[0].AllocatedResources != nil {
		t.Fatalf("a container never created reports resources: %+v", st.ContainerStatuses[0])
	}
}

// TestResizeConditionRemovedUpstream: conditions merge by type under a
// strategic merge patch, so a resize condition that ended is deleted by a
// directive; the other conditions stay.
func TestResizeConditionRemovedUpstream(t *testing.T) {
	var sent [][]byte
	m := NewManager(func(_ context.Context, _ types.UID, _, _ string, patch []byte) error {
		sent = append(sent, patch)
		return nil
	})
	p := pod(v1.RestartPolicyAlways, "a")
	ready := v1.PodCondition{Type: v1.PodReady, Status: v1.ConditionTrue}
	inProgress := v1.PodCondition{Type: v1.PodResizeInProgress, Status: v1.ConditionTrue, Reason: v1.PodReasonError, Message: "boom"}
	api := []byte(`{"status":{"conditions":[{"type":"DisruptionTarget","status":"True"}]}}`)
	for _, st := range []v1.PodStatus{
		{Phase: v1.PodRunning, Conditions: []v1.PodCondition{ready, inProgress}},
		{Phase: v1.PodRunning, Conditions: []v1.PodCondition{ready}},
	} {
		if _, err := m.Set(context.Background(), p, st); err != nil {
			t.Fatal(err)
		}
		merged, err := strategicpatch.StrategicMergePatch(api, sent[len(sent)-1], v1.Pod{})
		if err != nil {
			t.Fatalf("strategic merge: %v", err)
		}
		api = merged
	}
	var got v1.Pod
	if err := json.Unmarshal(api, &got); err != nil {
		t.Fatal(err)
	}
	var kinds []v1.PodConditionType
	for _, c := range got.Status.Conditions {
		kinds = append(kinds, c.Type)
	}
	if len(kinds) != 2 || condition(got.Status, v1.PodResizeInProgress) != nil || condition(got.Status, v1.PodReady) == nil ||
		condition(got.Status, v1.DisruptionTarget) == nil {
		t.Fatalf("conditions after the resize ended: %v", kinds)
	}
}
