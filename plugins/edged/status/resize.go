package status

import (
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/edgehive/edgehive/plugins/edged/container"
)

// QuantityEqual compares the quantity of name in two lists; absent equals
// absent only.
func QuantityEqual(a, b v1.ResourceList, name v1.ResourceName) bool {
	qa, oka := a[name]
	qb, okb := b[name]
	if oka != okb {
		return false
	}
	return !oka || qa.Cmp(qb) == 0
}

// ResourcesDiffer reports whether want and have differ in CPU or memory
// requests or limits, the resources an in-place resize changes (the
// kubelet's comparison: 1m and 2m differ even when the cgroup values agree).
func ResourcesDiffer(want, have *v1.ResourceRequirements) bool {
	for _, name := range []v1.ResourceName{v1.ResourceCPU, v1.ResourceMemory} {
		if !QuantityEqual(want.Requests, have.Requests, name) || !QuantityEqual(want.Limits, have.Limits, name) {
			return true
		}
	}
	return false
}

// containerResources fills a container status's resources as the kubelet
// reports them: what is applied to a running instance (the spec's when
// unknown, and for one that is not running), and the spec's requests as
// allocated.
func containerResources(st *v1.ContainerStatus, c *v1.Container, cur *container.ContainerStatus) {
	if cur.Running() && cur.Resources != nil {
		st.Resources = cur.Resources.DeepCopy()
	} else {
		st.Resources = c.Resources.DeepCopy()
	}
	if c.Resources.Requests != nil {
		st.AllocatedResources = c.Resources.Requests.DeepCopy()
	}
}

// resizing reports whether a running app container or sidecar has other
// CPU or memory resources applied than its spec asks.
func resizing(pod *v1.Pod, ps *container.PodStatus) bool {
	check := func(c *v1.Container) bool {
		cs := ps.FindContainer(c.Name)
		return cs != nil && cs.Running() && cs.Resources != nil && ResourcesDiffer(&c.Resources, cs.Resources)
	}
	for i := range pod.Spec.Containers {
		if check(&pod.Spec.Containers[i]) {
			return true
		}
	}
	for i := range pod.Spec.InitContainers {
		if c := &pod.Spec.InitContainers[i]; container.IsSidecar(c) && check(c) {
			return true
		}
	}
	return false
}

// Resize is what the runtime manager knows of a pod's resize.
type Resize struct {
	// Infeasible says why the pod's new resources cannot fit the node ("" when they can).
	Infeasible string
	// Error is why the last attempt to apply them failed ("" when it did not).
	Error string
}

// SetResizeConditions adds the kubelet's resize conditions to st while a
// running container's resources differ from its spec: PodResizePending
// with reason Infeasible when the pod's new resources
// cannot fit the node (its containers keep what they have, which is then
// also what is reported allocated), else PodResizeInProgress — with reason
// Error and its message when applying them failed. Neither is there once
// the resize is done.
func SetResizeConditions(st *v1.PodStatus, pod *v1.Pod, ps *container.PodStatus, r Resize, now time.Time, old *v1.PodStatus) {
	var c v1.PodCondition
	switch {
	case !resizing(pod, ps):
		// Nothing to resize: a pod that never fitted is not a pending resize.
		return
	case r.Infeasible != "":
		c = v1.PodCondition{Type: v1.PodResizePending, Status: v1.ConditionTrue, Reason: v1.PodReasonInfeasible, Message: r.Infeasible}
		keepAllocated(st.ContainerStatuses, ps)
		keepAllocated(st.InitContainerStatuses, ps)
	default:
		c = v1.PodCondition{Type: v1.PodResizeInProgress, Status: v1.ConditionTrue}
		if r.Error != "" {
			c.Reason, c.Message = v1.PodReasonError, r.Error
		}
	}
	c.ObservedGeneration = pod.Generation
	c.LastTransitionTime = metav1.NewTime(now.Truncate(time.Second))
	if old != nil {
		for _, o := range old.Conditions {
			if o.Type == c.Type && o.Status == c.Status {
				c.LastTransitionTime = o.LastTransitionTime
			}
		}
	}
	st.Conditions = append(st.Conditions, c)
}

// keepAllocated reports a running container's applied requests as
// allocated: a resize that is not admitted allocates nothing new.
func keepAllocated(statuses []v1.ContainerStatus, ps *container.PodStatus) {
	for i := range statuses {
		cs := ps.FindContainer(statuses[i].Name)
		if cs == nil || !cs.Running() || cs.Resources == nil {
			continue
		}
		statuses[i].AllocatedResources = nil
		if cs.Resources.Requests != nil {
			statuses[i].AllocatedResources = cs.Resources.Requests.DeepCopy()
		}
	}
}
