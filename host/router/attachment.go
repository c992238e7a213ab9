package router

import (
	"context"
	"fmt"
	"runtime"
	"sort"
	"sync/atomic"
	"time"

	"github.com/edgehive/edgehive/sdk"
	pluginv1 "github.com/edgehive/edgehive/sdk/proto/plugin/v1"
)

// Sink writes frames to one plugin instance (its gRPC stream, or a function
// for an in-process module). Only the attachment's Run calls it.
type Sink interface {
	Send(*pluginv1.HostFrame) error
}

// SinkFunc adapts a function to Sink.
type SinkFunc func(*pluginv1.HostFrame) error

// Send calls f.
func (f SinkFunc) Send(fr *pluginv1.HostFrame) error { return f(fr) }

// Attachment is one running instance of a module as the router sees it: the
// deliveries it has not acknowledged, the answers addressed to it, and the
// verdicts on its own sends. Its fields are guarded by the mailbox's lock.
type Attachment struct {
	router *Router
	mb     *mailbox
	id     string
	sink   Sink

	inflight   map[uint64]*entry
	windowUsed int
	nextSeq    uint64
	direct     []*entry
	confirms   []uint64
	sendErrs   []*pluginv1.SendError
	closed     bool

	kick    chan struct{}
	ingress chan []*pluginv1.Send
	done    chan struct{}

	ingressBusy atomic.Int32 // batches handed to ingressLoop and not yet routed

	acked     atomic.Uint64
	lastAckNs atomic.Int64
}

// ID is the instance id given to Attach.
func (a *Attachment) ID() string { return a.id }

// Module is the module name.
func (a *Attachment) Module() string { return a.mb.name }

func (a *Attachment) wake() {
	select {
	case a.kick <- struct{}{}:
	default:
	}
}

// Run writes frames to the sink until ctx is done, the attachment is closed,
// or the sink fails. Everything pending at a wake-up goes in one frame.
func (a *Attachment) Run(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-a.done:
			return nil
		case <-a.kick:
		}
		// One scheduler pass lets concurrent producers join this frame.
		runtime.Gosched()
		for {
			frame, more := a.takeFrame()
			if frame == nil {
				break
			}
			if err := a.sink.Send(frame); err != nil {
				return fmt.Errorf("deliver to %s/%s: %w", a.mb.name, a.id, err)
			}
			if !more {
				break
			}
		}
	}
}

func (a *Attachment) takeFrame() (*pluginv1.HostFrame, bool) {
	mb := a.mb
	mb.mu.Lock()
	if a.closed {
		mb.mu.Unlock()
		return nil, false
	}
	var f pluginv1.HostFrame
	if len(a.confirms) > 0 {
		f.SendConfirms = a.confirms
		a.confirms = nil
	}
	if len(a.sendErrs) > 0 {
		f.SendErrors = a.sendErrs
		a.sendErrs = nil
	}
	size, redelivered := 0, 0
	for _, e := range a.direct {
		a.deliverLocked(&f, e)
	}
	a.direct = nil
	active := mb.active == a
	if active {
		for mb.queue.len() > 0 && a.windowUsed < sdk.MaxInFlight && size < sdk.BatchBytes {
			e := mb.queue.popFront()
			if e.redelivered {
				redelivered++
			}
			size += len(e.msg.GetContent()) + 128
			a.deliverLocked(&f, e)
		}
	}
	more := active && mb.queue.len() > 0 && a.windowUsed < sdk.MaxInFlight
	depth, inflight := mb.queue.len(), len(a.inflight)
	mb.mu.Unlock()

	if len(f.Deliveries) == 0 && len(f.SendConfirms) == 0 && len(f.SendErrors) == 0 {
		return nil, false
	}
	if n := len(f.Deliveries); n > 0 {
		mb.metrics.Delivered(mb.name, n)
		if redelivered > 0 {
			mb.metrics.Redelivered(mb.name, redelivered)
		}
		mb.metrics.SetQueueDepth(mb.name, depth)
		mb.metrics.SetInFlight(mb.name, inflight)
	}
	return &f, more
}

func (a *Attachment) deliverLocked(f *pluginv1.HostFrame, e *entry) {
	a.nextSeq++
	a.inflight[a.nextSeq] = e
	if !e.answer {
		a.windowUsed++
	}
	f.Deliveries = append(f.Deliveries, &pluginv1.Delivery{
		Seq: a.nextSeq, From: e.from, Redelivered: e.redelivered, Message: e.msg,
	})
}

// Ack marks deliveries as handled; their mailbox slots are freed.
func (a *Attachment) Ack(seqs []uint64) {
	if len(seqs) == 0 {
		return
	}
	mb := a.mb
	mb.mu.Lock()
	n, released := 0, 0
	for _, seq := range seqs {
		e, ok := a.inflight[seq]
		if !ok {
			continue
		}
		delete(a.inflight, seq)
		n++
		if !e.answer {
			released++
			a.windowUsed--
		}
	}
	mb.releaseLocked(released)
	kick := mb.active == a && mb.queue.len() > 0
	mb.mu.Unlock()
	if n > 0 {
		a.acked.Add(uint64(n))
		a.lastAckNs.Store(time.Now().UnixNano())
		mb.metrics.Acked(mb.name, n)
	}
	if kick {
		a.wake()
	}
}

// Acked is the number of deliveries this instance has acknowledged.
func (a *Attachment) Acked() uint64 { return a.acked.Load() }

// InFlight is the number of deliveries this instance has not acknowledged.
func (a *Attachment) InFlight() int {
	a.mb.mu.Lock()
	defer a.mb.mu.Unlock()
	return len(a.inflight)
}

// Activate makes this instance the one that receives the mailbox's messages;
// the previous one keeps what it has in flight but gets nothing new.
func (a *Attachment) Activate() {
	a.mb.mu.Lock()
	if !a.closed {
		a.mb.active = a
	}
	a.mb.mu.Unlock()
	a.wake()
}

// Drain waits until the instance has acknowledged everything in flight.
func (a *Attachment) Drain(ctx context.Context) error {
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for {
		if a.InFlight() == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("drain %s/%s: %d deliveries unacknowledged: %w", a.mb.name, a.id, a.InFlight(), ctx.Err())
		case <-t.C:
		}
	}
}

// Close detaches the instance. What it had not acknowledged goes back to the
// front of the mailbox, in order, marked redelivered, for the next instance.
func (a *Attachment) Close() int {
	mb := a.mb
	mb.mu.Lock()
	if a.closed {
		mb.mu.Unlock()
		return 0
	}
	a.closed = true
	seqs := make([]uint64, 0, len(a.inflight))
	for seq := range a.inflight {
		seqs = append(seqs, seq)
	}
	sort.Slice(seqs, func(i, j int) bool { return seqs[i] > seqs[j] })
	for i := len(a.direct) - 1; i >= 0; i-- {
		mb.queue.pushFront(a.direct[i])
	}
	for _, seq := range seqs {
		e := a.inflight[seq]
		e.redelivered = true
		mb.queue.pushFront(e)
	}
	returned := len(seqs) + len(a.direct)
	a.inflight = nil
	a.direct = nil
	a.windowUsed = 0
	delete(mb.attachments, a)
	if mb.active == a {
		mb.active = nil
	}
	next := mb.active
	mb.mu.Unlock()
	close(a.done)
	if next != nil {
		next.wake()
	}
	return returned
}

// Submit hands the instance's sends to the router, in order. Sends that can
// be queued at once are routed right here (no hand-off on the way through the
// host); from the first one that would wait, the rest go to the attachment's
// own goroutine, so a full destination never stops the caller from reading
// acknowledgements. Only one goroutine may call Submit.
func (a *Attachment) Submit(sends []*pluginv1.Send) {
	if len(sends) == 0 {
		return
	}
	if a.ingressBusy.Load() == 0 {
		var confirms []uint64
		var errs []*pluginv1.SendError
		i := 0
		for ; i < len(sends); i++ {
			se, wouldBlock := a.router.routeMaybeWait(a, sends[i], false)
			if wouldBlock {
				break
			}
			if se != nil {
				errs = append(errs, se)
			} else {
				confirms = append(confirms, sends[i].GetSeq())
			}
		}
		a.addResults(confirms, errs)
		if i == len(sends) {
			return
		}
		sends = sends[i:]
	}
	a.ingressBusy.Add(1)
	a.ingress <- sends
}

func (a *Attachment) addResults(confirms []uint64, errs []*pluginv1.SendError) {
	if len(confirms) == 0 && len(errs) == 0 {
		return
	}
	a.mb.mu.Lock()
	if !a.closed {
		a.confirms = append(a.confirms, confirms...)
		a.sendErrs = append(a.sendErrs, errs...)
	}
	a.mb.mu.Unlock()
	a.wake()
}

// EndIngress tells the attachment no more sends will be submitted; sends
// already submitted are still routed.
func (a *Attachment) EndIngress() { close(a.ingress) }

func (a *Attachment) ingressLoop() {
	for sends := range a.ingress {
		var confirms []uint64
		var errs []*pluginv1.SendError
		for _, s := range sends {
			if se := a.router.route(a, s); se != nil {
				errs = append(errs, se)
			} else {
				confirms = append(confirms, s.GetSeq())
			}
		}
		a.addResults(confirms, errs)
		a.ingressBusy.Add(-1)
	}
}

// SendNow routes one message from this attachment synchronously, for
// in-process modules.
func (a *Attachment) SendNow(s *pluginv1.Send) error {
	se := a.router.route(a, s)
	if se == nil {
		return nil
	}
	return sdk.ErrorFromSendError(se)
}
