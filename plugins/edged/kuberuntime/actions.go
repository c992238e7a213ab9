// Package kuberuntime is edged's runtime manager over CRI: SyncPod in the
// kubelet's six steps, startContainer, KillPod, and the restart back-off.
package kuberuntime

import (
	"encoding/json"
	"fmt"
	"hash/fnv"

	v1 "k8s.io/api/core/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/edgehive/edgehive/plugins/edged/container"
)

// podActions is what SyncPod does for a pod (kubelet's podActions).
type podActions struct {
	KillPod           bool   // kill the sandbox and every container
	CreateSandbox     bool   // create a new sandbox (after KillPod, if any)
	SandboxID         string // the sandbox to use when not creating one
	Attempt           uint32 // attempt number of a new sandbox
	NextInitContainer *v1.Container
	// SidecarsToStart: indexes in pod.Spec.InitContainers of sidecars to
	// (re)start beside the app containers once the pod is initialized.
	SidecarsToStart   []int
	InitFailed        bool  // an init container failed under restartPolicy Never: the pod fails
	ContainersToStart []int // indexes in pod.Spec.Containers
	// EphemeralToStart: indexes in pod.Spec.EphemeralContainers never run yet
	// (ephemeral containers are started once and never restarted).
	EphemeralToStart []int
	ContainersToKill map[string]string // container id → reason
	// KeepKilled: killed containers to stop but not remove (probe failures),
	// so their terminated state stays as lastState.
	KeepKilled map[string]bool
	// ContainersToUpdate: running containers resized in place.
	ContainersToUpdate []resizeTarget
}

// HashContainer is the spec hash written on a container; a change restarts
// it. Resources are left out, as the kubelet does: a resize is applied in
// place (or restarts the container only by its resizePolicy).
func HashContainer(c *v1.Container) string {
	cc := *c
	cc.Resources = v1.ResourceRequirements{}
	return hashOf(&cc)
}

// legacyHash is the hash edged wrote before resources were left out: a
// container created by an older edged is adopted, not restarted.
func legacyHash(c *v1.Container) string { return hashOf(c) }

func hashOf(c *v1.Container) string {
	b, _ := json.Marshal(c)
	h := fnv.New32a()
	h.Write(b)
	return fmt.Sprintf("%x", h.Sum32())
}

// specChanged reports whether a container's hash is not its spec's.
func specChanged(cs *container.ContainerStatus, c *v1.Container) bool {
	return cs.Hash != "" && cs.Hash != HashContainer(c) && cs.Hash != legacyHash(c)
}

// sandboxChanged says whether pod needs a new sandbox, the attempt of it, and
// the id of the sandbox to keep otherwise.
func sandboxChanged(pod *v1.Pod, ps *container.PodStatus) (bool, uint32, string) {
	if ps == nil || len(ps.Sandboxes) == 0 {
		return true, 0, ""
	}
	newest := ps.Sandboxes[0]
	next := newest.GetMetadata().GetAttempt() + 1
	ready := 0
	for _, s := range ps.Sandboxes {
		if s.State == runtimeapi.PodSandboxState_SANDBOX_READY {
			ready++
		}
	}
	if ready > 1 || newest.State != runtimeapi.PodSandboxState_SANDBOX_READY {
		return true, next, newest.Id
	}
	hostNet := newest.GetLinux().GetNamespaces().GetOptions().GetNetwork() == runtimeapi.NamespaceMode_NODE
	if hostNet != pod.Spec.HostNetwork {
		return true, next, newest.Id
	}
	if !pod.Spec.HostNetwork && newest.GetNetwork().GetIp() == "" {
		return true, next, newest.Id
	}
	return false, newest.GetMetadata().GetAttempt(), newest.Id
}

// shouldRestart says whether a container that is not running should be started again.
func shouldRestart(pod *v1.Pod, cs *container.ContainerStatus) bool {
	if cs == nil || !cs.Exited() {
		return true // never ran (or only created)
	}
	switch pod.Spec.RestartPolicy {
	case v1.RestartPolicyNever:
		return false
	case v1.RestartPolicyOnFailure:
		return cs.ExitCode != 0
	}
	return true
}

// Probes answers what only the prober knows about a running container.
type Probes interface {
	// Unhealthy says whether the container must be killed (a liveness or
	// startup probe failed), and why.
	Unhealthy(pod *v1.Pod, containerName, containerID string) (string, bool)
	// Started says whether the container passed its startup probe (true
	// when it has none).
	Started(pod *v1.Pod, containerName, containerID string) bool
}

// initProgress reports whether the pod is initialized: every regular init
// container succeeded and every sidecar started. Otherwise it returns the
// next init container to (re)start, if any, and whether the pod failed.
// A pod whose app containers were ever created stays initialized (the
// kubelet's rule), so a sidecar exiting later does not stop them.
func initProgress(pod *v1.Pod, ps *container.PodStatus, started func(c *v1.Container, cs *container.ContainerStatus) bool) (done bool, next *v1.Container, failed bool) {
	for i := range pod.Spec.Containers {
		if ps.FindContainer(pod.Spec.Containers[i].Name) != nil {
			return true, nil, false
		}
	}
	for i := range pod.Spec.InitContainers {
		c := &pod.Spec.InitContainers[i]
		cs := ps.FindContainer(c.Name)
		if container.IsSidecar(c) {
			switch {
			case cs == nil || !cs.Running():
				return false, c, false // start it, or restart it whatever the pod's restartPolicy
			case !started(c, cs):
				return false, nil, false // the next one waits for its startup probe
			}
			continue
		}
		switch {
		case cs == nil:
			return false, c, false
		case cs.Running():
			return false, nil, false
		case cs.Exited() && cs.ExitCode == 0:
			continue
		case cs.Exited():
			if pod.Spec.RestartPolicy == v1.RestartPolicyNever {
				return false, nil, true
			}
			return false, c, false
		default: // created, unknown
			return false, c, false
		}
	}
	return true, nil, false
}

// computePodActions compares the pod's spec with what runs.
func computePodActions(pod *v1.Pod, ps *container.PodStatus) podActions {
	return computePodActionsProbed(pod, ps, nil)
}

func computePodActionsProbed(pod *v1.Pod, ps *container.PodStatus, probes Probes) podActions {
	started := func(c *v1.Container, cs *container.ContainerStatus) bool {
		return c.StartupProbe == nil || probes == nil || probes.Started(pod, c.Name, cs.Id)
	}
	unhealthy := func(name, id string) (string, bool) {
		if probes == nil {
			return "", false
		}
		return probes.Unhealthy(pod, name, id)
	}
	create, attempt, sandboxID := sandboxChanged(pod, ps)
	a := podActions{KillPod: create, CreateSandbox: create, Attempt: attempt, SandboxID: sandboxID, ContainersToKill: map[string]string{}}
	if create {
		// A pod that never restarts and already ran is done: no new sandbox.
		if pod.Spec.RestartPolicy == v1.RestartPolicyNever && attempt != 0 && ps != nil && len(ps.Containers) != 0 {
			a.CreateSandbox = false
			return a
		}
		if len(pod.Spec.InitContainers) != 0 {
			a.NextInitContainer = &pod.Spec.InitContainers[0]
			return a
		}
		for i := range pod.Spec.Containers {
			cs := ps.FindContainer(pod.Spec.Containers[i].Name)
			if cs != nil && cs.Exited() && !shouldRestart(pod, cs) {
				continue
			}
			a.ContainersToStart = append(a.ContainersToStart, i)
		}
		if len(a.ContainersToStart) == 0 {
			a.CreateSandbox = false // everything ran to its end
		}
		return a
	}

	done, next, failed := initProgress(pod, ps, started)
	if failed {
		a.InitFailed = true
		a.KillPod = true
		return a
	}
	if !done {
		a.NextInitContainer = next
		// App containers do not run before the init containers end.
		return a
	}
	keep := 0
	for i := range pod.Spec.Containers {
		c := &pod.Spec.Containers[i]
		cs := ps.FindContainer(c.Name)
		if cs == nil || !cs.Running() {
			if shouldRestart(pod, cs) {
				a.ContainersToStart = append(a.ContainersToStart, i)
			}
			continue
		}
		if specChanged(cs, c) {
			a.ContainersToKill[cs.Id] = fmt.Sprintf("container %s definition changed", c.Name)
			a.ContainersToStart = append(a.ContainersToStart, i)
			continue
		}
		if why, bad := unhealthy(c.Name, cs.Id); bad {
			a.kill(cs.Id, why)
			if pod.Spec.RestartPolicy != v1.RestartPolicyNever {
				a.ContainersToStart = append(a.ContainersToStart, i)
			}
			continue
		}
		keep++
	}
	// Sidecars run as long as the app containers do, restarted whatever the
	// pod's restartPolicy.
	for i := range pod.Spec.InitContainers {
		c := &pod.Spec.InitContainers[i]
		if !container.IsSidecar(c) {
			continue
		}
		cs := ps.FindContainer(c.Name)
		switch {
		case cs == nil || !cs.Running():
			a.SidecarsToStart = append(a.SidecarsToStart, i)
		case specChanged(cs, c):
			a.ContainersToKill[cs.Id] = fmt.Sprintf("container %s definition changed", c.Name)
			a.SidecarsToStart = append(a.SidecarsToStart, i)
		default:
			if why, bad := unhealthy(c.Name, cs.Id); bad {
				a.kill(cs.Id, why)
				a.SidecarsToStart = append(a.SidecarsToStart, i)
			}
		}
	}
	// Running containers the spec no longer has.
	for _, cs := range ps.Containers {
		if !cs.Running() {
			continue
		}
		if !container.InSpec(pod, cs.Name) {
			a.ContainersToKill[cs.Id] = fmt.Sprintf("container %s is not in the pod spec", cs.Name)
		}
	}
	if keep == 0 && len(a.ContainersToStart) == 0 {
		// Every app container ended for good: the sidecars go too.
		a.KillPod = true
		a.SidecarsToStart = nil
		return a
	}
	for i := range pod.Spec.EphemeralContainers {
		if ps.FindContainer(pod.Spec.EphemeralContainers[i].Name) == nil {
			a.EphemeralToStart = append(a.EphemeralToStart, i)
		}
	}
	return a
}

// kill stops a container whose probe failed but keeps it, so its terminated
// state stays as lastState.
func (a *podActions) kill(id, why string) {
	a.ContainersToKill[id] = why
	if a.KeepKilled == nil {
		a.KeepKilled = map[string]bool{}
	}
	a.KeepKilled[id] = true
}
