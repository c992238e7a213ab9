// Package status computes a pod's v1.PodStatus from its spec and runtime
// status, and sends changes upstream as KubeEdge's edged does: a patch on
// <ns>/podpatch/<name> to metamanager.
package status

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/edgehive/edgehive/plugins/edged/container"
)

// Reason is why a container waits (from the runtime manager).
type Reason struct{ Reason, Message string }

func ts(nanos int64) metav1.Time {
	if nanos == 0 {
		return metav1.Time{}
	}
	return metav1.NewTime(time.Unix(0, nanos))
}

func terminated(cs *container.ContainerStatus) *v1.ContainerStateTerminated {
	return &v1.ContainerStateTerminated{ExitCode: cs.ExitCode, Reason: cs.Reason, Message: cs.Message,
		StartedAt: ts(cs.StartedAt), FinishedAt: ts(cs.FinishedAt), ContainerID: "containerd://" + cs.Id}
}

func containerStatuses(pod *v1.Pod, specs []v1.Container, ps *container.PodStatus, reasons map[string]Reason) []v1.ContainerStatus {
	var out []v1.ContainerStatus
	for _, c := range specs {
		st := v1.ContainerStatus{Name: c.Name, Image: c.Image}
		inst := ps.ContainersNamed(c.Name)
		if len(inst) == 0 {
			r := reasons[c.Name]
			if r.Reason == "" {
				// As the kubelet: a pod with init containers is
				// "PodInitializing" until its containers exist.
				r.Reason = "ContainerCreating"
				if len(pod.Spec.InitContainers) > 0 {
					r.Reason = "PodInitializing"
				}
			}
			st.State.Waiting = &v1.ContainerStateWaiting{Reason: r.Reason, Message: r.Message}
			out = append(out, st)
			continue
		}
		cur := inst[0]
		st.RestartCount = int32(cur.RestartCount)
		st.ContainerID = "containerd://" + cur.Id
		st.ImageID = cur.ImageRef
		if st.ImageID == "" {
			st.ImageID = cur.GetImage().GetImage()
		}
		containerResources(&st, &c, cur)
		started := false
		switch {
		case cur.Running():
			st.State.Running = &v1.ContainerStateRunning{StartedAt: ts(cur.StartedAt)}
			started = true
			st.Ready = true
		case cur.Exited():
			st.State.Terminated = terminated(cur)
			if r, ok := reasons[c.Name]; ok {
				st.LastTerminationState.Terminated = st.State.Terminated
				st.State = v1.ContainerState{Waiting: &v1.ContainerStateWaiting{Reason: r.Reason, Message: r.Message}}
			}
		default:
			st.State.Waiting = &v1.ContainerStateWaiting{Reason: "ContainerCreating"}
			if r, ok := reasons[c.Name]; ok {
				st.State.Waiting = &v1.ContainerStateWaiting{Reason: r.Reason, Message: r.Message}
			}
		}
		st.Started = &started
		if st.LastTerminationState.Terminated == nil && len(inst) > 1 && inst[1].Exited() {
			st.LastTerminationState.Terminated = terminated(inst[1])
		}
		out = append(out, st)
	}
	return out
}

// phase follows the kubelet's rules. Sidecars (init containers with
// restartPolicy Always) hold the pod Pending until they start, and are not
// counted once they stop: they are restarted or go with the pod.
func phase(pod *v1.Pod, init, app []v1.ContainerStatus) v1.PodPhase {
	var running, waiting, stopped, succeeded int
	for i, s := range init {
		if i < len(pod.Spec.InitContainers) && container.IsSidecar(&pod.Spec.InitContainers[i]) {
			switch {
			case s.State.Running != nil && (s.Started == nil || *s.Started):
				running++
			case s.State.Terminated != nil, s.LastTerminationState.Terminated != nil:
			default:
				return v1.PodPending
			}
			continue
		}
		switch {
		case s.State.Terminated != nil && s.State.Terminated.ExitCode == 0:
		case s.State.Terminated != nil && pod.Spec.RestartPolicy == v1.RestartPolicyNever:
			return v1.PodFailed
		default:
			return v1.PodPending
		}
	}
	for _, s := range app {
		switch {
		case s.State.Running != nil:
			running++
		case s.State.Terminated != nil:
			stopped++
			if s.State.Terminated.ExitCode == 0 {
				succeeded++
			}
		case s.State.Waiting != nil:
			if s.LastTerminationState.Terminated != nil {
				stopped++
				if s.LastTerminationState.Terminated.ExitCode == 0 {
					succeeded++
				}
			} else {
				waiting++
			}
		}
	}
	switch {
	case waiting > 0:
		return v1.PodPending
	case running > 0:
		return v1.PodRunning
	case stopped > 0:
		switch {
		case pod.Spec.RestartPolicy == v1.RestartPolicyAlways:
			return v1.PodRunning
		case stopped == succeeded:
			return v1.PodSucceeded
		case pod.Spec.RestartPolicy == v1.RestartPolicyNever:
			return v1.PodFailed
		}
		return v1.PodRunning
	}
	return v1.PodPending
}

func condMsg(t v1.PodConditionType, ok bool, reason, message string) v1.PodCondition {
	c := cond(t, ok, reason)
	if !ok {
		c.Message = message
	}
	return c
}

func cond(t v1.PodConditionType, ok bool, reason string) v1.PodCondition {
	s := v1.ConditionFalse
	if ok {
		s, reason = v1.ConditionTrue, ""
	}
	return v1.PodCondition{Type: t, Status: s, Reason: reason}
}

// Compute returns the pod's status. now stamps new condition transitions and
// the start time; old (may be nil) keeps earlier ones.
func Compute(pod *v1.Pod, ps *container.PodStatus, reasons map[string]Reason, now time.Time, old *v1.PodStatus) v1.PodStatus {
	return ComputeWith(pod, ps, reasons, now, old, nil)
}

// Adjust changes container statuses before the conditions are derived from
// them (the prober sets Ready and Started).
type Adjust func(pod *v1.Pod, statuses []v1.ContainerStatus)

// ComputeWith is Compute with the container statuses passed through adjust.
func ComputeWith(pod *v1.Pod, ps *container.PodStatus, reasons map[string]Reason, now time.Time, old *v1.PodStatus, adjust Adjust) v1.PodStatus {
	st := v1.PodStatus{QOSClass: QOSClass(pod)}
	st.InitContainerStatuses = containerStatuses(pod, pod.Spec.InitContainers, ps, reasons)
	st.ContainerStatuses = containerStatuses(pod, pod.Spec.Containers, ps, reasons)
	if len(pod.Spec.EphemeralContainers) > 0 {
		specs := make([]v1.Container, len(pod.Spec.EphemeralContainers))
		for i, ec := range pod.Spec.EphemeralContainers {
			specs[i] = v1.Container(ec.EphemeralContainerCommon)
		}
		st.EphemeralContainerStatuses = containerStatuses(pod, specs, ps, reasons)
		for i := range st.EphemeralContainerStatuses {
			s := &st.EphemeralContainerStatuses[i]
			s.Ready = false                              // never ready: they are not part of the service
			s.Resources, s.AllocatedResources = nil, nil // they have none
		}
	}
	// A regular init container is ready once it succeeded; a sidecar, as an
	// app container, when it runs and its probes pass.
	for i := range st.InitContainerStatuses {
		s := &st.InitContainerStatuses[i]
		if !container.IsSidecar(&pod.Spec.InitContainers[i]) {
			s.Ready = s.State.Terminated != nil && s.State.Terminated.ExitCode == 0
		}
	}
	if adjust != nil {
		adjust(pod, st.ContainerStatuses)
		adjust(pod, st.InitContainerStatuses)
	}
	st.Phase = phase(pod, st.InitContainerStatuses, st.ContainerStatuses)
	if ps != nil && len(ps.Sandboxes) > 0 && ps.Sandboxes[0].State == runtimeapi.PodSandboxState_SANDBOX_READY {
		if pod.Spec.HostNetwork {
			st.PodIP = pod.Status.HostIP
		} else {
			st.PodIP = ps.PodIP()
		}
	}
	if pod.Spec.HostNetwork && st.PodIP == "" && ps != nil && len(ps.Sandboxes) > 0 {
		st.PodIP = HostIP
	}
	if st.PodIP != "" {
		st.PodIPs = []v1.PodIP{{IP: st.PodIP}}
	}
	if HostIP != "" {
		st.HostIP = HostIP
		st.HostIPs = []v1.HostIP{{IP: HostIP}}
	}
	// The conditions name the containers holding them back, as the
	// kubelet's do ("containers with incomplete status: [a b]").
	var incomplete []string
	for i, s := range st.InitContainerStatuses {
		if container.IsSidecar(&pod.Spec.InitContainers[i]) {
			if s.State.Running == nil || (s.Started != nil && !*s.Started) {
				incomplete = append(incomplete, s.Name)
			}
		} else if s.State.Terminated == nil || s.State.Terminated.ExitCode != 0 {
			incomplete = append(incomplete, s.Name)
		}
	}
	// Once an app container has run, the pod stays initialized (a sidecar
	// restarting does not take that back).
	for _, s := range st.ContainerStatuses {
		if s.ContainerID != "" {
			incomplete = nil
		}
	}
	var unready []string
	for _, s := range st.ContainerStatuses {
		if !s.Ready {
			unready = append(unready, s.Name)
		}
	}
	for i, s := range st.InitContainerStatuses {
		if container.IsSidecar(&pod.Spec.InitContainers[i]) && !s.Ready {
			unready = append(unready, s.Name)
		}
	}
	ready := len(st.ContainerStatuses) > 0 && len(unready) == 0
	notReady, notReadyMsg := "ContainersNotReady", ""
	if len(unready) > 0 {
		notReadyMsg = fmt.Sprintf("containers with unready status: [%s]", strings.Join(unready, " "))
	}
	if st.Phase == v1.PodSucceeded || st.Phase == v1.PodFailed {
		notReady, notReadyMsg = "PodCompleted", ""
	}
	initialized := cond(v1.PodInitialized, len(incomplete) == 0, "ContainersNotInitialized")
	if len(incomplete) > 0 {
		initialized.Message = fmt.Sprintf("containers with incomplete status: [%s]", strings.Join(incomplete, " "))
	}
	if len(incomplete) == 0 || st.Phase == v1.PodSucceeded {
		initialized = cond(v1.PodInitialized, true, "")
	}
	st.Conditions = []v1.PodCondition{
		cond(v1.PodScheduled, true, ""),
		initialized,
		condMsg(v1.ContainersReady, ready, notReady, notReadyMsg),
		condMsg(v1.PodReady, ready, notReady, notReadyMsg),
	}
	// Which spec this status describes (the kubelet reports it since 1.34).
	st.ObservedGeneration = pod.Generation
	for i := range st.Conditions {
		c := &st.Conditions[i]
		c.ObservedGeneration = pod.Generation
		c.LastTransitionTime = metav1.NewTime(now.Truncate(time.Second))
		if old != nil {
			for _, o := range old.Conditions {
				if o.Type == c.Type && o.Status == c.Status {
					c.LastTransitionTime = o.LastTransitionTime
				}
			}
		}
	}
	st.StartTime = &metav1.Time{Time: now.Truncate(time.Second)}
	if old != nil && old.StartTime != nil {
		st.StartTime = old.StartTime
	}
	return st
}

// HostIP is reported as the node's address (set by the module).
var HostIP = ""

// Sender delivers a message built by the manager.
type Sender func(ctx context.Context, uid types.UID, namespace, name string, patch []byte) error

// Manager remembers the last status sent per pod and sends only changes,
// except after ResendAll.
type Manager struct {
	send Sender
	mu   sync.Mutex
	last map[types.UID]v1.PodStatus
	// resend: pods whose next status is sent even when unchanged.
	resend map[types.UID]bool
}

// NewManager returns a manager sending with send.
func NewManager(send Sender) *Manager {
	return &Manager{send: send, last: map[types.UID]v1.PodStatus{}, resend: map[types.UID]bool{}}
}

// ResendAll makes the next Set of every known pod send, changed or not: a
// status sent while the cloud was unreachable may have been lost on the way
// (and the cloud drops pods it no longer has when their status arrives).
func (m *Manager) ResendAll() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for uid := range m.last {
		m.resend[uid] = true
	}
}

// Get returns the last status sent for uid.
func (m *Manager) Get(uid types.UID) (v1.PodStatus, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.last[uid]
	return s, ok
}

// Patch is the body sent upstream: the pod's uid and its whole status, as a
// strategic merge patch. podIPs and hostIPs are merge lists keyed by IP, so
// they carry a replace directive: a pod whose sandbox was recreated gets its
// new IP instead of the old and new side by side (which the API refuses).
func Patch(uid types.UID, st v1.PodStatus) ([]byte, error) {
	return patchFrom(uid, st, nil)
}

// patchFrom is Patch after prev, the status sent before: a resize
// condition prev had and st has not (the resize ended) carries a delete
// directive, since conditions merge by type and would otherwise stay.
func patchFrom(uid types.UID, st v1.PodStatus, prev *v1.PodStatus) ([]byte, error) {
	raw, err := json.Marshal(st)
	if err != nil {
		return nil, fmt.Errorf("pod status: %w", err)
	}
	var status map[string]any
	if err := json.Unmarshal(raw, &status); err != nil {
		return nil, fmt.Errorf("pod status: %w", err)
	}
	for _, list := range []string{"podIPs", "hostIPs"} {
		if ips, ok := status[list].([]any); ok {
			status[list] = append(ips, map[string]any{"$patch": "replace"})
		}
	}
	if prev != nil {
		conds, _ := status["conditions"].([]any)
		for _, o := range prev.Conditions {
			if o.Type != v1.PodResizePending && o.Type != v1.PodResizeInProgress {
				continue
			}
			gone := true
			for _, c := range st.Conditions {
				if c.Type == o.Type {
					gone = false
				}
			}
			if gone {
				conds = append(conds, map[string]any{"type": string(o.Type), "$patch": "delete"})
			}
		}
		if len(conds) > 0 {
			status["conditions"] = conds
		}
	}
	return json.Marshal(map[string]any{"metadata": map[string]any{"uid": uid}, "status": status})
}

// Set sends st for pod unless it equals the last status sent (and no resend
// is due). It reports whether it sent.
func (m *Manager) Set(ctx context.Context, pod *v1.Pod, st v1.PodStatus) (bool, error) {
	m.mu.Lock()
	old, ok := m.last[pod.UID]
	resend := m.resend[pod.UID]
	m.mu.Unlock()
	if ok && !resend && equality.Semantic.DeepEqual(old, st) {
		return false, nil
	}
	var prev *v1.PodStatus
	if ok {
		prev = &old
	}
	body, err := patchFrom(pod.UID, st, prev)
	if err != nil {
		return false, err
	}
	if err := m.send(ctx, pod.UID, pod.Namespace, pod.Name, body); err != nil {
		return false, fmt.Errorf("send status of %s/%s: %w", pod.Namespace, pod.Name, err)
	}
	m.mu.Lock()
	m.last[pod.UID] = st
	delete(m.resend, pod.UID)
	m.mu.Unlock()
	return true, nil
}

// Forget drops pod uid.
func (m *Manager) Forget(uid types.UID) {
	m.mu.Lock()
	delete(m.last, uid)
	delete(m.resend, uid)
	m.mu.Unlock()
}

// QOSClass is the pod's quality of service class, by the kubelet's rules.
func QOSClass(pod *v1.Pod) v1.PodQOSClass {
	requests, limits := map[v1.ResourceName]int64{}, map[v1.ResourceName]int64{}
	guaranteed := true
	anySet := false
	all := append(append([]v1.Container(nil), pod.Spec.InitContainers...), pod.Spec.Containers...)
	for _, c := range all {
		for _, r := range []v1.ResourceName{v1.ResourceCPU, v1.ResourceMemory} {
			req, hasReq := c.Resources.Requests[r]
			lim, hasLim := c.Resources.Limits[r]
			if hasReq && !req.IsZero() {
				anySet = true
				requests[r] += req.MilliValue()
			}
			if hasLim && !lim.IsZero() {
				anySet = true
				limits[r] += lim.MilliValue()
			} else {
				guaranteed = false
			}
			if hasReq && hasLim && req.Cmp(lim) != 0 {
				guaranteed = false
			}
		}
	}
	switch {
	case !anySet:
		return v1.PodQOSBestEffort
	case guaranteed && len(limits) == 2:
		return v1.PodQOSGuaranteed
	}
	return v1.PodQOSBurstable
}
