package sdk

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	pluginv1 "github.com/edgehive/edgehive/sdk/proto/plugin/v1"
)

// batchModule is a testModule that takes messages in batches. Its first
// batch waits for release, so that what arrives meanwhile piles up.
type batchModule struct {
	*testModule
	release chan struct{}
	batches chan []string
}

var _ BatchHandler = (*batchModule)(nil)

func (m *batchModule) HandleBatch(ctx context.Context, msgs []*Message) []error {
	ids := make([]string, len(msgs))
	errs := make([]error, len(msgs))
	for i, msg := range msgs {
		ids[i] = msg.Header.ID
		if msg.Router.Operation == "fail" {
			errs[i] = errors.New("handler failed")
		}
	}
	if m.release != nil {
		<-m.release
		m.release = nil
	}
	m.batches <- ids
	if slices.ContainsFunc(msgs, func(msg *Message) bool { return msg.Router.Operation == "boom" }) {
		panic("batch exploded")
	}
	return errs
}

func (m *batchModule) nextBatch(t *testing.T) []string {
	t.Helper()
	select {
	case b := <-m.batches:
		return b
	case <-time.After(5 * time.Second):
		t.Fatal("no batch")
		return nil
	}
}

func TestRuntimeBatchHandler(t *testing.T) {
	mod := &batchModule{testModule: newTestModule(), release: make(chan struct{}), batches: make(chan []string, 16)}
	r := newRig(t, mod)
	r.setConfig(`{"server":"wss://x"}`)
	h := r.openChannel()
	t.Cleanup(func() {
		r.shutdown()
		h.close()
		r.assertNoExit()
	})

	h.send(&pluginv1.HostFrame{Deliveries: []*pluginv1.Delivery{delivery(1, "m1", "insert")}})
	// Let the first batch start, then pile up more behind it, with a
	// duplicate and a message whose handling fails.
	time.Sleep(100 * time.Millisecond)
	h.send(&pluginv1.HostFrame{Deliveries: []*pluginv1.Delivery{delivery(2, "m2", "insert"), delivery(3, "m3", "fail"),
		delivery(4, "m2", "insert"), delivery(5, "m5", "update")}})
	time.Sleep(100 * time.Millisecond)
	if n := h.ackCount(1); n != 0 {
		t.Fatalf("m1 acknowledged before HandleBatch returned")
	}
	close(mod.release)
	if got := mod.nextBatch(t); !slices.Equal(got, []string{"m1"}) {
		t.Errorf("first batch %v, want [m1]", got)
	}
	if got := mod.nextBatch(t); !slices.Equal(got, []string{"m2", "m3", "m5"}) {
		t.Errorf("second batch %v, want [m2 m3 m5] (in order, the duplicate left out)", got)
	}
	h.waitAcks(1, 2, 3, 4, 5)
	for seq := uint64(1); seq <= 5; seq++ {
		if n := h.ackCount(seq); n != 1 {
			t.Errorf("seq %d acked %d times", seq, n)
		}
	}

	// A message that failed is handled again when it comes again; one that
	// succeeded is not.
	h.send(&pluginv1.HostFrame{Deliveries: []*pluginv1.Delivery{delivery(6, "m3", "insert"), delivery(7, "m5", "update")}})
	if got := mod.nextBatch(t); !slices.Equal(got, []string{"m3"}) {
		t.Errorf("redelivery batch %v, want [m3]", got)
	}
	h.waitAcks(6, 7)

	// A panic acknowledges the batch and the plugin carries on.
	h.send(&pluginv1.HostFrame{Deliveries: []*pluginv1.Delivery{delivery(8, "b1", "boom")}})
	mod.nextBatch(t)
	h.waitAcks(8)
	h.send(&pluginv1.HostFrame{Deliveries: []*pluginv1.Delivery{delivery(9, "after", "insert")}})
	if got := mod.nextBatch(t); !slices.Equal(got, []string{"after"}) {
		t.Errorf("after the panic: %v", got)
	}
	h.waitAcks(9)
	if got := mod.handledIDs(); len(got) != 0 {
		t.Errorf("Handle called for %v; a BatchHandler gets everything through HandleBatch", got)
	}
}
