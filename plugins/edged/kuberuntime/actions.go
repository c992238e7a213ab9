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
	InitFailed        bool  // an init container failed under restartPolicy Never: the pod fails
	ContainersToStart []int // indexes in pod.Spec.Containers
	// EphemeralToStart: indexes in pod.Spec.EphemeralContainers never run yet
	// (ephemeral containers are started once and never restarted).
	EphemeralToStart []int
	ContainersToKill map[string]string // container id → reason
	// KeepKilled: killed containers to stop but not remove (probe failures),
	// so their terminated state stays as lastState.
	KeepKilled map[string]bool
}

// HashContainer is the spec hash written on a container; a change restarts it.
func HashContainer(c *v1.Container) string {
	b, _ := json.Marshal(c)
	h := fnv.New32a()
	h.Write(b)
	return fmt.Sprintf("%x", h.Sum32())
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

// initDone reports whether every init container succeeded; otherwise it
// returns the next init container to run and whether the pod failed.
func initProgress(pod *v1.Pod, ps *container.PodStatus) (done bool, next *v1.Container, failed bool) {
	for i := range pod.Spec.InitContainers {
		c := &pod.Spec.InitContainers[i]
		cs := ps.FindContainer(c.Name)
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

// Unhealthy says whether a running container must be killed because a probe
// failed (liveness or startup), and why. Set by the prober.
type Unhealthy func(pod *v1.Pod, containerName, containerID string) (string, bool)

// computePodActions compares the pod's spec with what runs.
func computePodActions(pod *v1.Pod, ps *container.PodStatus) podActions {
	return computePodActionsProbed(pod, ps, nil)
}

func computePodActionsProbed(pod *v1.Pod, ps *container.PodStatus, unhealthy Unhealthy) podActions {
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

	done, next, failed := initProgress(pod, ps)
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
		if cs.Hash != "" && cs.Hash != HashContainer(c) {
			a.ContainersToKill[cs.Id] = fmt.Sprintf("container %s definition changed", c.Name)
			a.ContainersToStart = append(a.ContainersToStart, i)
			continue
		}
		if unhealthy != nil {
			if why, bad := unhealthy(pod, c.Name, cs.Id); bad {
				a.ContainersToKill[cs.Id] = why
				if a.KeepKilled == nil {
					a.KeepKilled = map[string]bool{}
				}
				a.KeepKilled[cs.Id] = true
				if pod.Spec.RestartPolicy != v1.RestartPolicyNever {
					a.ContainersToStart = append(a.ContainersToStart, i)
				}
				continue
			}
		}
		keep++
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
		a.KillPod = true
		return a
	}
	for i := range pod.Spec.EphemeralContainers {
		if ps.FindContainer(pod.Spec.EphemeralContainers[i].Name) == nil {
			a.EphemeralToStart = append(a.EphemeralToStart, i)
		}
	}
	return a
}
