package sdk

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	pluginv1 "github.com/edgehive/edgehive/sdk/proto/plugin/v1"
)

const waitLong = 5 * time.Second

// testModule records what the runtime does to it.
type testModule struct {
	info   PluginInfo
	schema *Schema
	setErr error
	// startErr is returned by Start; onStart, when set, runs inside Start.
	startErr error
	onStart  func(ctx context.Context, host Context)

	mu        sync.Mutex
	cfg       *Config
	host      Context
	startCtx  context.Context
	handled   []*Message
	healthErr error
	stops     int

	started chan struct{}
	handleN chan struct{} // one token per Handle call
}

func newTestModule() *testModule {
	return &testModule{
		info: PluginInfo{Name: "tmod", Group: "tgroup", Version: "1.2.3", APIVersions: []string{APIVersion1}, Description: "test module"},
		schema: &Schema{Attributes: []Attribute{
			{Name: "greeting", Type: TypeString, Default: "hello", Description: "word"},
			{Name: "interval", Type: TypeDuration, Default: "5s"},
			{Name: "server", Type: TypeString, Required: true},
		}, Blocks: []Block{{Name: "tls", Schema: Schema{Attributes: []Attribute{{Name: "cert", Type: TypeString}}}}}},
		started: make(chan struct{}),
		handleN: make(chan struct{}, 1024),
	}
}

func (m *testModule) Info() PluginInfo      { return m.info }
func (m *testModule) ConfigSchema() *Schema { return m.schema }

func (m *testModule) SetConfig(cfg *Config) error {
	if m.setErr != nil {
		return m.setErr
	}
	m.mu.Lock()
	m.cfg = cfg
	m.mu.Unlock()
	return nil
}

func (m *testModule) Start(ctx context.Context, host Context) error {
	m.mu.Lock()
	m.host = host
	m.startCtx = ctx
	m.mu.Unlock()
	if m.onStart != nil {
		m.onStart(ctx, host)
	}
	close(m.started)
	return m.startErr
}

func (m *testModule) Handle(_ context.Context, msg *Message) error {
	m.mu.Lock()
	m.handled = append(m.handled, msg)
	m.mu.Unlock()
	m.handleN <- struct{}{}
	switch msg.Router.Operation {
	case "boom":
		panic("handler exploded")
	case "fail":
		return errors.New("handler failed")
	}
	return nil
}

func (m *testModule) Health(context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.healthErr
}

func (m *testModule) Stop(context.Context) error {
	m.mu.Lock()
	m.stops++
	m.mu.Unlock()
	return nil
}

func (m *testModule) handledIDs() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var ids []string
	for _, h := range m.handled {
		ids = append(ids, h.Header.ID)
	}
	return ids
}

func (m *testModule) getHost(t *testing.T) Context {
	t.Helper()
	select {
	case <-m.started:
	case <-time.After(waitLong):
		t.Fatal("module was not started")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.host
}

// waitHandled waits until Handle has been called n times in all.
func (m *testModule) waitHandled(t *testing.T, n int) {
	t.Helper()
	deadline := time.After(waitLong)
	for {
		m.mu.Lock()
		got := len(m.handled)
		m.mu.Unlock()
		if got >= n {
			return
		}
		select {
		case <-m.handleN:
		case <-deadline:
			t.Fatalf("Handle called %d times, want %d", got, n)
		}
	}
}

// rig serves a runtime over an in-memory gRPC connection; the test is the host.
type rig struct {
	t      *testing.T
	rt     *runtime
	client pluginv1.PluginClient
	exits  chan int
}

func newRig(t *testing.T, mod Module) *rig {
	t.Helper()
	rt := newRuntime(mod, hclog.NewNullLogger())
	exits := make(chan int, 8)
	rt.exit = func(code int) { exits <- code }

	lis := bufconn.Listen(1 << 20)
	srv := grpc.NewServer(grpc.MaxRecvMsgSize(MaxFrameBytes), grpc.MaxSendMsgSize(MaxFrameBytes))
	pluginv1.RegisterPluginServer(srv, rt)
	go func() { _ = srv.Serve(lis) }()
	conn, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = conn.Close()
		srv.Stop()
	})
	return &rig{t: t, rt: rt, client: pluginv1.NewPluginClient(conn), exits: exits}
}

func (r *rig) setConfig(raw string) {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	_, err := r.client.SetConfig(ctx, &pluginv1.SetConfigRequest{
		ApiVersion: APIVersion1, ConfigJson: []byte(raw), NodeName: "node-1",
		DataDir: "/data/tmod", PluginName: "tmod-a", InstanceId: "inst-1",
	})
	if err != nil {
		r.t.Fatalf("SetConfig: %v", err)
	}
}

// shutdown stops the plugin the way the host does before it drops the channel.
func (r *rig) shutdown() {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	if _, err := r.client.Shutdown(ctx, &pluginv1.ShutdownRequest{DeadlineUnixMs: time.Now().Add(waitLong).UnixMilli()}); err != nil {
		r.t.Fatalf("Shutdown: %v", err)
	}
}

func (r *rig) assertNoExit() {
	r.t.Helper()
	select {
	case code := <-r.exits:
		r.t.Fatalf("runtime exited with code %d", code)
	case <-time.After(150 * time.Millisecond): // loseHost waits 100ms before exiting
	}
}

// hostChannel is the host's end of the Channel stream.
type hostChannel struct {
	t      *testing.T
	stream pluginv1.Plugin_ChannelClient
	cancel context.CancelFunc

	mu      sync.Mutex
	acks    map[uint64]int
	sends   []*pluginv1.Send
	recvErr error
	notify  chan struct{}
	done    chan struct{}
}

func (r *rig) openChannel() *hostChannel {
	r.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := r.client.Channel(ctx)
	if err != nil {
		cancel()
		r.t.Fatalf("Channel: %v", err)
	}
	h := &hostChannel{t: r.t, stream: stream, cancel: cancel, acks: map[uint64]int{}, notify: make(chan struct{}, 1), done: make(chan struct{})}
	go h.readLoop()
	return h
}

func (h *hostChannel) readLoop() {
	defer close(h.done)
	for {
		f, err := h.stream.Recv()
		h.mu.Lock()
		if err != nil {
			h.recvErr = err
			h.mu.Unlock()
			h.wake()
			return
		}
		for _, a := range f.GetAcks() {
			h.acks[a]++
		}
		h.sends = append(h.sends, f.GetSends()...)
		h.mu.Unlock()
		h.wake()
	}
}

func (h *hostChannel) wake() {
	select {
	case h.notify <- struct{}{}:
	default:
	}
}

// waitFor waits until cond, called under the lock, holds.
func (h *hostChannel) waitFor(what string, cond func() bool) {
	h.t.Helper()
	deadline := time.After(waitLong)
	for {
		h.mu.Lock()
		ok := cond()
		err := h.recvErr
		h.mu.Unlock()
		if ok {
			return
		}
		if err != nil {
			h.t.Fatalf("waiting for %s: channel ended: %v", what, err)
		}
		select {
		case <-h.notify:
		case <-deadline:
			h.t.Fatalf("timed out waiting for %s", what)
		}
	}
}

func (h *hostChannel) waitAcks(seqs ...uint64) {
	h.t.Helper()
	h.waitFor(fmt.Sprintf("acks %v", seqs), func() bool {
		for _, s := range seqs {
			if h.acks[s] == 0 {
				return false
			}
		}
		return true
	})
}

func (h *hostChannel) ackCount(seq uint64) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.acks[seq]
}

// waitSend waits for the n-th send (0-based) and returns it.
func (h *hostChannel) waitSend(n int) *pluginv1.Send {
	h.t.Helper()
	h.waitFor(fmt.Sprintf("send #%d", n), func() bool { return len(h.sends) > n })
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.sends[n]
}

func (h *hostChannel) send(f *pluginv1.HostFrame) {
	h.t.Helper()
	if err := h.stream.Send(f); err != nil {
		h.t.Fatalf("host send: %v", err)
	}
}

// close ends the stream from the host side.
func (h *hostChannel) close() {
	_ = h.stream.CloseSend()
	h.cancel()
	<-h.done
}

func delivery(seq uint64, id, op string) *pluginv1.Delivery {
	return &pluginv1.Delivery{Seq: seq, From: "other", Message: &pluginv1.Message{
		Id: id, Timestamp: 1, Source: "other", Group: "meta", Operation: op, Resource: "default/pod/" + id,
		Content: []byte(`{"n":` + fmt.Sprint(seq) + `}`),
	}}
}

// started brings a rig up to an open channel with the module started.
func started(t *testing.T, mod *testModule) (*rig, *hostChannel, Context) {
	t.Helper()
	r := newRig(t, mod)
	r.setConfig(`{"server":"wss://x"}`)
	h := r.openChannel()
	host := mod.getHost(t)
	t.Cleanup(func() {
		r.shutdown()
		h.close()
		r.assertNoExit()
	})
	return r, h, host
}

func TestRuntimeGetInfo(t *testing.T) {
	mod := newTestModule()
	r := newRig(t, mod)
	ctx := context.Background()
	info, err := r.client.GetInfo(ctx, &pluginv1.GetInfoRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if info.GetName() != "tmod" || info.GetGroup() != "tgroup" || info.GetVersion() != "1.2.3" || info.GetDescription() != "test module" {
		t.Errorf("info = %v", info)
	}
	if !slices.Equal(info.GetApiVersions(), []string{APIVersion1}) {
		t.Errorf("api versions %v", info.GetApiVersions())
	}
	s, err := SchemaFromProto(info.GetConfigSchema())
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Attributes) != 3 || len(s.Blocks) != 1 || s.Blocks[0].Name != "tls" {
		t.Fatalf("schema %+v", s)
	}
	a := s.Attributes[0]
	if a.Name != "greeting" || a.Type != TypeString || a.Description != "word" || string(a.Default.(json.RawMessage)) != `"hello"` {
		t.Errorf("attribute %+v", a)
	}
	if !s.Attributes[2].Required || s.Attributes[2].Default != nil {
		t.Errorf("required attribute %+v", s.Attributes[2])
	}

	// Without a schema, no schema; with a bad one, an error.
	mod2 := newTestModule()
	mod2.schema = nil
	if info, err := newRig(t, mod2).client.GetInfo(ctx, &pluginv1.GetInfoRequest{}); err != nil || info.GetConfigSchema() != nil {
		t.Errorf("nil schema: %v, %v", info.GetConfigSchema(), err)
	}
	mod3 := newTestModule()
	mod3.schema = &Schema{Attributes: []Attribute{{Name: "a", Type: TypeNumber, Default: "x"}}}
	if _, err := newRig(t, mod3).client.GetInfo(ctx, &pluginv1.GetInfoRequest{}); status.Code(err) != codes.Internal || !strings.Contains(err.Error(), "bad schema") {
		t.Errorf("bad schema: err = %v, want Internal", err)
	}
}

func TestRuntimeSetConfig(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name     string
		version  string
		setErr   error
		wantCode codes.Code
	}{
		{name: "supported", version: APIVersion1, wantCode: codes.OK},
		{name: "unsupported api version", version: "v2", wantCode: codes.FailedPrecondition},
		{name: "empty api version", version: "", wantCode: codes.FailedPrecondition},
		{name: "module refuses", version: APIVersion1, setErr: errors.New("server is required"), wantCode: codes.InvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mod := newTestModule()
			mod.setErr = tt.setErr
			r := newRig(t, mod)
			_, err := r.client.SetConfig(ctx, &pluginv1.SetConfigRequest{
				ApiVersion: tt.version, ConfigJson: []byte(`{"server":"s"}`), NodeName: "n", DataDir: "/d", PluginName: "p", InstanceId: "i",
			})
			if status.Code(err) != tt.wantCode {
				t.Fatalf("err = %v, want code %v", err, tt.wantCode)
			}
			if tt.setErr != nil && !strings.Contains(err.Error(), tt.setErr.Error()) {
				t.Errorf("error %v does not carry the module's", err)
			}
			mod.mu.Lock()
			cfg := mod.cfg
			mod.mu.Unlock()
			if tt.wantCode != codes.OK {
				if cfg != nil {
					t.Errorf("module got a config although SetConfig failed")
				}
				// A failed SetConfig leaves the plugin unconfigured: Channel is refused.
				h := r.openChannel()
				h.waitFor("channel refusal", func() bool { return h.recvErr != nil })
				if status.Code(h.recvErr) != codes.FailedPrecondition {
					t.Errorf("Channel after failed SetConfig: %v", h.recvErr)
				}
				h.close()
				return
			}
			want := Config{APIVersion: APIVersion1, NodeName: "n", DataDir: "/d", PluginName: "p", InstanceID: "i", Raw: json.RawMessage(`{"server":"s"}`)}
			if cfg == nil || cfg.APIVersion != want.APIVersion || cfg.NodeName != want.NodeName || cfg.DataDir != want.DataDir ||
				cfg.PluginName != want.PluginName || cfg.InstanceID != want.InstanceID || string(cfg.Raw) != string(want.Raw) {
				t.Errorf("config %+v, want %+v", cfg, want)
			}
		})
	}
}

func TestRuntimeChannelBeforeSetConfig(t *testing.T) {
	mod := newTestModule()
	r := newRig(t, mod)
	h := r.openChannel()
	h.waitFor("channel refusal", func() bool { return h.recvErr != nil })
	if status.Code(h.recvErr) != codes.FailedPrecondition || !strings.Contains(h.recvErr.Error(), "SetConfig") {
		t.Fatalf("err = %v, want FailedPrecondition naming SetConfig", h.recvErr)
	}
	select {
	case <-mod.started:
		t.Fatal("module started without config")
	default:
	}
	h.close()
	r.assertNoExit()
}

func TestRuntimeSecondChannelRefused(t *testing.T) {
	mod := newTestModule()
	r, _, _ := started(t, mod)
	h2 := r.openChannel()
	h2.waitFor("refusal", func() bool { return h2.recvErr != nil })
	if status.Code(h2.recvErr) != codes.AlreadyExists {
		t.Fatalf("second channel: %v, want AlreadyExists", h2.recvErr)
	}
	h2.close()
	// SetConfig is refused once started.
	_, err := r.client.SetConfig(context.Background(), &pluginv1.SetConfigRequest{ApiVersion: APIVersion1})
	if status.Code(err) != codes.FailedPrecondition {
		t.Errorf("SetConfig after start: %v, want FailedPrecondition", err)
	}
}

func TestRuntimeContextAccessors(t *testing.T) {
	mod := newTestModule()
	_, _, host := started(t, mod)
	if host.Name() != "tmod-a" || host.NodeName() != "node-1" || host.DataDir() != "/data/tmod" || host.Logger() == nil {
		t.Errorf("context: name %q node %q dir %q", host.Name(), host.NodeName(), host.DataDir())
	}
}

func TestRuntimeDeliveriesInOrderAndAcked(t *testing.T) {
	mod := newTestModule()
	_, h, _ := started(t, mod)
	// Two frames, several deliveries each, plus a handler error which is still acked.
	h.send(&pluginv1.HostFrame{Deliveries: []*pluginv1.Delivery{delivery(1, "m1", "insert"), delivery(2, "m2", "update"), delivery(3, "m3", "fail")}})
	h.send(&pluginv1.HostFrame{Deliveries: []*pluginv1.Delivery{delivery(4, "m4", "delete"), delivery(5, "m5", "insert")}})
	mod.waitHandled(t, 5)
	h.waitAcks(1, 2, 3, 4, 5)
	if got := mod.handledIDs(); !slices.Equal(got, []string{"m1", "m2", "m3", "m4", "m5"}) {
		t.Errorf("handled %v, want m1..m5 in order", got)
	}
	mod.mu.Lock()
	first := mod.handled[0]
	mod.mu.Unlock()
	if first.Router.Operation != "insert" || first.Router.Resource != "default/pod/m1" || string(first.Content) != `{"n":1}` || first.Router.Source != "other" {
		t.Errorf("first message %+v content %s", first, first.Content)
	}
	for seq := uint64(1); seq <= 5; seq++ {
		if n := h.ackCount(seq); n != 1 {
			t.Errorf("seq %d acked %d times", seq, n)
		}
	}
}

func TestRuntimeDuplicateHandledOnceAckedTwice(t *testing.T) {
	mod := newTestModule()
	_, h, _ := started(t, mod)
	h.send(&pluginv1.HostFrame{Deliveries: []*pluginv1.Delivery{delivery(1, "dup", "insert")}})
	h.waitAcks(1)
	d := delivery(2, "dup", "insert")
	d.Redelivered = true
	h.send(&pluginv1.HostFrame{Deliveries: []*pluginv1.Delivery{d, delivery(3, "other", "insert")}})
	h.waitAcks(2, 3)
	mod.waitHandled(t, 2)
	if got := mod.handledIDs(); !slices.Equal(got, []string{"dup", "other"}) {
		t.Errorf("handled %v, want [dup other]", got)
	}
	if h.ackCount(1) != 1 || h.ackCount(2) != 1 {
		t.Errorf("acks: seq1 %d seq2 %d", h.ackCount(1), h.ackCount(2))
	}
}

func TestRuntimeHandlerPanicRecovered(t *testing.T) {
	mod := newTestModule()
	r, h, _ := started(t, mod)
	h.send(&pluginv1.HostFrame{Deliveries: []*pluginv1.Delivery{delivery(1, "p1", "boom"), delivery(2, "p2", "insert")}})
	h.waitAcks(1, 2)
	mod.waitHandled(t, 2)
	if got := mod.handledIDs(); !slices.Equal(got, []string{"p1", "p2"}) {
		t.Errorf("handled %v", got)
	}
	// The plugin still answers.
	if resp, err := r.client.Health(context.Background(), &pluginv1.HealthRequest{}); err != nil || !resp.GetHealthy() {
		t.Errorf("health after panic: %v, %v", resp, err)
	}
}

func TestRuntimeSendConfirmed(t *testing.T) {
	tests := []struct {
		name     string
		call     func(ctx context.Context, host Context, msg *Message) error
		kind     pluginv1.Send_Kind
		target   string
		parentID string
	}{
		{name: "Send", call: func(ctx context.Context, host Context, m *Message) error { return host.Send(ctx, "metamanager", m) },
			kind: pluginv1.Send_KIND_MODULE, target: "metamanager"},
		{name: "SendToGroup", call: func(ctx context.Context, host Context, m *Message) error { return host.SendToGroup(ctx, GroupHub, m) },
			kind: pluginv1.Send_KIND_GROUP, target: GroupHub},
		{name: "Response", call: func(ctx context.Context, host Context, m *Message) error { return host.Response(ctx, m) },
			kind: pluginv1.Send_KIND_RESPONSE, parentID: "req-9"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mod := newTestModule()
			msg := NewMessage(tt.parentID).BuildRouter("tmod", "meta", "default/pod/x", OpUpdate)
			if err := msg.FillBody(map[string]string{"k": "v"}); err != nil {
				t.Fatal(err)
			}
			result := make(chan error, 1)
			// The module sends from a goroutine it starts in Start.
			mod.onStart = func(ctx context.Context, host Context) {
				go func() {
					sctx, cancel := context.WithTimeout(ctx, waitLong)
					defer cancel()
					result <- tt.call(sctx, host, msg)
				}()
			}
			_, h, _ := started(t, mod)
			s := h.waitSend(0)
			if s.GetKind() != tt.kind || s.GetTarget() != tt.target || s.GetSeq() == 0 || s.GetSyncTimeoutMs() != 0 {
				t.Errorf("send %v", s)
			}
			if got := MessageFromProto(s.GetMessage()); got.Header.ID != msg.Header.ID || got.Header.ParentID != tt.parentID ||
				string(got.Content) != `{"k":"v"}` || got.Router != msg.Router {
				t.Errorf("sent message %+v", got)
			}
			select {
			case err := <-result:
				t.Fatalf("send returned %v before the host confirmed it", err)
			case <-time.After(50 * time.Millisecond):
			}
			h.send(&pluginv1.HostFrame{SendConfirms: []uint64{s.GetSeq()}})
			select {
			case err := <-result:
				if err != nil {
					t.Fatalf("send: %v", err)
				}
			case <-time.After(waitLong):
				t.Fatal("send did not return after the confirm")
			}
		})
	}
}

func TestRuntimeSendErrors(t *testing.T) {
	tests := []struct {
		code pluginv1.SendError_Code
		want error
	}{
		{pluginv1.SendError_CODE_QUEUE_FULL, ErrQueueFull},
		{pluginv1.SendError_CODE_UNKNOWN_DESTINATION, ErrUnknownDestination},
		{pluginv1.SendError_CODE_INVALID, ErrInvalidMessage},
		{pluginv1.SendError_CODE_TOO_LARGE, ErrTooLarge},
		{pluginv1.SendError_CODE_NO_WAITER, ErrNoWaiter},
		{pluginv1.SendError_CODE_SHUTTING_DOWN, ErrShuttingDown},
	}
	mod := newTestModule()
	_, h, host := started(t, mod)
	for i, tt := range tests {
		t.Run(tt.code.String(), func(t *testing.T) {
			result := make(chan error, 1)
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), waitLong)
				defer cancel()
				result <- host.Send(ctx, "metamanager", NewMessage("").BuildRouter("tmod", "meta", "r", OpInsert))
			}()
			s := h.waitSend(i)
			h.send(&pluginv1.HostFrame{SendErrors: []*pluginv1.SendError{{Seq: s.GetSeq(), Code: tt.code, Message: "detail " + tt.code.String()}}})
			var err error
			select {
			case err = <-result:
			case <-time.After(waitLong):
				t.Fatal("send did not return after the error")
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want errors.Is %v", err, tt.want)
			}
			if !strings.Contains(err.Error(), "detail "+tt.code.String()) {
				t.Errorf("err %q lacks the host's message", err)
			}
			for _, other := range tests {
				if other.want != tt.want && errors.Is(err, other.want) {
					t.Errorf("err %v also matches %v", err, other.want)
				}
			}
		})
	}
	// Confirms and errors for unknown seqs are ignored.
	h.send(&pluginv1.HostFrame{SendConfirms: []uint64{9999}, SendErrors: []*pluginv1.SendError{{Seq: 9998, Code: pluginv1.SendError_CODE_QUEUE_FULL}}})
}

func TestErrorFromSendError(t *testing.T) {
	err := ErrorFromSendError(&pluginv1.SendError{Code: pluginv1.SendError_CODE_UNSPECIFIED, Message: "odd"})
	for _, sentinel := range []error{ErrQueueFull, ErrUnknownDestination, ErrInvalidMessage, ErrTooLarge, ErrNoWaiter, ErrShuttingDown, ErrHostGone} {
		if errors.Is(err, sentinel) {
			t.Errorf("unspecified code matches %v", sentinel)
		}
	}
	if !strings.Contains(err.Error(), "odd") {
		t.Errorf("err %q lacks the message", err)
	}
}

func TestRuntimeSendRefusedLocally(t *testing.T) {
	mod := newTestModule()
	_, h, host := started(t, mod)
	ctx := context.Background()
	tests := []struct {
		name string
		call func() error
		want error
	}{
		{name: "nil Send", call: func() error { return host.Send(ctx, "x", nil) }, want: ErrInvalidMessage},
		{name: "nil SendToGroup", call: func() error { return host.SendToGroup(ctx, "x", nil) }, want: ErrInvalidMessage},
		{name: "nil Response", call: func() error { return host.Response(ctx, nil) }, want: ErrInvalidMessage},
		{name: "Response without parent", call: func() error { return host.Response(ctx, NewMessage("")) }, want: ErrInvalidMessage},
		{name: "nil SendSync", call: func() error { _, err := host.SendSync(ctx, "x", nil); return err }, want: ErrInvalidMessage},
		{name: "too large", call: func() error {
			m := NewMessage("")
			m.Content = make(json.RawMessage, MaxSendBytes+1)
			return host.Send(ctx, "x", m)
		}, want: ErrTooLarge},
		{name: "SendSync past its deadline", call: func() error {
			dctx, cancel := context.WithDeadline(ctx, time.Now().Add(-time.Second))
			defer cancel()
			_, err := host.SendSync(dctx, "x", NewMessage(""))
			return err
		}, want: context.DeadlineExceeded},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.call(); !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
		})
	}
	// None of them reached the channel.
	h.mu.Lock()
	n := len(h.sends)
	h.mu.Unlock()
	if n != 0 {
		t.Errorf("%d sends reached the host", n)
	}
}

func TestRuntimeSendContextExpires(t *testing.T) {
	mod := newTestModule()
	_, h, host := started(t, mod)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	err := host.Send(ctx, "slow", NewMessage("").BuildRouter("tmod", "meta", "r", OpInsert))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want DeadlineExceeded", err)
	}
	// The late confirm is absorbed, and the send slot comes back.
	s := h.waitSend(0)
	rt := host.(*moduleContext).rt
	if n := outstanding(rt); n != 1 {
		t.Fatalf("%d sends outstanding, want 1", n)
	}
	h.send(&pluginv1.HostFrame{SendConfirms: []uint64{s.GetSeq()}})
	eventually(t, "send slot released", func() bool { return outstanding(rt) == 0 })
}

// outstanding counts the runtime's sends awaiting a verdict; -1 while the
// send window does not agree (a verdict is being applied).
func outstanding(rt *runtime) int {
	rt.mu.Lock()
	n := len(rt.pending)
	rt.mu.Unlock()
	if w := len(rt.window); w != n {
		return -1
	}
	return n
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitLong)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestRuntimeSendInsideStart: a module that sends from Start itself, before
// returning, gets its verdict like any other sender (the channel is read
// before Start runs).
func TestRuntimeSendInsideStart(t *testing.T) {
	mod := newTestModule()
	result := make(chan error, 1)
	mod.onStart = func(ctx context.Context, host Context) {
		sctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		result <- host.Send(sctx, "metamanager", NewMessage("").BuildRouter("tmod", "meta", "r", OpInsert))
	}
	r := newRig(t, mod)
	r.setConfig(`{}`)
	h := r.openChannel()
	s := h.waitSend(0)
	h.send(&pluginv1.HostFrame{SendConfirms: []uint64{s.GetSeq()}})
	err := <-result
	mod.getHost(t)
	r.shutdown()
	h.close()
	r.assertNoExit()
	if err != nil {
		t.Fatalf("Send inside Start: %v", err)
	}
}

func TestRuntimeSendSync(t *testing.T) {
	mod := newTestModule()
	_, h, host := started(t, mod)
	req := NewMessage("").BuildRouter("tmod", "meta", "default/configmap/c1", OpQuery)
	type answer struct {
		msg *Message
		err error
	}
	result := make(chan answer, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitLong)
		defer cancel()
		m, err := host.SendSync(ctx, "metamanager", req)
		result <- answer{m, err}
	}()
	s := h.waitSend(0)
	if s.GetKind() != pluginv1.Send_KIND_MODULE || s.GetTarget() != "metamanager" {
		t.Errorf("send %v", s)
	}
	if ms := s.GetSyncTimeoutMs(); ms <= 0 || ms > waitLong.Milliseconds() {
		t.Errorf("sync_timeout_ms = %d, want in (0, %d]", ms, waitLong.Milliseconds())
	}
	if !s.GetMessage().GetSync() || s.GetMessage().GetId() != req.Header.ID {
		t.Errorf("sync request %v", s.GetMessage())
	}
	// Confirm the send, then answer it with a delivery whose parent is the request.
	h.send(&pluginv1.HostFrame{SendConfirms: []uint64{s.GetSeq()}})
	resp := &pluginv1.Delivery{Seq: 50, From: "metamanager", Message: &pluginv1.Message{
		Id: "resp-1", ParentId: req.Header.ID, Operation: OpResponse, Source: "metamanager", Content: []byte(`{"data":{"k":"v"}}`),
	}}
	h.send(&pluginv1.HostFrame{Deliveries: []*pluginv1.Delivery{resp}})
	var got answer
	select {
	case got = <-result:
	case <-time.After(waitLong):
		t.Fatal("SendSync did not return")
	}
	if got.err != nil {
		t.Fatal(got.err)
	}
	if got.msg.Header.ID != "resp-1" || got.msg.Header.ParentID != req.Header.ID || string(got.msg.Content) != `{"data":{"k":"v"}}` {
		t.Errorf("answer %+v", got.msg)
	}
	h.waitAcks(50)
	// A later ordinary delivery is handled; the answer never was.
	h.send(&pluginv1.HostFrame{Deliveries: []*pluginv1.Delivery{delivery(51, "after", "insert")}})
	h.waitAcks(51)
	mod.waitHandled(t, 1)
	if ids := mod.handledIDs(); !slices.Equal(ids, []string{"after"}) {
		t.Errorf("handled %v, want only [after]", ids)
	}
	// A second answer to the same request is an ordinary delivery now.
	late := &pluginv1.Delivery{Seq: 52, Message: &pluginv1.Message{Id: "resp-2", ParentId: req.Header.ID, Operation: OpResponse}}
	h.send(&pluginv1.HostFrame{Deliveries: []*pluginv1.Delivery{late}})
	h.waitAcks(52)
	mod.waitHandled(t, 2)
	if ids := mod.handledIDs(); !slices.Equal(ids, []string{"after", "resp-2"}) {
		t.Errorf("handled %v", ids)
	}
}

func TestRuntimeSendSyncTimeout(t *testing.T) {
	mod := newTestModule()
	_, h, host := started(t, mod)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	result := make(chan error, 1)
	go func() {
		_, err := host.SendSync(ctx, "metamanager", NewMessage("").BuildRouter("tmod", "meta", "r", OpQuery))
		result <- err
	}()
	s := h.waitSend(0)
	h.send(&pluginv1.HostFrame{SendConfirms: []uint64{s.GetSeq()}})
	select {
	case err := <-result:
		if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "no answer") {
			t.Fatalf("err = %v, want a DeadlineExceeded without answer", err)
		}
	case <-time.After(waitLong):
		t.Fatal("SendSync did not time out")
	}
	// The waiter is gone: a late answer goes to Handle.
	h.send(&pluginv1.HostFrame{Deliveries: []*pluginv1.Delivery{{Seq: 7, Message: &pluginv1.Message{Id: "late", ParentId: s.GetMessage().GetId(), Operation: OpResponse}}}})
	h.waitAcks(7)
	mod.waitHandled(t, 1)
}

func TestRuntimeHealth(t *testing.T) {
	mod := newTestModule()
	r := newRig(t, mod)
	ctx := context.Background()
	check := func(wantHealthy bool, wantMsg string) {
		t.Helper()
		resp, err := r.client.Health(ctx, &pluginv1.HealthRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if resp.GetHealthy() != wantHealthy || resp.GetMessage() != wantMsg {
			t.Errorf("health = %v %q, want %v %q", resp.GetHealthy(), resp.GetMessage(), wantHealthy, wantMsg)
		}
	}
	check(true, "")
	mod.mu.Lock()
	mod.healthErr = errors.New("cloud unreachable")
	mod.mu.Unlock()
	check(false, "cloud unreachable")
	mod.mu.Lock()
	mod.healthErr = nil
	mod.mu.Unlock()
	check(true, "")

	// A module without HealthChecker is healthy.
	plain := struct{ Module }{newTestModule()}
	resp, err := newRig(t, plain).client.Health(ctx, &pluginv1.HealthRequest{})
	if err != nil || !resp.GetHealthy() {
		t.Errorf("plain module health: %v, %v", resp, err)
	}
}

func TestRuntimeShutdown(t *testing.T) {
	mod := newTestModule()
	r := newRig(t, mod)
	r.setConfig(`{}`)
	h := r.openChannel()
	mod.getHost(t)
	h.send(&pluginv1.HostFrame{Deliveries: []*pluginv1.Delivery{delivery(1, "s1", "insert")}})
	h.waitAcks(1)
	r.shutdown()
	mod.mu.Lock()
	stops, startCtx := mod.stops, mod.startCtx
	mod.mu.Unlock()
	if stops != 1 {
		t.Errorf("Stop called %d times, want 1", stops)
	}
	if startCtx.Err() == nil {
		t.Error("Start's context is not cancelled after Shutdown")
	}
	r.shutdown() // idempotent
	mod.mu.Lock()
	stops = mod.stops
	mod.mu.Unlock()
	if stops != 1 {
		t.Errorf("second Shutdown: Stop called %d times", stops)
	}
	// Deliveries after Shutdown are not handled.
	h.send(&pluginv1.HostFrame{Deliveries: []*pluginv1.Delivery{delivery(2, "s2", "insert")}})
	time.Sleep(100 * time.Millisecond)
	if ids := mod.handledIDs(); !slices.Equal(ids, []string{"s1"}) {
		t.Errorf("handled %v after Shutdown", ids)
	}
	h.close()
	r.assertNoExit()

	// Shutdown before any channel still stops the module.
	mod2 := newTestModule()
	r2 := newRig(t, mod2)
	r2.shutdown()
	mod2.mu.Lock()
	stops = mod2.stops
	mod2.mu.Unlock()
	if stops != 1 {
		t.Errorf("Shutdown before start: Stop called %d times", stops)
	}
}

// TestRuntimeLoseHost: a channel that ends without Shutdown fails the sends
// in flight with ErrHostGone and exits the process (here: the hook).
func TestRuntimeLoseHost(t *testing.T) {
	mod := newTestModule()
	r := newRig(t, mod)
	r.setConfig(`{}`)
	h := r.openChannel()
	host := mod.getHost(t)
	result := make(chan error, 1)
	go func() { result <- host.Send(context.Background(), "metamanager", NewMessage("")) }()
	h.waitSend(0)
	h.close()
	select {
	case err := <-result:
		if !errors.Is(err, ErrHostGone) {
			t.Errorf("pending send: %v, want ErrHostGone", err)
		}
	case <-time.After(waitLong):
		t.Fatal("pending send did not fail")
	}
	select {
	case code := <-r.exits:
		if code != 3 {
			t.Errorf("exit code %d, want 3", code)
		}
	case <-time.After(waitLong):
		t.Fatal("runtime did not exit after losing its host")
	}
	// New sends fail at once.
	if err := host.Send(context.Background(), "metamanager", NewMessage("")); !errors.Is(err, ErrHostGone) {
		t.Errorf("send after losing the host: %v", err)
	}
	r.rt.stop(context.Background()) // end the handler goroutine
}

func TestRuntimeStartFails(t *testing.T) {
	mod := newTestModule()
	mod.startErr = errors.New("cannot open db")
	r := newRig(t, mod)
	r.setConfig(`{}`)
	h := r.openChannel()
	h.waitFor("channel end", func() bool { return h.recvErr != nil })
	if status.Code(h.recvErr) != codes.Aborted || !strings.Contains(h.recvErr.Error(), "cannot open db") {
		t.Errorf("channel error %v, want Aborted with the cause", h.recvErr)
	}
	h.close()
	select {
	case code := <-r.exits:
		if code != 3 {
			t.Errorf("exit code %d, want 3", code)
		}
	case <-time.After(waitLong):
		t.Fatal("a plugin whose Start failed did not exit")
	}
}

func TestIDSet(t *testing.T) {
	s := newIDSet(3)
	steps := []struct {
		id   string
		want bool
	}{
		{"a", true}, {"b", true}, {"a", false}, {"c", true}, {"b", false},
		{"d", true}, // evicts a
		{"a", true}, // evicts b
		{"c", false}, {"b", true},
	}
	for i, st := range steps {
		if got := s.add(st.id); got != st.want {
			t.Fatalf("step %d add(%q) = %v, want %v", i, st.id, got, st.want)
		}
	}
	if len(s.set) != 3 {
		t.Errorf("set holds %d ids, want 3", len(s.set))
	}
}
