package router

import (
	"context"

	pluginv1 "github.com/edgehive/edgehive/sdk/proto/plugin/v1"
)

// Local is a module that lives inside the host process: the benchmarks'
// in-process baseline and test drivers use it. Its handler runs on the
// attachment's writer goroutine, one delivery at a time, and each delivery is
// acknowledged when the handler returns.
type Local struct {
	att    *Attachment
	cancel context.CancelFunc
	done   chan struct{}
}

// NewLocal registers module name in group (if not registered yet) and attaches
// an in-process instance that passes every delivery to handle.
func NewLocal(r *Router, name, group string, handle func(*pluginv1.Delivery)) (*Local, error) {
	if r.lookup(name) == nil {
		if err := r.Register(name, group); err != nil {
			return nil, err
		}
	}
	l := &Local{done: make(chan struct{})}
	att, err := r.Attach(name, name+"-local", SinkFunc(func(f *pluginv1.HostFrame) error {
		acks := make([]uint64, 0, len(f.GetDeliveries()))
		for _, d := range f.GetDeliveries() {
			handle(d)
			acks = append(acks, d.GetSeq())
		}
		l.att.Ack(acks)
		return nil
	}), true)
	if err != nil {
		return nil, err
	}
	l.att = att
	ctx, cancel := context.WithCancel(context.Background())
	l.cancel = cancel
	go func() {
		defer close(l.done)
		_ = att.Run(ctx)
	}()
	return l, nil
}

// Send routes one message synchronously and returns the router's verdict.
func (l *Local) Send(kind pluginv1.Send_Kind, target string, syncTimeoutMs int64, m *pluginv1.Message) error {
	return l.att.SendNow(&pluginv1.Send{Kind: kind, Target: target, SyncTimeoutMs: syncTimeoutMs, Message: m})
}

// Close detaches the module.
func (l *Local) Close() {
	l.cancel()
	<-l.done
	l.att.EndIngress()
	l.att.Close()
}
