package router

import (
	"fmt"

	"sync"

	pluginv1 "github.com/edgehive/edgehive/sdk/proto/plugin/v1"
)

// entry is one message waiting in a mailbox or in flight to an instance.
type entry struct {
	msg         *pluginv1.Message
	from        string
	redelivered bool
	answer      bool // a sync answer: outside the capacity bound and the delivery window
}

// mailbox is the queue of one module. It outlives the module's instances: a
// new instance attaches and receives what the old one left unacknowledged.
type mailbox struct {
	name    string
	group   string // guarded by Router.mu
	metrics Metrics

	mu           sync.Mutex
	queue        deque[*entry]
	capacity     int
	count        int // bounded entries queued or in flight
	space        chan struct{}
	spaceWaiters int
	active       *Attachment
	attachments  map[*Attachment]struct{}
	down         bool
	downReason   string
}

func newMailbox(name string, capacity int, m Metrics) *mailbox {
	return &mailbox{name: name, capacity: capacity, metrics: m, attachments: map[*Attachment]struct{}{}}
}

func (mb *mailbox) unavailable() error {
	return fmt.Errorf("%w: %s: %s", ErrUnavailable, mb.name, mb.downReason)
}

// tryPut queues e if there is room; it reports false when the mailbox is full.
func (mb *mailbox) tryPut(e *entry) (bool, error) {
	mb.mu.Lock()
	if mb.down {
		err := mb.unavailable()
		mb.mu.Unlock()
		return false, err
	}
	if mb.count >= mb.capacity {
		mb.mu.Unlock()
		return false, nil
	}
	mb.queue.pushBack(e)
	mb.count++
	a := mb.active
	mb.mu.Unlock()
	if a != nil {
		a.wake()
	}
	return true, nil
}

// waitSpace returns a channel closed when room may have appeared, or nil if
// there is room now.
func (mb *mailbox) waitSpace() (chan struct{}, error) {
	mb.mu.Lock()
	defer mb.mu.Unlock()
	if mb.down {
		return nil, mb.unavailable()
	}
	if mb.count < mb.capacity {
		return nil, nil
	}
	if mb.space == nil {
		mb.space = make(chan struct{})
	}
	mb.spaceWaiters++
	return mb.space, nil
}

func (mb *mailbox) stopWaiting() {
	mb.mu.Lock()
	mb.spaceWaiters--
	mb.mu.Unlock()
}

// releaseLocked frees n bounded slots and wakes blocked senders.
func (mb *mailbox) releaseLocked(n int) {
	if n == 0 {
		return
	}
	mb.count -= n
	if mb.spaceWaiters > 0 && mb.space != nil {
		close(mb.space)
		mb.space = nil
	}
}

// putAnswer hands a sync answer to the instance that asked, or to whichever
// instance serves the module next if that one is gone.
func (mb *mailbox) putAnswer(e *entry, to *Attachment) {
	mb.mu.Lock()
	target := to
	if target == nil || target.closed || target.mb != mb {
		mb.queue.pushBack(e)
		target = mb.active
	} else {
		target.direct = append(target.direct, e)
	}
	mb.mu.Unlock()
	if target != nil {
		target.wake()
	}
}

// deque is a ring buffer; the zero value is empty and ready.
type deque[T any] struct {
	buf  []T
	head int
	n    int
}

func (d *deque[T]) len() int { return d.n }

func (d *deque[T]) grow() {
	size := len(d.buf) * 2
	if size == 0 {
		size = 64
	}
	nb := make([]T, size)
	for i := 0; i < d.n; i++ {
		nb[i] = d.buf[(d.head+i)%len(d.buf)]
	}
	d.buf = nb
	d.head = 0
}

func (d *deque[T]) pushBack(v T) {
	if d.n == len(d.buf) {
		d.grow()
	}
	d.buf[(d.head+d.n)%len(d.buf)] = v
	d.n++
}

func (d *deque[T]) pushFront(v T) {
	if d.n == len(d.buf) {
		d.grow()
	}
	d.head = (d.head - 1 + len(d.buf)) % len(d.buf)
	d.buf[d.head] = v
	d.n++
}

func (d *deque[T]) popFront() T {
	var zero T
	v := d.buf[d.head]
	d.buf[d.head] = zero
	d.head = (d.head + 1) % len(d.buf)
	d.n--
	return v
}
