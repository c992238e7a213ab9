package sdktest_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgehive/edgehive/sdk"
	"github.com/edgehive/edgehive/sdk/sdktest"
)

// recorder is a module that remembers what the harness did to it.
type recorder struct {
	schema *sdk.Schema

	mu      sync.Mutex
	cfg     *sdk.Config
	handled []string
	host    sdk.Context
	ctx     context.Context

	stopped atomic.Bool
	fail    error
}

var (
	_ sdk.Module        = (*recorder)(nil)
	_ sdk.Stopper       = (*recorder)(nil)
	_ sdk.HealthChecker = (*recorder)(nil)
)

func (r *recorder) Info() sdk.PluginInfo {
	return sdk.PluginInfo{Name: "rec", Group: "user", Version: "0.0.1", APIVersions: []string{sdk.APIVersion1}}
}

func (r *recorder) ConfigSchema() *sdk.Schema { return r.schema }

func (r *recorder) SetConfig(cfg *sdk.Config) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.cfg = cfg
	return nil
}

func (r *recorder) Start(ctx context.Context, host sdk.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ctx, r.host = ctx, host
	return nil
}

func (r *recorder) Handle(ctx context.Context, msg *sdk.Message) error {
	r.mu.Lock()
	r.handled = append(r.handled, msg.Header.ID)
	host := r.host
	r.mu.Unlock()
	switch msg.Router.Operation {
	case "panic":
		panic("boom")
	case "fail":
		return r.fail
	case "async":
		go func() {
			m := sdk.NewMessage(msg.Header.ID).BuildRouter("rec", "user", msg.Router.Resource, "done")
			_ = host.Send(ctx, msg.Router.Source, m)
		}()
	}
	return nil
}

func (r *recorder) Health(context.Context) error { return r.fail }

func (r *recorder) Stop(context.Context) error {
	r.stopped.Store(true)
	return nil
}

func (r *recorder) handledIDs() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.handled...)
}

func msg(op string) *sdk.Message {
	return sdk.NewMessage("").BuildRouter("tester", "user", "default/thing/x", op)
}

func TestNewConfiguresAndStarts(t *testing.T) {
	rec := &recorder{schema: &sdk.Schema{Attributes: []sdk.Attribute{
		{Name: "greeting", Type: sdk.TypeString, Default: "hello"},
		{Name: "every", Type: sdk.TypeDuration, Default: "5s"},
		{Name: "n", Type: sdk.TypeNumber},
	}}}
	dir := t.TempDir()
	h := sdktest.New(t, rec, sdktest.Options{NodeName: "n1", DataDir: dir, ConfigJSON: `{"n": 3}`})

	cfg := rec.cfg
	if cfg.APIVersion != sdk.APIVersion1 || cfg.NodeName != "n1" || cfg.DataDir != dir || cfg.PluginName != "rec" {
		t.Fatalf("config = %+v", cfg)
	}
	var got map[string]any
	if err := json.Unmarshal(cfg.Raw, &got); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"greeting": "hello", "every": "5s", "n": 3.0}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("raw config = %v, want %v", got, want)
	}
	if h.Ctx().Name() != "rec" || h.Ctx().NodeName() != "n1" || h.Ctx().DataDir() != dir || h.Ctx().Logger() == nil {
		t.Fatal("context does not reflect the config")
	}
	if rec.host != h.Ctx() {
		t.Fatal("Start did not get the harness context")
	}
}

func TestNameOverrideAndDefaults(t *testing.T) {
	rec := &recorder{}
	h := sdktest.New(t, rec, sdktest.Options{Name: "rec-2"})
	if h.Ctx().Name() != "rec-2" || rec.cfg.NodeName != sdktest.DefaultNodeName || rec.cfg.DataDir == "" {
		t.Fatalf("config = %+v", rec.cfg)
	}
}

func TestBuildConfigErrors(t *testing.T) {
	schema := &sdk.Schema{
		Attributes: []sdk.Attribute{
			{Name: "s", Type: sdk.TypeString},
			{Name: "d", Type: sdk.TypeDuration},
			{Name: "req", Type: sdk.TypeNumber, Required: true},
			{Name: "l", Type: sdk.TypeListOfString},
			{Name: "m", Type: sdk.TypeMapOfString},
		},
		Blocks: []sdk.Block{{Name: "inner", Schema: sdk.Schema{Attributes: []sdk.Attribute{{Name: "x", Type: sdk.TypeBool, Default: true}}}}},
	}
	tests := []struct {
		name    string
		module  *recorder
		opts    sdktest.Options
		wantErr []string // substrings, all expected
	}{
		{"ok", &recorder{schema: schema}, sdktest.Options{ConfigJSON: `{"req":1,"inner":{}}`}, nil},
		{"raw skips schema", &recorder{schema: schema}, sdktest.Options{ConfigJSON: `{"zzz":1}`, RawConfig: true}, nil},
		{"unknown key", &recorder{schema: schema}, sdktest.Options{ConfigJSON: `{"req":1,"zzz":1}`}, []string{"zzz: unknown key"}},
		{"missing required", &recorder{schema: schema}, sdktest.Options{}, []string{"req: required"}},
		{"wrong types all reported", &recorder{schema: schema}, sdktest.Options{ConfigJSON: `{"req":"1","s":2,"l":"a","m":[1]}`},
			[]string{"req: want a number", "s: want a string", "l: want a list(string)", "m: want a map(string)"}},
		{"bad duration", &recorder{schema: schema}, sdktest.Options{ConfigJSON: `{"req":1,"d":"soon"}`}, []string{`d: "soon" is not a duration`}},
		{"nested", &recorder{schema: schema}, sdktest.Options{ConfigJSON: `{"req":1,"inner":{"x":"yes","y":1}}`}, []string{"inner.x: want a bool", "inner.y: unknown key"}},
		{"not an object", &recorder{schema: schema}, sdktest.Options{ConfigJSON: `[1]`}, []string{"want an object"}},
		{"api version", &recorder{}, sdktest.Options{APIVersion: "v9"}, []string{`"v9" not supported`}},
		{"bad schema", &recorder{schema: &sdk.Schema{Attributes: []sdk.Attribute{{Name: "a", Type: sdk.TypeBool, Default: "x"}}}}, sdktest.Options{}, []string{"bad schema"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := sdktest.BuildConfig(tt.module, tt.opts)
			if len(tt.wantErr) == 0 {
				if err != nil {
					t.Fatalf("BuildConfig: %v", err)
				}
				if cfg.PluginName != "rec" || cfg.APIVersion != sdk.APIVersion1 {
					t.Fatalf("config = %+v", cfg)
				}
				return
			}
			if err == nil {
				t.Fatalf("BuildConfig succeeded, want errors %q", tt.wantErr)
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestDeliver(t *testing.T) {
	rec := &recorder{fail: errors.New("handler says no")}
	h := sdktest.New(t, rec, sdktest.Options{})

	first := msg("noop")
	if err := h.Deliver(first); err != nil {
		t.Fatal(err)
	}
	if err := h.Deliver(first.Clone()); err != nil {
		t.Fatalf("duplicate: %v", err)
	}
	if got := rec.handledIDs(); len(got) != 1 || got[0] != first.Header.ID {
		t.Fatalf("handled %v, want only %s once", got, first.Header.ID)
	}

	if err := h.Deliver(msg("fail")); !errors.Is(err, rec.fail) {
		t.Fatalf("Deliver(fail) = %v, want the handler's error", err)
	}
	if err := h.Deliver(msg("panic")); !errors.Is(err, sdktest.ErrPanic) || !strings.Contains(err.Error(), "boom") {
		t.Fatalf("Deliver(panic) = %v, want ErrPanic", err)
	}

	invalid := []struct {
		name string
		m    *sdk.Message
	}{
		{"nil", nil},
		{"no id", &sdk.Message{Router: sdk.MessageRoute{Operation: "x"}}},
		{"no operation", sdk.NewMessage("")},
		{"bad content", &sdk.Message{Header: sdk.MessageHeader{ID: "1"}, Router: sdk.MessageRoute{Operation: "x"}, Content: json.RawMessage("{")}},
	}
	for _, tt := range invalid {
		if err := h.Deliver(tt.m); !errors.Is(err, sdk.ErrInvalidMessage) {
			t.Errorf("Deliver(%s) = %v, want ErrInvalidMessage", tt.name, err)
		}
	}
	if err := h.Health(context.Background()); !errors.Is(err, rec.fail) {
		t.Fatalf("Health = %v", err)
	}

	h.Stop()
	if !rec.stopped.Load() {
		t.Fatal("Stop was not called")
	}
	if rec.ctx.Err() == nil {
		t.Fatal("module context not cancelled on Stop")
	}
	if err := h.Deliver(msg("noop")); !errors.Is(err, sdk.ErrShuttingDown) {
		t.Fatalf("Deliver after Stop = %v, want ErrShuttingDown", err)
	}
	h.Stop() // a second Stop is a no-op
}

func TestSendValidation(t *testing.T) {
	h := sdktest.New(t, &recorder{}, sdktest.Options{})
	host := h.Ctx()
	ctx := context.Background()
	refused := errors.New("refused by test")
	h.FailSendsTo("down", refused)

	withParent := msg(sdk.OpResponse)
	withParent.Header.ParentID = "p-1"
	cancelled, cancel := context.WithCancel(ctx)
	cancel()

	tests := []struct {
		name    string
		send    func() error
		wantErr error
	}{
		{"send ok", func() error { return host.Send(ctx, "edged", msg("insert")) }, nil},
		{"send nil", func() error { return host.Send(ctx, "edged", nil) }, sdk.ErrInvalidMessage},
		{"send no id", func() error {
			m := msg("insert")
			m.Header.ID = ""
			return host.Send(ctx, "edged", m)
		}, sdk.ErrInvalidMessage},
		{"send no operation", func() error { return host.Send(ctx, "edged", msg("")) }, sdk.ErrInvalidMessage},
		{"send bad content", func() error {
			m := msg("insert")
			m.Content = json.RawMessage(`{"a":`)
			return host.Send(ctx, "edged", m)
		}, sdk.ErrInvalidMessage},
		{"send no module", func() error { return host.Send(ctx, "", msg("insert")) }, sdk.ErrUnknownDestination},
		{"send failing module", func() error { return host.Send(ctx, "down", msg("insert")) }, refused},
		{"send cancelled", func() error { return host.Send(cancelled, "edged", msg("insert")) }, context.Canceled},
		{"group ok", func() error { return host.SendToGroup(ctx, "meta", msg("insert")) }, nil},
		{"group invalid", func() error { return host.SendToGroup(ctx, "meta", msg("")) }, sdk.ErrInvalidMessage},
		{"response ok", func() error { return host.Response(ctx, withParent) }, nil},
		{"response no parent", func() error { return host.Response(ctx, msg(sdk.OpResponse)) }, sdk.ErrInvalidMessage},
		{"response nil", func() error { return host.Response(ctx, nil) }, sdk.ErrInvalidMessage},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.send()
			if tt.wantErr == nil && err != nil || tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Fatalf("got %v, want %v", err, tt.wantErr)
			}
		})
	}

	var kinds []string
	for _, s := range h.Sent() {
		kinds = append(kinds, s.Kind+":"+s.Target)
	}
	if want := "module:edged group:meta response:p-1"; strings.Join(kinds, " ") != want {
		t.Fatalf("sent %q, want %q", kinds, want)
	}

	h.FailSendsTo("down", nil)
	if err := host.Send(ctx, "down", msg("insert")); err != nil {
		t.Fatalf("after clearing the failure: %v", err)
	}
}

func TestSentIsACopy(t *testing.T) {
	h := sdktest.New(t, &recorder{}, sdktest.Options{})
	m := msg("insert")
	m.Content = json.RawMessage(`{"a":1}`)
	if err := h.Ctx().Send(context.Background(), "edged", m); err != nil {
		t.Fatal(err)
	}
	m.Content[5] = '2'
	m.Router.Operation = "changed"
	got := h.Sent()[0].Message
	if string(got.Content) != `{"a":1}` || got.Router.Operation != "insert" {
		t.Fatalf("captured message changed with the sender's: %s", got)
	}
}

func TestSendSync(t *testing.T) {
	h := sdktest.New(t, &recorder{}, sdktest.Options{})
	host := h.Ctx()
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })

	h.OnSync("meta", func(req *sdk.Message) (*sdk.Message, error) {
		if !req.Header.Sync {
			return nil, errors.New("request not marked sync")
		}
		return sdk.NewResponse(req, map[string]string{"got": req.Router.Resource})
	})
	h.OnSync("wrongparent", func(req *sdk.Message) (*sdk.Message, error) {
		return sdk.NewMessage("someone-else").BuildRouter("x", "y", "z", sdk.OpResponse), nil
	})
	h.OnSync("nilanswer", func(*sdk.Message) (*sdk.Message, error) { return nil, nil })
	h.OnSync("erroring", func(*sdk.Message) (*sdk.Message, error) { return nil, sdk.ErrQueueFull })
	h.OnSync("slow", func(req *sdk.Message) (*sdk.Message, error) {
		<-release
		return sdk.NewResponse(req, nil)
	})
	h.FailSendsTo("failing", sdk.ErrShuttingDown)

	tests := []struct {
		module    string
		timeout   time.Duration
		wantErr   error
		wantMatch string // substring of the error when wantErr is nil but an error is expected
	}{
		{module: "meta"},
		{module: "nobody", wantErr: sdk.ErrUnknownDestination},
		{module: "wrongparent", wantMatch: "parent_msg_id"},
		{module: "nilanswer", wantMatch: "answered nil"},
		{module: "erroring", wantErr: sdk.ErrQueueFull},
		{module: "failing", wantErr: sdk.ErrShuttingDown},
		{module: "slow", timeout: 20 * time.Millisecond, wantErr: context.DeadlineExceeded},
	}
	for _, tt := range tests {
		t.Run(tt.module, func(t *testing.T) {
			ctx := context.Background()
			if tt.timeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tt.timeout)
				defer cancel()
			}
			req := msg(sdk.OpQuery)
			resp, err := host.SendSync(ctx, tt.module, req)
			switch {
			case tt.wantErr != nil:
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("got %v, want %v", err, tt.wantErr)
				}
			case tt.wantMatch != "":
				if err == nil || !strings.Contains(err.Error(), tt.wantMatch) {
					t.Fatalf("got %v, want an error about %q", err, tt.wantMatch)
				}
			default:
				if err != nil {
					t.Fatal(err)
				}
				if resp.Header.ParentID != req.Header.ID || resp.ContentString() != `{"got":"default/thing/x"}` {
					t.Fatalf("answer %s %s", resp, resp.Content)
				}
				if !req.Header.Sync {
					t.Fatal("SendSync did not mark the request sync")
				}
			}
		})
	}
	if _, ok := h.WaitSent(context.Background(), sdktest.ToModule("meta")); !ok {
		t.Fatal("the sync request to meta was not captured")
	}
}

func TestWaitSent(t *testing.T) {
	h := sdktest.New(t, &recorder{}, sdktest.Options{})
	m := msg("async")
	if err := h.Deliver(m); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	got, ok := h.WaitSent(ctx, sdktest.ToModule("tester"))
	if !ok || got.Message.Router.Operation != "done" || got.Message.Header.ParentID != m.Header.ID {
		t.Fatalf("WaitSent = %+v, %v", got, ok)
	}

	short, cancel2 := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel2()
	if _, ok := h.WaitSent(short, sdktest.ToGroup("never")); ok {
		t.Fatal("WaitSent found a send that never happened")
	}
}

func TestConcurrentUse(t *testing.T) {
	h := sdktest.New(t, &recorder{}, sdktest.Options{})
	h.OnSync("meta", func(req *sdk.Message) (*sdk.Message, error) { return sdk.NewResponse(req, "ok") })
	ctx := context.Background()
	var wg sync.WaitGroup
	const n = 20
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := h.Ctx().Send(ctx, "edged", msg("insert")); err != nil {
				t.Error(err)
			}
			if _, err := h.Ctx().SendSync(ctx, "meta", msg(sdk.OpQuery)); err != nil {
				t.Error(err)
			}
			if err := h.Deliver(msg(fmt.Sprint("op", i))); err != nil {
				t.Error(err)
			}
			_ = h.Sent()
		}()
	}
	wg.Wait()
	if got := len(h.Sent()); got != 2*n {
		t.Fatalf("captured %d sends, want %d", got, 2*n)
	}
}

// askingModule asks "meta" a question in Start.
type askingModule struct {
	answer string
	err    error
}

func (m *askingModule) Info() sdk.PluginInfo {
	return sdk.PluginInfo{Name: "asker", Group: "g", Version: "1", APIVersions: []string{sdk.APIVersion1}}
}
func (m *askingModule) ConfigSchema() *sdk.Schema                  { return &sdk.Schema{} }
func (m *askingModule) SetConfig(*sdk.Config) error                { return nil }
func (m *askingModule) Handle(context.Context, *sdk.Message) error { return nil }
func (m *askingModule) Start(ctx context.Context, host sdk.Context) error {
	req := sdk.NewMessage("").BuildRouter("asker", "g", "default/pod", sdk.OpQuery)
	resp, err := host.SendSync(ctx, "meta", req)
	if err != nil {
		m.err = err
		return nil
	}
	m.answer = resp.ContentString()
	return nil
}

func TestSyncHandlersAnswerFromStart(t *testing.T) {
	m := &askingModule{}
	sdktest.New(t, m, sdktest.Options{Sync: map[string]sdktest.SyncHandler{"meta": func(req *sdk.Message) (*sdk.Message, error) {
		return sdk.NewResponse(req, "stored pods")
	}}})
	if m.err != nil || m.answer != "stored pods" {
		t.Fatalf("SendSync in Start: %q %v", m.answer, m.err)
	}
}
