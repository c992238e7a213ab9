// Package podmanager keeps the pods edged is asked to run: by UID and by full
// name (name_namespace), as the kubelet's pod manager does.
package podmanager

import (
	"sort"
	"sync"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
)

// Manager is safe for concurrent use. Pods handed in are not copied: callers
// must not modify them afterwards.
type Manager struct {
	mu     sync.RWMutex
	byUID  map[types.UID]*v1.Pod
	byName map[string]*v1.Pod
}

// New returns an empty manager.
func New() *Manager {
	return &Manager{byUID: map[types.UID]*v1.Pod{}, byName: map[string]*v1.Pod{}}
}

// FullName is name_namespace.
func FullName(pod *v1.Pod) string { return pod.Name + "_" + pod.Namespace }

// Upsert adds or replaces pod. A different pod (other UID) that had the same
// name is dropped and returned, so its containers can be killed.
func (m *Manager) Upsert(pod *v1.Pod) (replaced *v1.Pod) {
	m.mu.Lock()
	defer m.mu.Unlock()
	name := FullName(pod)
	if old, ok := m.byName[name]; ok && old.UID != pod.UID {
		delete(m.byUID, old.UID)
		replaced = old
	}
	if old, ok := m.byUID[pod.UID]; ok && FullName(old) != name {
		delete(m.byName, FullName(old))
	}
	m.byUID[pod.UID] = pod
	m.byName[name] = pod
	return replaced
}

// Delete removes the pod with uid; it returns the pod removed, or nil.
func (m *Manager) Delete(uid types.UID) *v1.Pod {
	m.mu.Lock()
	defer m.mu.Unlock()
	pod, ok := m.byUID[uid]
	if !ok {
		return nil
	}
	delete(m.byUID, uid)
	if m.byName[FullName(pod)] == pod {
		delete(m.byName, FullName(pod))
	}
	return pod
}

// GetByUID returns the pod with uid.
func (m *Manager) GetByUID(uid types.UID) (*v1.Pod, bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	p, ok := m.byUID[uid]
	return p, ok
}

// GetByName returns the pod namespace/name.
func (m *Manager) GetByName(namespace, name string) (*v1.Pod, bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	p, ok := m.byName[name+"_"+namespace]
	return p, ok
}

// Pods returns every pod, ordered by full name.
func (m *Manager) Pods() []*v1.Pod {
	m.mu.RLock()
	defer m.mu.RUnlock()
	out := make([]*v1.Pod, 0, len(m.byUID))
	for _, p := range m.byUID {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return FullName(out[i]) < FullName(out[j]) })
	return out
}

// Len is the number of pods.
func (m *Manager) Len() int {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return len(m.byUID)
}
