package metaserver

import (
	"encoding/json"
	"errors"
	"fmt"
	"sync"

	"k8s.io/apimachinery/pkg/labels"

	"github.com/edgehive/edgehive/plugins/metamanager/store"
)

// Watch event types, as the Kubernetes API spells them.
const (
	Added    = "ADDED"
	Modified = "MODIFIED"
	Deleted  = "DELETED"
	Bookmark = "BOOKMARK"
)

// Hub defaults.
const (
	// DefaultHistory is how many recent changes a watch can resume from;
	// an older resourceVersion is answered 410 Gone and the client relists.
	DefaultHistory = 1024
	// DefaultWatchBuffer is how many changes one watcher may fall behind
	// before its watch is closed.
	DefaultWatchBuffer = 256
)

// Errors of Hub.Watch; the server turns them into 410 and 504 answers.
var (
	ErrExpired  = errors.New("too old resource version")
	ErrTooLarge = errors.New("too large resource version")
)

// change is one write metamanager made to a served type, at revision rev.
type change struct {
	rev        uint64
	typ        string // Added, Modified or Deleted
	obj        store.Object
	labels     labels.Set // after the change (for a delete: the last state)
	prevLabels labels.Set // before it; nil for Added
}

// Hub numbers metamanager's writes to the served types with revisions and
// fans them out to watchers. Publish never blocks: a watcher whose buffer is
// full is closed (its client re-watches, and relists if its revision has
// left the history), as the Kubernetes API server does with slow watchers.
//
// Revisions are local: they start at the number given to NewHub (the
// module's start time in microseconds, so they keep growing across restarts)
// and grow by one per change. Objects not changed since the start are served
// at the start revision. The mutex guards only in-memory state and is never
// held across I/O.
type Hub struct {
	buffer int

	mu       sync.Mutex
	start    uint64                // revision of everything stored before the start
	rev      uint64                // latest revision
	floor    uint64                // a watch may resume from any revision >= floor
	history  []change              // ring of the latest changes, oldest first
	max      int                   // history bound
	revs     map[string]uint64     // key -> revision of its latest change since the start
	labelsOf map[string]labels.Set // key -> labels of the stored object (served types)
	watchers map[*Watcher]struct{}
}

// NewHub returns a hub whose revisions start after start. history and buffer
// of 0 take the defaults.
func NewHub(start uint64, history, buffer int) *Hub {
	if history <= 0 {
		history = DefaultHistory
	}
	if buffer <= 0 {
		buffer = DefaultWatchBuffer
	}
	return &Hub{
		buffer: buffer, start: start, rev: start, floor: start, max: history,
		revs: map[string]uint64{}, labelsOf: map[string]labels.Set{}, watchers: map[*Watcher]struct{}{},
	}
}

// Seed records the labels of an object stored before the start, so that a
// later change can be matched against a watcher's selector before and after.
func (h *Hub) Seed(obj store.Object) {
	if _, ok := byType[obj.Type]; !ok {
		return
	}
	l := objectLabels(obj.Value)
	h.mu.Lock()
	h.labelsOf[obj.Key] = l
	h.mu.Unlock()
}

// Publish records a change made to the store (Added, Modified or Deleted;
// for Deleted, obj is the last stored state) and hands it to the watchers
// of its type. Types the MetaServer does not serve are ignored.
func (h *Hub) Publish(typ string, obj store.Object) {
	if _, ok := byType[obj.Type]; !ok {
		return
	}
	l := objectLabels(obj.Value)
	h.mu.Lock()
	defer h.mu.Unlock()
	h.rev++
	c := change{rev: h.rev, typ: typ, obj: obj, labels: l}
	if typ != Added {
		c.prevLabels = h.labelsOf[obj.Key]
	}
	if typ == Deleted {
		delete(h.labelsOf, obj.Key)
		delete(h.revs, obj.Key)
	} else {
		h.labelsOf[obj.Key] = l
		h.revs[obj.Key] = c.rev
	}
	if len(h.history) == h.max {
		h.floor = h.history[0].rev
		h.history[0] = change{}
		h.history = h.history[1:]
	}
	h.history = append(h.history, c)
	for w := range h.watchers {
		if !w.wants(&c) {
			continue
		}
		select {
		case w.ch <- c:
		default:
			// Too slow: end this watch rather than hold up the store.
			w.overflowed = true
			delete(h.watchers, w)
			close(w.ch)
		}
	}
}

// Current is the latest revision.
func (h *Hub) Current() uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.rev
}

// Revision is the revision an object is served at.
func (h *Hub) Revision(key string) uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	if r, ok := h.revs[key]; ok {
		return r
	}
	return h.start
}

// Watcher receives the changes to one type (and namespace) after a revision.
type Watcher struct {
	typ, namespace string
	ch             chan change
	backlog        []change // changes already in the history when it started
	overflowed     bool     // set by Publish (under the hub's lock) before closing ch
	hub            *Hub
}

func (w *Watcher) wants(c *change) bool {
	return c.obj.Type == w.typ && (w.namespace == "" || c.obj.Namespace == w.namespace)
}

// Watch starts a watcher of typ in namespace ("" = all) from revision from:
// it gets every change after it. It returns the revision it starts at.
// A revision older than the history gives ErrExpired, a future one ErrTooLarge.
func (h *Hub) Watch(typ, namespace string, from uint64) (*Watcher, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	switch {
	case from < h.floor:
		return nil, fmt.Errorf("%w: %d (oldest %d)", ErrExpired, from, h.floor)
	case from > h.rev:
		return nil, fmt.Errorf("%w: %d (current %d)", ErrTooLarge, from, h.rev)
	}
	w := &Watcher{typ: typ, namespace: namespace, ch: make(chan change, h.buffer), hub: h}
	for _, c := range h.history {
		if c.rev > from && w.wants(&c) {
			w.backlog = append(w.backlog, c)
		}
	}
	h.watchers[w] = struct{}{}
	return w, nil
}

// WatchNow starts a watcher from the current revision and returns that revision.
func (h *Hub) WatchNow(typ, namespace string) (*Watcher, uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	w := &Watcher{typ: typ, namespace: namespace, ch: make(chan change, h.buffer), hub: h}
	h.watchers[w] = struct{}{}
	return w, h.rev
}

// Stop unregisters the watcher; it is safe to call more than once.
func (w *Watcher) Stop() {
	h := w.hub
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.watchers[w]; ok {
		delete(h.watchers, w)
		close(w.ch)
	}
}

// Overflowed reports whether the watcher was closed for falling behind.
func (w *Watcher) Overflowed() bool {
	w.hub.mu.Lock()
	defer w.hub.mu.Unlock()
	return w.overflowed
}

// Watchers is the number of live watchers (for tests and logs).
func (h *Hub) Watchers() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.watchers)
}

// objectLabels reads metadata.labels; a malformed object has none.
func objectLabels(value json.RawMessage) labels.Set {
	var o struct {
		Metadata struct {
			Labels map[string]string `json:"labels"`
		} `json:"metadata"`
	}
	_ = json.Unmarshal(value, &o)
	return labels.Set(o.Metadata.Labels)
}
