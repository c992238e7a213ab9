package kuberuntime

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/types"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/edgehive/edgehive/plugins/edged/container"
	"github.com/edgehive/edgehive/plugins/edged/status"
)

// In-place pod resize (the kubelet's InPlacePodVerticalScaling): a change of
// a running container's CPU or memory requests or limits is applied with CRI
// UpdateContainerResources, or by restarting the container when its
// resizePolicy for a changed resource says RestartContainer. What was
// applied to each container instance is recorded — at creation in an
// annotation, after a resize in <pod dir>/resources.json — so the status
// reports it and an edged restart neither loses nor repeats it.

// resourcesFile holds the resources applied by resizes, by container ID.
const resourcesFile = "resources.json"

// resizeTarget is a running container whose resources change in place.
type resizeTarget struct {
	id   string
	c    *v1.Container
	have *v1.ResourceRequirements // what it runs with; nil when unknown
}

// statsLister reads containers' usage (cri.Client has it).
type statsLister interface {
	ListContainerStats(ctx context.Context, filter *runtimeapi.ContainerStatsFilter) ([]*runtimeapi.ContainerStats, error)
}

// resourceChanged reports whether the requests or limits of name differ.
func resourceChanged(want, have *v1.ResourceRequirements, name v1.ResourceName) bool {
	return !status.QuantityEqual(want.Requests, have.Requests, name) || !status.QuantityEqual(want.Limits, have.Limits, name)
}

// resizeRestarts says whether applying want over have needs a restart:
// a changed resource whose resizePolicy is RestartContainer.
func resizeRestarts(c *v1.Container, have *v1.ResourceRequirements) bool {
	for _, name := range []v1.ResourceName{v1.ResourceCPU, v1.ResourceMemory} {
		if !resourceChanged(&c.Resources, have, name) {
			continue
		}
		for _, p := range c.ResizePolicy {
			if p.ResourceName == name && p.RestartPolicy == v1.RestartContainer {
				return true
			}
		}
	}
	return false
}

// runtimeMatches reports whether the runtime's cgroup values of a container
// are the ones c's resources give (used when edged has no record of what
// was applied: containers created by an older edged).
func runtimeMatches(c *v1.Container, st *runtimeapi.ContainerStatus) bool {
	got := st.GetResources().GetLinux()
	if got == nil {
		return true // the runtime does not say: nothing to compare
	}
	want := linuxResources(c)
	return got.CpuShares == want.CpuShares && got.CpuQuota == want.CpuQuota && got.MemoryLimitInBytes == want.MemoryLimitInBytes
}

// needsResize reports whether the running instance cs of c has other
// resources than c's spec.
func needsResize(c *v1.Container, cs *container.ContainerStatus) bool {
	if cs.Resources == nil {
		return !runtimeMatches(c, cs.ContainerStatus)
	}
	return status.ResourcesDiffer(&c.Resources, cs.Resources)
}

// podRequests is what the pod asks of the node: its app containers and
// sidecars together, or a regular init container alone when it asks more.
func podRequests(pod *v1.Pod) v1.ResourceList {
	sum := v1.ResourceList{}
	add := func(l v1.ResourceList) {
		for _, name := range []v1.ResourceName{v1.ResourceCPU, v1.ResourceMemory} {
			if q, ok := l[name]; ok {
				cur := sum[name]
				cur.Add(q)
				sum[name] = cur
			}
		}
	}
	for i := range pod.Spec.Containers {
		add(pod.Spec.Containers[i].Resources.Requests)
	}
	for i := range pod.Spec.InitContainers {
		if container.IsSidecar(&pod.Spec.InitContainers[i]) {
			add(pod.Spec.InitContainers[i].Resources.Requests)
		}
	}
	for i := range pod.Spec.InitContainers {
		c := &pod.Spec.InitContainers[i]
		if container.IsSidecar(c) {
			continue
		}
		for name, q := range c.Resources.Requests {
			if cur, ok := sum[name]; (name == v1.ResourceCPU || name == v1.ResourceMemory) && (!ok || q.Cmp(cur) > 0) {
				sum[name] = q.DeepCopy()
			}
		}
	}
	return sum
}

// ResizeInfeasible says why the pod's resources can never fit this node
// (its requests exceed the node's allocatable CPU or memory), or "".
func (m *Manager) ResizeInfeasible(pod *v1.Pod) string {
	req := podRequests(pod)
	check := func(name v1.ResourceName, capacity int64, value func(resource.Quantity) int64) string {
		q, ok := req[name]
		if !ok || capacity <= 0 {
			return ""
		}
		if v := value(q); v > capacity {
			return fmt.Sprintf("Node didn't have enough capacity: %s, requested: %d, capacity: %d", name, v, capacity)
		}
		return ""
	}
	// NodeCPU counts cores; requests compare in millicores.
	if msg := check(v1.ResourceCPU, m.cfg.NodeCPU*1000, func(q resource.Quantity) int64 { return q.MilliValue() }); msg != "" {
		return msg
	}
	return check(v1.ResourceMemory, m.cfg.NodeMemory, func(q resource.Quantity) int64 { return q.Value() })
}

// planResize adds to a the running app containers and sidecars whose
// resources changed: restarted (killed and started again) when their
// resizePolicy asks for it, updated in place otherwise. An infeasible
// resize is left pending: nothing changes.
func (m *Manager) planResize(pod *v1.Pod, ps *container.PodStatus, a *podActions) {
	if a.KillPod || a.CreateSandbox || a.NextInitContainer != nil || m.ResizeInfeasible(pod) != "" {
		return
	}
	check := func(c *v1.Container, restart func()) {
		cs := ps.FindContainer(c.Name)
		if cs == nil || !cs.Running() {
			return
		}
		if _, killed := a.ContainersToKill[cs.Id]; killed || !needsResize(c, cs) {
			return
		}
		if cs.Resources != nil && resizeRestarts(c, cs.Resources) {
			a.kill(cs.Id, fmt.Sprintf("container %s resize requires a restart", c.Name))
			restart()
			return
		}
		a.ContainersToUpdate = append(a.ContainersToUpdate, resizeTarget{id: cs.Id, c: c, have: cs.Resources})
	}
	for i := range pod.Spec.Containers {
		check(&pod.Spec.Containers[i], func() { a.ContainersToStart = append(a.ContainersToStart, i) })
	}
	for i := range pod.Spec.InitContainers {
		if c := &pod.Spec.InitContainers[i]; container.IsSidecar(c) {
			check(c, func() { a.SidecarsToStart = append(a.SidecarsToStart, i) })
		}
	}
}

// resizeContainer applies c's resources to the running container id and
// records them.
func (m *Manager) resizeContainer(ctx context.Context, pod *v1.Pod, ps *container.PodStatus, t resizeTarget) error {
	if err := m.checkMemoryDecrease(ctx, t); err != nil {
		return err
	}
	r := linuxResources(t.c)
	if err := m.rt.UpdateContainerResources(ctx, t.id, r); err != nil {
		return fmt.Errorf("resize container %s: %w", t.c.Name, err)
	}
	if err := m.recordApplied(pod.UID, ps, t.id, t.c.Resources); err != nil {
		return fmt.Errorf("record resources of container %s: %w", t.c.Name, err)
	}
	m.log.Info("container resized", "pod", pod.Namespace+"/"+pod.Name, "container", t.c.Name,
		"cpuShares", r.CpuShares, "cpuQuota", r.CpuQuota, "memoryLimit", r.MemoryLimitInBytes)
	return nil
}

// checkMemoryDecrease refuses, as the kubelet does, a memory limit that is
// added or lowered to at most what the container uses now: the kernel would
// reclaim or OOM-kill instead. A runtime without stats is not checked.
func (m *Manager) checkMemoryDecrease(ctx context.Context, t resizeTarget) error {
	want := t.c.Resources.Limits.Memory().Value()
	if want == 0 {
		return nil
	}
	if t.have != nil {
		if cur := t.have.Limits.Memory().Value(); cur != 0 && want >= cur {
			return nil
		}
	}
	sl, ok := m.rt.(statsLister)
	if !ok {
		return nil
	}
	stats, err := sl.ListContainerStats(ctx, &runtimeapi.ContainerStatsFilter{Id: t.id})
	if err != nil || len(stats) == 0 || stats[0].GetMemory().GetUsageBytes() == nil {
		return fmt.Errorf("cannot decrease memory limits: missing container %q memory usage (%v)", t.c.Name, err)
	}
	if usage := stats[0].GetMemory().GetUsageBytes().GetValue(); usage >= uint64(want) {
		return fmt.Errorf("cannot decrease memory limits: attempting to set container %q memory limit (%d) below current usage (%d)", t.c.Name, want, usage)
	}
	return nil
}

// ResizeStatus is what the pod's status says of its resize: why it cannot
// fit the node, or why applying it failed last.
func (m *Manager) ResizeStatus(pod *v1.Pod) status.Resize {
	m.mu.Lock()
	msg := m.resizeErr[pod.UID]
	m.mu.Unlock()
	return status.Resize{Infeasible: m.ResizeInfeasible(pod), Error: msg}
}

// setResizeError remembers why a resize failed ("" clears it).
func (m *Manager) setResizeError(uid types.UID, msg string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if msg == "" {
		delete(m.resizeErr, uid)
		return
	}
	if m.resizeErr == nil {
		m.resizeErr = map[types.UID]string{}
	}
	m.resizeErr[uid] = msg
}

// appliedPath is the pod's record of resized containers ("" without a pod
// directory: unit tests keep it in memory only).
func (m *Manager) appliedPath(uid types.UID) string {
	if m.cfg.PodLogsRoot == "" {
		return ""
	}
	return filepath.Join(m.cfg.PodLogsRoot, string(uid), resourcesFile)
}

// appliedLocked returns the pod's record, read from its file the first
// time. m.mu held.
func (m *Manager) appliedLocked(uid types.UID) map[string]v1.ResourceRequirements {
	if rec, ok := m.applied[uid]; ok {
		return rec
	}
	rec := map[string]v1.ResourceRequirements{}
	if p := m.appliedPath(uid); p != "" {
		data, err := os.ReadFile(p)
		switch {
		case err == nil:
			if err := json.Unmarshal(data, &rec); err != nil {
				m.log.Warn("unreadable record of resized containers; ignored", "path", p, "error", err)
				rec = map[string]v1.ResourceRequirements{}
			}
		case !errors.Is(err, os.ErrNotExist):
			m.log.Warn("record of resized containers", "path", p, "error", err)
		}
	}
	if m.applied == nil {
		m.applied = map[types.UID]map[string]v1.ResourceRequirements{}
	}
	m.applied[uid] = rec
	return rec
}

// recordApplied remembers res as applied to container id, dropping
// containers the pod no longer has, and writes the record.
func (m *Manager) recordApplied(uid types.UID, ps *container.PodStatus, id string, res v1.ResourceRequirements) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	rec := m.appliedLocked(uid)
	rec[id] = *res.DeepCopy()
	for k := range rec {
		if k != id && !hasContainer(ps, k) {
			delete(rec, k)
		}
	}
	p := m.appliedPath(uid)
	if p == "" {
		return nil
	}
	data, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, p)
}

func hasContainer(ps *container.PodStatus, id string) bool {
	for _, cs := range ps.KeepContainers() {
		if cs.Id == id {
			return true
		}
	}
	return false
}

// fillApplied sets each container's applied resources: the resize record,
// or the annotation written at its creation.
func (m *Manager) fillApplied(ps *container.PodStatus) {
	m.mu.Lock()
	rec := map[string]*v1.ResourceRequirements{}
	for id, r := range m.appliedLocked(ps.ID) {
		rec[id] = r.DeepCopy()
	}
	m.mu.Unlock()
	for _, cs := range ps.Containers {
		if r, ok := rec[cs.Id]; ok {
			cs.Resources = r
			continue
		}
		raw := cs.GetAnnotations()[container.AnnotationResources]
		if raw == "" {
			continue
		}
		var r v1.ResourceRequirements
		if err := json.Unmarshal([]byte(raw), &r); err != nil {
			m.log.Debug("container resources annotation", "id", cs.Id, "error", err)
			continue
		}
		cs.Resources = &r
	}
}

// resourcesAnnotation is c's resources as written on a new container.
func resourcesAnnotation(c *v1.Container) string {
	b, err := json.Marshal(v1.ResourceRequirements{Limits: c.Resources.Limits, Requests: c.Resources.Requests})
	if err != nil {
		return ""
	}
	return string(b)
}
