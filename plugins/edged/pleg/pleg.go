// Package pleg is edged's pod lifecycle event generator: it relists the
// runtime's sandboxes and containers on a tick, compares each relist with the
// one before, sends an event per change and per pod UID, and keeps the latest
// runtime status of every pod in a cache (kubelet's GenericPLEG).
package pleg

import (
	"context"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"k8s.io/apimachinery/pkg/types"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/utils/clock"

	"github.com/edgehive/edgehive/plugins/edged/container"
	"github.com/edgehive/edgehive/plugins/edged/cri"
)

// EventType says what changed.
type EventType string

// Event types.
const (
	ContainerStarted EventType = "ContainerStarted"
	ContainerDied    EventType = "ContainerDied"
	ContainerRemoved EventType = "ContainerRemoved"
)

// Event is one change of one container (or sandbox) of pod ID.
type Event struct {
	ID   types.UID
	Type EventType
	Data string // the container or sandbox id
}

// RelistPeriod is how often the runtime is relisted.
const RelistPeriod = time.Second

// ChannelSize is the capacity of the event channel; events beyond it are dropped (the periodic sync catches up).
const ChannelSize = 1000

// state of a container in one relist.
type state int

const (
	stateNone state = iota
	stateRunning
	stateExited
	stateUnknown
)

// PodInfo identifies a pod seen in the runtime.
type PodInfo struct {
	UID       types.UID
	Name      string
	Namespace string
	Running   bool // a ready sandbox or a running container
}

// Cached is a pod's runtime status and when it was read.
type Cached struct {
	Status *container.PodStatus
	Err    error
	Time   time.Time
}

// PLEG relists the runtime. Create it with New.
type PLEG struct {
	rt     cri.Runtime
	clock  clock.WithTicker
	log    hclog.Logger
	events chan *Event

	mu       sync.Mutex
	old      map[types.UID]map[string]state // per pod: id → state, of the previous relist
	pods     map[types.UID]PodInfo
	cache    map[types.UID]*Cached
	relisted time.Time
}

// New returns a PLEG over rt.
func New(rt cri.Runtime, clk clock.WithTicker, log hclog.Logger) *PLEG {
	if log == nil {
		log = hclog.NewNullLogger()
	}
	return &PLEG{rt: rt, clock: clk, log: log, events: make(chan *Event, ChannelSize),
		old: map[types.UID]map[string]state{}, pods: map[types.UID]PodInfo{}, cache: map[types.UID]*Cached{}}
}

// Watch is the event channel.
func (p *PLEG) Watch() <-chan *Event { return p.events }

// Run relists every RelistPeriod until ctx is done.
func (p *PLEG) Run(ctx context.Context) {
	t := p.clock.NewTicker(RelistPeriod)
	defer t.Stop()
	for {
		p.Relist(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C():
		}
	}
}

func sandboxState(s runtimeapi.PodSandboxState) state {
	if s == runtimeapi.PodSandboxState_SANDBOX_READY {
		return stateRunning
	}
	return stateExited
}

func containerState(s runtimeapi.ContainerState) state {
	switch s {
	case runtimeapi.ContainerState_CONTAINER_RUNNING:
		return stateRunning
	case runtimeapi.ContainerState_CONTAINER_EXITED:
		return stateExited
	case runtimeapi.ContainerState_CONTAINER_CREATED:
		return stateNone
	}
	return stateUnknown
}

// Relist lists the runtime once, sends the events and refreshes the cache of
// the pods that changed. It returns false when the runtime could not be listed.
func (p *PLEG) Relist(ctx context.Context) bool {
	now := p.clock.Now()
	sandboxes, err := p.rt.ListPodSandbox(ctx, nil)
	if err != nil {
		p.log.Warn("relist: list sandboxes", "error", err)
		return false
	}
	containers, err := p.rt.ListContainers(ctx, nil)
	if err != nil {
		p.log.Warn("relist: list containers", "error", err)
		return false
	}
	cur := map[types.UID]map[string]state{}
	pods := map[types.UID]PodInfo{}
	add := func(labels map[string]string, id string, st state) {
		uid := types.UID(labels[container.LabelPodUID])
		if uid == "" {
			return // not ours
		}
		if cur[uid] == nil {
			cur[uid] = map[string]state{}
		}
		cur[uid][id] = st
		info := pods[uid]
		info.UID, info.Name, info.Namespace = uid, labels[container.LabelPodName], labels[container.LabelPodNamespace]
		info.Running = info.Running || st == stateRunning
		pods[uid] = info
	}
	for _, s := range sandboxes {
		add(s.Labels, s.Id, sandboxState(s.State))
	}
	for _, c := range containers {
		add(c.Labels, c.Id, containerState(c.State))
	}

	p.mu.Lock()
	old := p.old
	p.mu.Unlock()

	var events []*Event
	changed := map[types.UID]bool{}
	for uid, ids := range cur {
		for id, st := range ids {
			for _, e := range diff(old[uid][id], st) {
				events = append(events, &Event{ID: uid, Type: e, Data: id})
				changed[uid] = true
			}
		}
	}
	for uid, ids := range old {
		for id, st := range ids {
			if _, ok := cur[uid][id]; !ok {
				for _, e := range diff(st, stateNone) {
					events = append(events, &Event{ID: uid, Type: e, Data: id})
				}
				events = append(events, &Event{ID: uid, Type: ContainerRemoved, Data: id})
				changed[uid] = true
			}
		}
	}

	// Refresh the cache of changed pods, and of pods never cached.
	fresh := map[types.UID]*Cached{}
	for uid, info := range pods {
		p.mu.Lock()
		_, cached := p.cache[uid]
		p.mu.Unlock()
		if !changed[uid] && cached {
			continue
		}
		st, err := container.GetPodStatus(ctx, p.rt, uid, info.Name, info.Namespace)
		fresh[uid] = &Cached{Status: st, Err: err, Time: now}
	}

	p.mu.Lock()
	p.old = cur
	p.pods = pods
	for uid, c := range fresh {
		p.cache[uid] = c
	}
	for uid := range p.cache {
		if _, ok := pods[uid]; !ok {
			delete(p.cache, uid)
		}
	}
	p.relisted = now
	p.mu.Unlock()

	for _, e := range events {
		select {
		case p.events <- e:
		default:
			p.log.Warn("event channel full, event dropped", "pod", e.ID, "event", e.Type)
		}
	}
	return true
}

// diff returns the events for a container going from o to n.
func diff(o, n state) []EventType {
	if o == n {
		return nil
	}
	switch n {
	case stateRunning:
		return []EventType{ContainerStarted}
	case stateExited:
		if o == stateRunning || o == stateNone {
			return []EventType{ContainerDied}
		}
	case stateNone:
		if o == stateRunning {
			return []EventType{ContainerDied}
		}
	}
	return nil
}

// Pods returns the pods seen in the last relist.
func (p *PLEG) Pods() map[types.UID]PodInfo {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[types.UID]PodInfo, len(p.pods))
	for k, v := range p.pods {
		out[k] = v
	}
	return out
}

// Get returns the cached runtime status of pod uid.
func (p *PLEG) Get(uid types.UID) (*Cached, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	c, ok := p.cache[uid]
	return c, ok
}

// Set stores a status a pod worker read itself, if newer than the cached one.
func (p *PLEG) Set(uid types.UID, st *container.PodStatus, at time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if c, ok := p.cache[uid]; ok && c.Time.After(at) {
		return
	}
	p.cache[uid] = &Cached{Status: st, Time: at}
}

// LastRelist is when the runtime was last listed successfully.
func (p *PLEG) LastRelist() time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.relisted
}
