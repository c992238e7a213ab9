// Package router moves messages among plugins with beehive semantics: to a
// module, to every module of a group, and answers back to the caller waiting
// for them. Each module has a bounded mailbox; deliveries stay in flight until
// the receiving instance acknowledges them and go back to the mailbox if that
// instance dies, so a crash loses nothing.
package router

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/edgehive/edgehive/sdk"
	pluginv1 "github.com/edgehive/edgehive/sdk/proto/plugin/v1"
)

// Metrics receives the router's counters; *metrics.Metrics implements it.
type Metrics interface {
	Delivered(plugin string, n int)
	Redelivered(plugin string, n int)
	Acked(plugin string, n int)
	Routed(kind string)
	SendError(plugin, reason string)
	SetQueueDepth(plugin string, depth int)
	SetInFlight(plugin string, n int)
}

// Options tune the router.
type Options struct {
	QueueCapacity   int           // per module; default 8192
	SendTimeout     time.Duration // how long a sender waits on a full mailbox; default 5s
	MaxMessageBytes int           // content limit; default 4 MiB
	Logger          hclog.Logger
	Metrics         Metrics
	Now             func() time.Time
}

// Errors a route can end with.
var (
	ErrUnknownDestination = errors.New("unknown destination")
	ErrQueueFull          = errors.New("queue full")
	ErrNoWaiter           = errors.New("no caller waits for this response")
	ErrUnavailable        = errors.New("module unavailable")
)

// Router is safe for concurrent use.
type Router struct {
	opts   Options
	logger hclog.Logger

	mu      sync.RWMutex
	modules map[string]*mailbox
	groups  map[string][]*mailbox

	pendingMu sync.Mutex
	pending   map[string]*pendingCall // sync request id -> caller
}

type pendingCall struct {
	caller   *mailbox
	att      *Attachment
	deadline time.Time
}

// New returns an empty router.
func New(opts Options) *Router {
	if opts.QueueCapacity <= 0 {
		opts.QueueCapacity = 8192
	}
	if opts.SendTimeout <= 0 {
		opts.SendTimeout = 5 * time.Second
	}
	if opts.MaxMessageBytes <= 0 {
		opts.MaxMessageBytes = 4 << 20
	}
	if opts.Logger == nil {
		opts.Logger = hclog.NewNullLogger()
	}
	if opts.Metrics == nil {
		opts.Metrics = nopMetrics{}
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Router{
		opts:    opts,
		logger:  opts.Logger,
		modules: map[string]*mailbox{},
		groups:  map[string][]*mailbox{},
		pending: map[string]*pendingCall{},
	}
}

// Register creates the mailbox of a module. Messages sent to it queue up
// until an instance attaches. Registering a name twice is an error.
func (r *Router) Register(name, group string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.modules[name]; ok {
		return fmt.Errorf("router: module %q registered twice", name)
	}
	mb := newMailbox(name, r.opts.QueueCapacity, r.opts.Metrics)
	r.modules[name] = mb
	r.setGroupLocked(mb, group)
	return nil
}

// SetGroup moves a module into group (a plugin declares its group in GetInfo,
// after the mailbox exists).
func (r *Router) SetGroup(name, group string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	mb, ok := r.modules[name]
	if !ok {
		return fmt.Errorf("router: %w: %q", ErrUnknownDestination, name)
	}
	r.setGroupLocked(mb, group)
	return nil
}

func (r *Router) setGroupLocked(mb *mailbox, group string) {
	if mb.group == group {
		if group != "" && !containsBox(r.groups[group], mb) {
			r.groups[group] = append(r.groups[group], mb)
		}
		return
	}
	if mb.group != "" {
		members := r.groups[mb.group]
		out := members[:0:0]
		for _, m := range members {
			if m != mb {
				out = append(out, m)
			}
		}
		if len(out) == 0 {
			delete(r.groups, mb.group)
		} else {
			r.groups[mb.group] = out
		}
	}
	mb.group = group
	if group != "" {
		r.groups[group] = append(r.groups[group], mb)
	}
}

func containsBox(list []*mailbox, mb *mailbox) bool {
	for _, m := range list {
		if m == mb {
			return true
		}
	}
	return false
}

// SetAvailable marks a module as able to take messages or not. Sends to an
// unavailable module (failed, disabled) fail at once instead of filling its
// mailbox; messages already queued stay for the next instance.
func (r *Router) SetAvailable(name string, available bool, reason string) {
	if mb := r.lookup(name); mb != nil {
		mb.mu.Lock()
		mb.down = !available
		mb.downReason = reason
		mb.mu.Unlock()
	}
}

func (r *Router) lookup(name string) *mailbox {
	r.mu.RLock()
	mb := r.modules[name]
	r.mu.RUnlock()
	return mb
}

// Stats describes one module's mailbox.
type Stats struct {
	Queued   int // waiting for delivery
	InFlight int // delivered, not yet acknowledged
}

// Stats returns the mailbox figures of a module.
func (r *Router) Stats(name string) Stats {
	mb := r.lookup(name)
	if mb == nil {
		return Stats{}
	}
	mb.mu.Lock()
	defer mb.mu.Unlock()
	st := Stats{Queued: mb.queue.len()}
	for a := range mb.attachments {
		st.InFlight += len(a.inflight)
	}
	return st
}

// Attach connects a new instance of module name. When active is true it
// receives the mailbox's messages at once; otherwise only answers addressed
// to it until Activate. The caller runs the attachment's writer with Run.
func (r *Router) Attach(name, instanceID string, sink Sink, active bool) (*Attachment, error) {
	mb := r.lookup(name)
	if mb == nil {
		return nil, fmt.Errorf("router: %w: %q", ErrUnknownDestination, name)
	}
	a := &Attachment{
		router:   r,
		mb:       mb,
		id:       instanceID,
		sink:     sink,
		inflight: map[uint64]*entry{},
		kick:     make(chan struct{}, 1),
		ingress:  make(chan []*pluginv1.Send, 64),
		done:     make(chan struct{}),
	}
	mb.mu.Lock()
	mb.attachments[a] = struct{}{}
	if active {
		mb.active = a
	}
	mb.mu.Unlock()
	go a.ingressLoop()
	a.wake()
	return a, nil
}

// route sends one message from a module and returns nil once it is queued
// for every destination.
func (r *Router) route(from *Attachment, s *pluginv1.Send) *pluginv1.SendError {
	se, _ := r.routeMaybeWait(from, s, true)
	return se
}

// routeMaybeWait routes one message. With wait false it never blocks: a
// module send to a full mailbox, and every group send, report wouldBlock
// instead, having changed nothing.
func (r *Router) routeMaybeWait(from *Attachment, s *pluginv1.Send, wait bool) (se *pluginv1.SendError, wouldBlock bool) {
	msg := s.GetMessage()
	if err := sdk.ValidateEnvelope(msg); err != nil {
		return r.refuse(from, s, pluginv1.SendError_CODE_INVALID, "invalid", err.Error()), false
	}
	if n := len(msg.GetContent()); n > r.opts.MaxMessageBytes {
		return r.refuse(from, s, pluginv1.SendError_CODE_TOO_LARGE, "too_large",
			fmt.Sprintf("message %s is %d bytes, the limit is %d", msg.GetId(), n, r.opts.MaxMessageBytes)), false
	}
	fromName := ""
	if from != nil {
		fromName = from.mb.name
	}
	switch s.GetKind() {
	case pluginv1.Send_KIND_MODULE:
		mb := r.lookup(s.GetTarget())
		if mb == nil {
			return r.refuse(from, s, pluginv1.SendError_CODE_UNKNOWN_DESTINATION, "unknown_destination",
				fmt.Sprintf("no module named %q", s.GetTarget())), false
		}
		if s.GetSyncTimeoutMs() > 0 && from != nil {
			r.addPending(msg.GetId(), from, time.Duration(s.GetSyncTimeoutMs())*time.Millisecond)
		}
		e := &entry{msg: msg, from: fromName}
		if !wait {
			ok, err := mb.tryPut(e)
			if err == nil && !ok {
				r.dropPending(msg.GetId())
				return nil, true
			}
			if err != nil {
				r.dropPending(msg.GetId())
				return r.refuseErr(from, s, mb.name, err), false
			}
			r.opts.Metrics.Routed("module")
			return nil, false
		}
		if err := r.put(mb, e); err != nil {
			r.dropPending(msg.GetId())
			return r.refuseErr(from, s, mb.name, err), false
		}
		r.opts.Metrics.Routed("module")
		return nil, false
	case pluginv1.Send_KIND_GROUP:
		if !wait {
			return nil, true
		}
		r.mu.RLock()
		members := r.groups[s.GetTarget()]
		r.mu.RUnlock()
		if len(members) == 0 {
			return r.refuse(from, s, pluginv1.SendError_CODE_UNKNOWN_DESTINATION, "unknown_destination",
				fmt.Sprintf("no module in group %q", s.GetTarget())), false
		}
		var failed []string
		var lastErr error
		for _, mb := range members {
			if err := r.put(mb, &entry{msg: msg, from: fromName}); err != nil {
				failed = append(failed, mb.name)
				lastErr = err
			}
		}
		if len(failed) > 0 {
			se := r.refuseErr(from, s, s.GetTarget(), lastErr)
			se.Message = fmt.Sprintf("group %q: not queued for %v (queued for the other %d): %s",
				s.GetTarget(), failed, len(members)-len(failed), se.Message)
			return se, false
		}
		r.opts.Metrics.Routed("group")
		return nil, false
	case pluginv1.Send_KIND_RESPONSE:
		pc := r.takePending(msg.GetParentId())
		if pc == nil {
			return r.refuse(from, s, pluginv1.SendError_CODE_NO_WAITER, "no_waiter",
				fmt.Sprintf("no caller waits for an answer to %q", msg.GetParentId())), false
		}
		pc.caller.putAnswer(&entry{msg: msg, from: fromName, answer: true}, pc.att)
		r.opts.Metrics.Routed("response")
		return nil, false
	default:
		return r.refuse(from, s, pluginv1.SendError_CODE_INVALID, "invalid", fmt.Sprintf("unknown send kind %d", s.GetKind())), false
	}
}

func (r *Router) refuseErr(from *Attachment, s *pluginv1.Send, dest string, err error) *pluginv1.SendError {
	switch {
	case errors.Is(err, ErrQueueFull):
		return r.refuse(from, s, pluginv1.SendError_CODE_QUEUE_FULL, "queue_full", fmt.Sprintf("%s: %v", dest, err))
	case errors.Is(err, ErrUnavailable):
		return r.refuse(from, s, pluginv1.SendError_CODE_SHUTTING_DOWN, "unavailable", err.Error())
	default:
		return r.refuse(from, s, pluginv1.SendError_CODE_UNSPECIFIED, "error", err.Error())
	}
}

func (r *Router) refuse(from *Attachment, s *pluginv1.Send, code pluginv1.SendError_Code, reason, text string) *pluginv1.SendError {
	name := ""
	if from != nil {
		name = from.mb.name
	}
	r.opts.Metrics.SendError(name, reason)
	r.logger.Debug("message refused", "from", name, "target", s.GetTarget(), "msg_id", s.GetMessage().GetId(), "reason", reason, "detail", text)
	return &pluginv1.SendError{Seq: s.GetSeq(), Code: code, Message: text}
}

// put queues e in mb, waiting up to SendTimeout for room.
func (r *Router) put(mb *mailbox, e *entry) error {
	if ok, err := mb.tryPut(e); ok || err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), r.opts.SendTimeout)
	defer cancel()
	for {
		space, err := mb.waitSpace()
		if err != nil {
			return err
		}
		if space == nil {
			if ok, err := mb.tryPut(e); ok || err != nil {
				return err
			}
			continue
		}
		select {
		case <-space:
			if ok, err := mb.tryPut(e); ok || err != nil {
				return err
			}
		case <-ctx.Done():
			mb.stopWaiting()
			return fmt.Errorf("%w: %d messages waiting for %s after %s", ErrQueueFull, r.opts.QueueCapacity, mb.name, r.opts.SendTimeout)
		}
		mb.stopWaiting()
	}
}

func (r *Router) addPending(id string, from *Attachment, timeout time.Duration) {
	r.pendingMu.Lock()
	r.pending[id] = &pendingCall{caller: from.mb, att: from, deadline: r.opts.Now().Add(timeout)}
	r.pendingMu.Unlock()
}

func (r *Router) dropPending(id string) {
	r.pendingMu.Lock()
	delete(r.pending, id)
	r.pendingMu.Unlock()
}

func (r *Router) takePending(id string) *pendingCall {
	if id == "" {
		return nil
	}
	r.pendingMu.Lock()
	defer r.pendingMu.Unlock()
	pc, ok := r.pending[id]
	if !ok {
		return nil
	}
	delete(r.pending, id)
	if r.opts.Now().After(pc.deadline) {
		return nil
	}
	return pc
}

// Expire forgets sync calls whose deadline has passed; a late answer to them
// is refused with ErrNoWaiter. Run calls it periodically.
func (r *Router) Expire() int {
	now := r.opts.Now()
	r.pendingMu.Lock()
	defer r.pendingMu.Unlock()
	n := 0
	for id, pc := range r.pending {
		if now.After(pc.deadline) {
			delete(r.pending, id)
			n++
		}
	}
	return n
}

// PendingCalls is the number of sync calls waiting for an answer.
func (r *Router) PendingCalls() int {
	r.pendingMu.Lock()
	defer r.pendingMu.Unlock()
	return len(r.pending)
}

// Run expires stale sync calls until ctx is done.
func (r *Router) Run(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			r.Expire()
		}
	}
}

// Modules lists the registered module names, sorted.
func (r *Router) Modules() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]string, 0, len(r.modules))
	for n := range r.modules {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

type nopMetrics struct{}

func (nopMetrics) Delivered(string, int)     {}
func (nopMetrics) Redelivered(string, int)   {}
func (nopMetrics) Acked(string, int)         {}
func (nopMetrics) Routed(string)             {}
func (nopMetrics) SendError(string, string)  {}
func (nopMetrics) SetQueueDepth(string, int) {}
func (nopMetrics) SetInFlight(string, int)   {}
