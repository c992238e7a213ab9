package router

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/edgehive/edgehive/sdk"
	pluginv1 "github.com/edgehive/edgehive/sdk/proto/plugin/v1"
)

// fakeInstance is an in-process module instance: it records deliveries and
// acknowledges them unless told to hold them.
type fakeInstance struct {
	att  *Attachment
	hold bool

	mu       sync.Mutex
	got      []*pluginv1.Delivery
	held     []uint64
	confirms []uint64
	errs     []*pluginv1.SendError
	arrived  chan struct{}
	cancel   context.CancelFunc
	finished chan struct{}
}

func attachFake(t *testing.T, r *Router, name, id string, hold bool) *fakeInstance {
	t.Helper()
	fi := &fakeInstance{hold: hold, arrived: make(chan struct{}, 1<<16), finished: make(chan struct{})}
	att, err := r.Attach(name, id, SinkFunc(fi.receive), true)
	if err != nil {
		t.Fatal(err)
	}
	fi.att = att
	ctx, cancel := context.WithCancel(context.Background())
	fi.cancel = cancel
	go func() { defer close(fi.finished); _ = att.Run(ctx) }()
	t.Cleanup(fi.stop)
	return fi
}

func (fi *fakeInstance) stop() {
	fi.cancel()
	<-fi.finished
}

func (fi *fakeInstance) receive(f *pluginv1.HostFrame) error {
	var acks []uint64
	fi.mu.Lock()
	fi.confirms = append(fi.confirms, f.GetSendConfirms()...)
	fi.errs = append(fi.errs, f.GetSendErrors()...)
	for _, d := range f.GetDeliveries() {
		fi.got = append(fi.got, d)
		if fi.hold {
			fi.held = append(fi.held, d.GetSeq())
		} else {
			acks = append(acks, d.GetSeq())
		}
	}
	fi.mu.Unlock()
	for range f.GetDeliveries() {
		fi.arrived <- struct{}{}
	}
	go fi.att.Ack(acks) // an instance acknowledges from its own reader, not the writer
	return nil
}

func (fi *fakeInstance) waitDeliveries(t *testing.T, n int) []*pluginv1.Delivery {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		fi.mu.Lock()
		if len(fi.got) >= n {
			out := append([]*pluginv1.Delivery(nil), fi.got...)
			fi.mu.Unlock()
			return out
		}
		fi.mu.Unlock()
		select {
		case <-fi.arrived:
		case <-deadline:
			t.Fatalf("waited for %d deliveries, have %d", n, len(fi.got))
		}
	}
}

func (fi *fakeInstance) count() int {
	fi.mu.Lock()
	defer fi.mu.Unlock()
	return len(fi.got)
}

func msg(id, op string) *pluginv1.Message {
	return &pluginv1.Message{Id: id, Operation: op, Source: "test", Content: []byte(`{"n":1}`)}
}

func newTestRouter(t *testing.T, opts Options, modules map[string]string) *Router {
	t.Helper()
	r := New(opts)
	for name, group := range modules {
		if err := r.Register(name, group); err != nil {
			t.Fatal(err)
		}
	}
	return r
}

func TestRouteTable(t *testing.T) {
	modules := map[string]string{"a": "ga", "b": "gb", "c": "gb"}
	tests := []struct {
		name     string
		send     *pluginv1.Send
		wantCode pluginv1.SendError_Code // CODE_UNSPECIFIED: success
		wantAt   map[string]int          // deliveries expected per module
	}{
		{"to a module", &pluginv1.Send{Kind: pluginv1.Send_KIND_MODULE, Target: "b", Message: msg("m1", "insert")}, 0, map[string]int{"b": 1}},
		{"to a group fans out", &pluginv1.Send{Kind: pluginv1.Send_KIND_GROUP, Target: "gb", Message: msg("m2", "insert")}, 0, map[string]int{"b": 1, "c": 1}},
		{"unknown module", &pluginv1.Send{Kind: pluginv1.Send_KIND_MODULE, Target: "zz", Message: msg("m3", "insert")}, pluginv1.SendError_CODE_UNKNOWN_DESTINATION, nil},
		{"unknown group", &pluginv1.Send{Kind: pluginv1.Send_KIND_GROUP, Target: "gz", Message: msg("m4", "insert")}, pluginv1.SendError_CODE_UNKNOWN_DESTINATION, nil},
		{"no id", &pluginv1.Send{Kind: pluginv1.Send_KIND_MODULE, Target: "b", Message: msg("", "insert")}, pluginv1.SendError_CODE_INVALID, nil},
		{"no operation", &pluginv1.Send{Kind: pluginv1.Send_KIND_MODULE, Target: "b", Message: msg("m5", "")}, pluginv1.SendError_CODE_INVALID, nil},
		{"content not JSON", &pluginv1.Send{Kind: pluginv1.Send_KIND_MODULE, Target: "b", Message: &pluginv1.Message{Id: "m6", Operation: "x", Content: []byte("{nope")}}, pluginv1.SendError_CODE_INVALID, nil},
		{"nil message", &pluginv1.Send{Kind: pluginv1.Send_KIND_MODULE, Target: "b"}, pluginv1.SendError_CODE_INVALID, nil},
		{"too large", &pluginv1.Send{Kind: pluginv1.Send_KIND_MODULE, Target: "b", Message: &pluginv1.Message{Id: "m7", Operation: "x", Content: []byte(`"` + string(make([]byte, 0)) + fmt.Sprintf("%02000d", 0) + `"`)}}, pluginv1.SendError_CODE_TOO_LARGE, nil},
		{"response nobody waits for", &pluginv1.Send{Kind: pluginv1.Send_KIND_RESPONSE, Message: &pluginv1.Message{Id: "m8", ParentId: "nope", Operation: "response"}}, pluginv1.SendError_CODE_NO_WAITER, nil},
		{"unknown kind", &pluginv1.Send{Kind: 99, Target: "b", Message: msg("m9", "insert")}, pluginv1.SendError_CODE_INVALID, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newTestRouter(t, Options{MaxMessageBytes: 1000}, modules)
			insts := map[string]*fakeInstance{}
			for name := range modules {
				insts[name] = attachFake(t, r, name, name+"-1", false)
			}
			se := r.route(insts["a"].att, tc.send)
			if tc.wantCode == 0 {
				if se != nil {
					t.Fatalf("refused: %v", se)
				}
				for name, n := range tc.wantAt {
					d := insts[name].waitDeliveries(t, n)
					if d[0].GetFrom() != "a" || d[0].GetMessage().GetId() != tc.send.GetMessage().GetId() {
						t.Fatalf("%s got %v", name, d[0])
					}
				}
				time.Sleep(10 * time.Millisecond)
				for name, fi := range insts {
					if fi.count() != tc.wantAt[name] {
						t.Fatalf("%s has %d deliveries, want %d", name, fi.count(), tc.wantAt[name])
					}
				}
				return
			}
			if se == nil || se.GetCode() != tc.wantCode {
				t.Fatalf("want code %v, got %v", tc.wantCode, se)
			}
			if se.GetMessage() == "" {
				t.Fatal("refusal without a reason")
			}
		})
	}
}

func TestSyncRequestResponse(t *testing.T) {
	r := newTestRouter(t, Options{}, map[string]string{"caller": "c", "callee": "d"})
	caller := attachFake(t, r, "caller", "c1", false)
	callee := attachFake(t, r, "callee", "d1", false)
	req := msg("req-1", "query")
	if se := r.route(caller.att, &pluginv1.Send{Seq: 1, Kind: pluginv1.Send_KIND_MODULE, Target: "callee", SyncTimeoutMs: 2000, Message: req}); se != nil {
		t.Fatal(se)
	}
	callee.waitDeliveries(t, 1)
	resp := &pluginv1.Message{Id: "resp-1", ParentId: "req-1", Operation: "response", Content: []byte(`"OK"`)}
	if se := r.route(callee.att, &pluginv1.Send{Seq: 1, Kind: pluginv1.Send_KIND_RESPONSE, Message: resp}); se != nil {
		t.Fatal(se)
	}
	got := caller.waitDeliveries(t, 1)
	if got[0].GetMessage().GetParentId() != "req-1" || got[0].GetFrom() != "callee" {
		t.Fatalf("caller got %v", got[0])
	}
	// The call is answered once: a second answer has no waiter.
	se := r.route(callee.att, &pluginv1.Send{Seq: 2, Kind: pluginv1.Send_KIND_RESPONSE, Message: &pluginv1.Message{Id: "resp-2", ParentId: "req-1", Operation: "response"}})
	if se.GetCode() != pluginv1.SendError_CODE_NO_WAITER {
		t.Fatalf("second answer: %v", se)
	}
}

func TestSyncTimeoutExpires(t *testing.T) {
	now := time.Unix(1000, 0)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	r := newTestRouter(t, Options{Now: clock}, map[string]string{"caller": "c", "callee": "d"})
	caller := attachFake(t, r, "caller", "c1", false)
	attachFake(t, r, "callee", "d1", false)
	if se := r.route(caller.att, &pluginv1.Send{Kind: pluginv1.Send_KIND_MODULE, Target: "callee", SyncTimeoutMs: 100, Message: msg("req-t", "query")}); se != nil {
		t.Fatal(se)
	}
	if r.PendingCalls() != 1 {
		t.Fatalf("pending %d", r.PendingCalls())
	}
	mu.Lock()
	now = now.Add(200 * time.Millisecond)
	mu.Unlock()
	late := &pluginv1.Send{Kind: pluginv1.Send_KIND_RESPONSE, Message: &pluginv1.Message{Id: "late", ParentId: "req-t", Operation: "response"}}
	if se := r.route(nil, late); se.GetCode() != pluginv1.SendError_CODE_NO_WAITER {
		t.Fatalf("late answer: %v", se)
	}
	if se := r.route(caller.att, &pluginv1.Send{Kind: pluginv1.Send_KIND_MODULE, Target: "callee", SyncTimeoutMs: 100, Message: msg("req-u", "query")}); se != nil {
		t.Fatal(se)
	}
	mu.Lock()
	now = now.Add(time.Second)
	mu.Unlock()
	if n := r.Expire(); n != 1 || r.PendingCalls() != 0 {
		t.Fatalf("expired %d, pending %d", n, r.PendingCalls())
	}
}

func TestResponseReachesRestartedCaller(t *testing.T) {
	r := newTestRouter(t, Options{}, map[string]string{"caller": "c", "callee": "d"})
	first := attachFake(t, r, "caller", "c1", false)
	callee := attachFake(t, r, "callee", "d1", false)
	if se := r.route(first.att, &pluginv1.Send{Kind: pluginv1.Send_KIND_MODULE, Target: "callee", SyncTimeoutMs: 5000, Message: msg("req-r", "query")}); se != nil {
		t.Fatal(se)
	}
	callee.waitDeliveries(t, 1)
	first.att.Close() // the caller crashes while waiting
	second := attachFake(t, r, "caller", "c2", false)
	if se := r.route(callee.att, &pluginv1.Send{Kind: pluginv1.Send_KIND_RESPONSE, Message: &pluginv1.Message{Id: "resp-r", ParentId: "req-r", Operation: "response"}}); se != nil {
		t.Fatal(se)
	}
	got := second.waitDeliveries(t, 1)
	if got[0].GetMessage().GetId() != "resp-r" {
		t.Fatalf("restarted caller got %v", got[0])
	}
	if first.count() != 0 {
		t.Fatal("dead instance received the answer")
	}
}

func TestUnacknowledgedRedeliveredInOrder(t *testing.T) {
	r := newTestRouter(t, Options{}, map[string]string{"src": "s", "dst": "d"})
	src := attachFake(t, r, "src", "s1", false)
	dead := attachFake(t, r, "dst", "d1", true)
	for i := 0; i < 10; i++ {
		if se := r.route(src.att, &pluginv1.Send{Kind: pluginv1.Send_KIND_MODULE, Target: "dst", Message: msg(fmt.Sprintf("m%d", i), "insert")}); se != nil {
			t.Fatal(se)
		}
	}
	dead.waitDeliveries(t, 10)
	dead.mu.Lock()
	dead.att.Ack(dead.held[:4]) // four handled before the crash
	dead.mu.Unlock()
	if n := dead.att.Close(); n != 6 {
		t.Fatalf("returned %d, want 6", n)
	}
	next := attachFake(t, r, "dst", "d2", false)
	got := next.waitDeliveries(t, 6)
	for i, d := range got {
		if want := fmt.Sprintf("m%d", i+4); d.GetMessage().GetId() != want || !d.GetRedelivered() {
			t.Fatalf("delivery %d: %s redelivered=%v, want %s redelivered", i, d.GetMessage().GetId(), d.GetRedelivered(), want)
		}
	}
	if st := r.Stats("dst"); st.Queued != 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestFullQueueBlocksThenFails(t *testing.T) {
	r := newTestRouter(t, Options{QueueCapacity: 3, SendTimeout: 100 * time.Millisecond}, map[string]string{"src": "s", "dst": "d"})
	src := attachFake(t, r, "src", "s1", false)
	// dst has no instance: messages wait in its mailbox.
	for i := 0; i < 3; i++ {
		if se := r.route(src.att, &pluginv1.Send{Kind: pluginv1.Send_KIND_MODULE, Target: "dst", Message: msg(fmt.Sprintf("q%d", i), "insert")}); se != nil {
			t.Fatal(se)
		}
	}
	start := time.Now()
	se := r.route(src.att, &pluginv1.Send{Kind: pluginv1.Send_KIND_MODULE, Target: "dst", Message: msg("q3", "insert")})
	if se.GetCode() != pluginv1.SendError_CODE_QUEUE_FULL {
		t.Fatalf("want queue full, got %v", se)
	}
	if waited := time.Since(start); waited < 90*time.Millisecond {
		t.Fatalf("sender did not wait: %v", waited)
	}
	// Room appears while a sender waits: it succeeds.
	done := make(chan *pluginv1.SendError, 1)
	r2 := newTestRouter(t, Options{QueueCapacity: 1, SendTimeout: 5 * time.Second}, map[string]string{"src": "s", "dst": "d"})
	src2 := attachFake(t, r2, "src", "s1", false)
	if se := r2.route(src2.att, &pluginv1.Send{Kind: pluginv1.Send_KIND_MODULE, Target: "dst", Message: msg("x0", "insert")}); se != nil {
		t.Fatal(se)
	}
	go func() {
		done <- r2.route(src2.att, &pluginv1.Send{Kind: pluginv1.Send_KIND_MODULE, Target: "dst", Message: msg("x1", "insert")})
	}()
	time.Sleep(50 * time.Millisecond)
	dst := attachFake(t, r2, "dst", "d1", false)
	if se := <-done; se != nil {
		t.Fatalf("blocked sender failed: %v", se)
	}
	dst.waitDeliveries(t, 2)
}

func TestUnavailableModuleRefusesAtOnce(t *testing.T) {
	r := newTestRouter(t, Options{}, map[string]string{"src": "s", "dst": "d"})
	src := attachFake(t, r, "src", "s1", false)
	r.SetAvailable("dst", false, "plugin failed")
	se := r.route(src.att, &pluginv1.Send{Kind: pluginv1.Send_KIND_MODULE, Target: "dst", Message: msg("u1", "insert")})
	if se.GetCode() != pluginv1.SendError_CODE_SHUTTING_DOWN {
		t.Fatalf("got %v", se)
	}
	err := sdk.ErrorFromSendError(se)
	if !errors.Is(err, sdk.ErrShuttingDown) {
		t.Fatalf("error %v does not match", err)
	}
}

func TestActivateSwitchesNewDeliveries(t *testing.T) {
	r := newTestRouter(t, Options{}, map[string]string{"src": "s", "dst": "d"})
	src := attachFake(t, r, "src", "s1", false)
	old := attachFake(t, r, "dst", "old", true)
	for i := 0; i < 3; i++ {
		_ = r.route(src.att, &pluginv1.Send{Kind: pluginv1.Send_KIND_MODULE, Target: "dst", Message: msg(fmt.Sprintf("a%d", i), "insert")})
	}
	old.waitDeliveries(t, 3)
	fresh := attachFake(t, r, "dst", "new", false)
	fresh.att.Activate()
	for i := 0; i < 3; i++ {
		_ = r.route(src.att, &pluginv1.Send{Kind: pluginv1.Send_KIND_MODULE, Target: "dst", Message: msg(fmt.Sprintf("b%d", i), "insert")})
	}
	fresh.waitDeliveries(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := old.att.Drain(ctx); err == nil {
		t.Fatal("drain should time out: old holds three")
	}
	old.mu.Lock()
	old.att.Ack(old.held[:1])
	old.mu.Unlock()
	old.att.Close()
	got := fresh.waitDeliveries(t, 5)
	if got[3].GetMessage().GetId() != "a1" || got[4].GetMessage().GetId() != "a2" {
		t.Fatalf("left-overs not redelivered: %v %v", got[3].GetMessage().GetId(), got[4].GetMessage().GetId())
	}
	if old.count() != 3 {
		t.Fatalf("old got %d after switch", old.count())
	}
}

func TestGroupMembershipChanges(t *testing.T) {
	r := newTestRouter(t, Options{}, map[string]string{"a": "", "b": "g"})
	if err := r.SetGroup("a", "g"); err != nil {
		t.Fatal(err)
	}
	if err := r.SetGroup("b", "h"); err != nil {
		t.Fatal(err)
	}
	a := attachFake(t, r, "a", "a1", false)
	b := attachFake(t, r, "b", "b1", false)
	if se := r.route(nil, &pluginv1.Send{Kind: pluginv1.Send_KIND_GROUP, Target: "g", Message: msg("g1", "x")}); se != nil {
		t.Fatal(se)
	}
	a.waitDeliveries(t, 1)
	time.Sleep(10 * time.Millisecond)
	if b.count() != 0 {
		t.Fatal("b left group g but got its message")
	}
	if err := r.Register("a", "g"); err == nil {
		t.Fatal("duplicate register accepted")
	}
	if err := r.SetGroup("zz", "g"); err == nil {
		t.Fatal("set group of unknown module accepted")
	}
}

func TestDequeWraps(t *testing.T) {
	var d deque[int]
	for i := 0; i < 100; i++ {
		d.pushBack(i)
		if i%3 == 0 {
			d.popFront()
		}
	}
	d.pushFront(-1)
	if d.popFront() != -1 {
		t.Fatal("pushFront")
	}
	prev := -1
	for d.len() > 0 {
		v := d.popFront()
		if v <= prev {
			t.Fatalf("order broken: %d after %d", v, prev)
		}
		prev = v
	}
}
