// Package sdktest runs an edgehive module in-process against a fake host, for
// plugin unit tests. It behaves like the real plugin runtime where a test can
// tell the difference: SetConfig before Start, Handle one message at a time,
// duplicate deliveries dropped by msg_id, sends validated as the host
// validates them, SendSync answers matched by parent id, Stop at the end.
//
//	h := sdktest.New(t, mymodule.New(), sdktest.Options{ConfigJSON: `{"greeting":"hi"}`})
//	if err := h.Deliver(msg); err != nil { ... }
//	got, ok := h.WaitSent(ctx, sdktest.ToModule("edged"))
package sdktest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime/debug"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/edgehive/edgehive/sdk"
)

// Kinds of captured sends.
const (
	KindModule   = "module"   // Send or SendSync; Target is the module
	KindGroup    = "group"    // SendToGroup; Target is the group
	KindResponse = "response" // Response; Target is the parent id it answers
)

// Defaults used when Options leave a field empty.
const (
	DefaultNodeName    = "sdktest-node"
	DefaultStopTimeout = 10 * time.Second
	// DefaultSyncTimeout is how long SendSync waits when its ctx has no
	// deadline; the runtime uses the same value.
	DefaultSyncTimeout = 30 * time.Second
	// DedupeWindow is how many recent msg_ids Deliver remembers, as the runtime does.
	DedupeWindow = 16384
)

// ErrPanic wraps a panic raised by Handle. The real runtime logs the panic and
// acknowledges the message; the harness returns it from Deliver so the test sees it.
var ErrPanic = errors.New("handler panicked")

// Options configure the fake host.
type Options struct {
	NodeName   string // default DefaultNodeName
	DataDir    string // default t.TempDir()
	Name       string // the plugin name the host registers it under; default Info().Name
	InstanceID string // default "<name>-sdktest"
	APIVersion string // default sdk.APIVersion1
	// ConfigJSON is the plugin's config block as the host would pass it. Unless
	// RawConfig is set it is checked against the module's schema and the
	// schema's defaults are filled in, as the host does.
	ConfigJSON string
	RawConfig  bool
	// Logger is the module's logger; default a logger writing to t.Log at trace level.
	Logger      hclog.Logger
	StopTimeout time.Duration // bound on Stopper.Stop; default DefaultStopTimeout
	// Sync answers SendSync calls by module from the start: a module that
	// asks something in Start must not race the test's OnSync.
	Sync map[string]SyncHandler
}

// Sent is one message the module put on the channel.
type Sent struct {
	Kind    string // KindModule, KindGroup or KindResponse
	Target  string // module, group, or (for a response) the parent id
	Message *sdk.Message
}

// SyncHandler answers a SendSync request addressed to one module.
type SyncHandler func(req *sdk.Message) (*sdk.Message, error)

// Harness is a started module and the fake host around it. Its methods are safe
// for concurrent use.
type Harness struct {
	t      testing.TB
	module sdk.Module
	cfg    *sdk.Config
	logger hclog.Logger
	host   *hostContext

	ctx    context.Context
	cancel context.CancelFunc

	stopTimeout time.Duration
	stopOnce    sync.Once

	// handleMu serialises Handle calls and guards seen and stopped.
	handleMu sync.Mutex
	seen     *idSet
	stopped  bool

	mu       sync.Mutex
	sent     []Sent
	changed  chan struct{} // closed and replaced whenever sent grows
	syncs    map[string]SyncHandler
	failures map[string]error
}

// New configures and starts module the way the host would: SetConfig with the
// config built by BuildConfig, then Start. It fails the test if either fails.
// The module is stopped when the test ends (see Stop).
func New(t testing.TB, module sdk.Module, opts Options) *Harness {
	t.Helper()
	if opts.DataDir == "" {
		opts.DataDir = t.TempDir()
	}
	cfg, err := BuildConfig(module, opts)
	if err != nil {
		t.Fatalf("sdktest: %v", err)
	}
	logger := opts.Logger
	if logger == nil {
		logger = newTestLogger(t, cfg.PluginName)
	}
	stopTimeout := opts.StopTimeout
	if stopTimeout <= 0 {
		stopTimeout = DefaultStopTimeout
	}
	h := &Harness{
		t:           t,
		module:      module,
		cfg:         cfg,
		logger:      logger,
		stopTimeout: stopTimeout,
		seen:        newIDSet(DedupeWindow),
		changed:     make(chan struct{}),
		syncs:       map[string]SyncHandler{},
		failures:    map[string]error{},
	}
	for module, fn := range opts.Sync {
		h.syncs[module] = fn
	}
	h.host = &hostContext{h: h}
	if err := module.SetConfig(cfg); err != nil {
		t.Fatalf("sdktest: SetConfig: %v", err)
	}
	h.ctx, h.cancel = context.WithCancel(context.Background())
	if err := module.Start(h.ctx, h.host); err != nil {
		h.cancel()
		t.Fatalf("sdktest: Start: %v", err)
	}
	t.Cleanup(h.Stop)
	return h
}

// BuildConfig returns the *sdk.Config the host would hand module for opts:
// the API version must be one the module speaks, its schema must be valid, and
// the config JSON is checked against the schema with defaults filled (unless
// opts.RawConfig). Tests of SetConfig's validation can pass the result to
// SetConfig themselves. An empty opts.DataDir stays empty.
func BuildConfig(module sdk.Module, opts Options) (*sdk.Config, error) {
	info := module.Info()
	apiVersion := opts.APIVersion
	if apiVersion == "" {
		apiVersion = sdk.APIVersion1
	}
	if !slices.Contains(info.APIVersions, apiVersion) {
		return nil, fmt.Errorf("plugin API version %q not supported by %s (have %v)", apiVersion, info.Name, info.APIVersions)
	}
	name := opts.Name
	if name == "" {
		name = info.Name
	}
	nodeName := opts.NodeName
	if nodeName == "" {
		nodeName = DefaultNodeName
	}
	instanceID := opts.InstanceID
	if instanceID == "" {
		instanceID = name + "-sdktest"
	}
	raw := json.RawMessage(opts.ConfigJSON)
	if len(raw) == 0 {
		raw = json.RawMessage("{}")
	}
	if schema := module.ConfigSchema(); schema != nil {
		if err := schema.Validate(); err != nil {
			return nil, fmt.Errorf("plugin %s declares a bad schema: %w", info.Name, err)
		}
		if !opts.RawConfig {
			filled, err := ApplySchema(schema, raw)
			if err != nil {
				return nil, fmt.Errorf("plugin %s config: %w", name, err)
			}
			raw = filled
		}
	} else if !json.Valid(raw) {
		return nil, fmt.Errorf("plugin %s config: not valid JSON", name)
	}
	return &sdk.Config{
		APIVersion: apiVersion,
		NodeName:   nodeName,
		DataDir:    opts.DataDir,
		PluginName: name,
		InstanceID: instanceID,
		Raw:        raw,
	}, nil
}

// Ctx returns the sdk.Context the module was started with.
func (h *Harness) Ctx() sdk.Context { return h.host }

// Config returns the config the module was given.
func (h *Harness) Config() *sdk.Config { return h.cfg }

// Deliver hands msg to the module's Handle, synchronously, as the runtime
// would: one call at a time, with the module's lifetime context, and not at
// all when a message with the same msg_id was handled before without an
// error (the runtime
// acknowledges such a duplicate without handling it; Deliver returns nil).
// It returns Handle's error; a panic in Handle is returned wrapped in ErrPanic.
// A message the host would not route is refused with sdk.ErrInvalidMessage,
// and any message after Stop with sdk.ErrShuttingDown.
func (h *Harness) Deliver(msg *sdk.Message) (err error) {
	if err := validate(msg); err != nil {
		return err
	}
	h.handleMu.Lock()
	defer h.handleMu.Unlock()
	if h.stopped {
		return fmt.Errorf("deliver %s: %w", msg.Header.ID, sdk.ErrShuttingDown)
	}
	if !h.seen.add(msg.Header.ID) {
		h.logger.Debug("dropping duplicate delivery", "msg_id", msg.Header.ID)
		return nil
	}
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("%w: %v\n%s", ErrPanic, p, debug.Stack())
		}
		if err != nil {
			h.seen.forget(msg.Header.ID) // as the runtime: a failed message may come again
		}
	}()
	return h.module.Handle(h.ctx, msg.Clone())
}

// DeliverBatch hands msgs to the module as the runtime does when messages
// pile up: to HandleBatch in one call when the module is a sdk.BatchHandler,
// else to Handle one by one. Duplicates (by msg_id) are left out as Deliver
// does. It returns one error per message; a panic fails them all with ErrPanic.
func (h *Harness) DeliverBatch(msgs ...*sdk.Message) (errs []error) {
	errs = make([]error, len(msgs))
	bh, ok := h.module.(sdk.BatchHandler)
	if !ok {
		for i, m := range msgs {
			errs[i] = h.Deliver(m)
		}
		return errs
	}
	h.handleMu.Lock()
	defer h.handleMu.Unlock()
	var batch []*sdk.Message
	var index []int
	for i, m := range msgs {
		if errs[i] = validate(m); errs[i] != nil {
			continue
		}
		if h.stopped {
			errs[i] = fmt.Errorf("deliver %s: %w", m.Header.ID, sdk.ErrShuttingDown)
			continue
		}
		if !h.seen.add(m.Header.ID) {
			continue
		}
		batch = append(batch, m.Clone())
		index = append(index, i)
	}
	if len(batch) == 0 {
		return errs
	}
	defer func() {
		if p := recover(); p != nil {
			for _, i := range index {
				errs[i] = fmt.Errorf("%w: %v\n%s", ErrPanic, p, debug.Stack())
			}
		}
		for _, i := range index {
			if errs[i] != nil {
				h.seen.forget(msgs[i].Header.ID)
			}
		}
	}()
	got := bh.HandleBatch(h.ctx, batch)
	for j, err := range got {
		if j < len(index) {
			errs[index[j]] = err
		}
	}
	return errs
}

// Sent returns a copy of every message sent so far, in order. Failed sends are
// not included.
func (h *Harness) Sent() []Sent {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.sent)
}

// WaitSent returns the first captured send, from the start of the test, for
// which match returns true (a nil match takes any), waiting for it until ctx
// is done. Modules may send from their own goroutines.
func (h *Harness) WaitSent(ctx context.Context, match func(Sent) bool) (Sent, bool) {
	next := 0
	for {
		h.mu.Lock()
		for ; next < len(h.sent); next++ {
			if s := h.sent[next]; match == nil || match(s) {
				h.mu.Unlock()
				return s, true
			}
		}
		changed := h.changed
		h.mu.Unlock()
		select {
		case <-changed:
		case <-ctx.Done():
			return Sent{}, false
		}
	}
}

// OnSync makes fn answer SendSync calls addressed to module. Without a handler
// SendSync to a module fails with sdk.ErrUnknownDestination. An error from fn
// is returned to the caller as the host's refusal.
func (h *Harness) OnSync(module string, fn SyncHandler) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.syncs[module] = fn
}

// FailSendsTo makes Send and SendSync to module return err (wrapped); a nil
// err removes the failure.
func (h *Harness) FailSendsTo(module string, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err == nil {
		delete(h.failures, module)
		return
	}
	h.failures[module] = err
}

// Stop stops the module as the host's Shutdown does: the module's context is
// cancelled, a Handle in progress finishes, later deliveries are refused, and
// Stopper.Stop runs with a deadline. An error from Stop fails the test. Stop
// runs at most once; New registers it with t.Cleanup.
func (h *Harness) Stop() {
	h.stopOnce.Do(func() {
		h.cancel()
		h.handleMu.Lock()
		h.stopped = true
		h.handleMu.Unlock()
		if s, ok := h.module.(sdk.Stopper); ok {
			ctx, cancel := context.WithTimeout(context.Background(), h.stopTimeout)
			defer cancel()
			if err := s.Stop(ctx); err != nil {
				h.t.Errorf("sdktest: Stop: %v", err)
			}
		}
	})
}

// Health calls the module's Health when it implements sdk.HealthChecker and
// returns nil otherwise, as the runtime reports such a module healthy.
func (h *Harness) Health(ctx context.Context) error {
	if hc, ok := h.module.(sdk.HealthChecker); ok {
		return hc.Health(ctx)
	}
	return nil
}

// ToModule matches sends (Send or SendSync) to module.
func ToModule(module string) func(Sent) bool {
	return func(s Sent) bool { return s.Kind == KindModule && s.Target == module }
}

// ToGroup matches sends to group.
func ToGroup(group string) func(Sent) bool {
	return func(s Sent) bool { return s.Kind == KindGroup && s.Target == group }
}

// ResponseTo matches the response to the message with id parentID.
func ResponseTo(parentID string) func(Sent) bool {
	return func(s Sent) bool { return s.Kind == KindResponse && s.Target == parentID }
}

func (h *Harness) record(kind, target string, msg *sdk.Message) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.sent = append(h.sent, Sent{Kind: kind, Target: target, Message: msg.Clone()})
	close(h.changed)
	h.changed = make(chan struct{})
}

func (h *Harness) failure(module string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.failures[module]
}

func (h *Harness) syncHandler(module string) SyncHandler {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.syncs[module]
}

// validate applies the host's checks to an outgoing or delivered message.
func validate(msg *sdk.Message) error {
	if msg == nil {
		return fmt.Errorf("%w: nil message", sdk.ErrInvalidMessage)
	}
	if err := sdk.ValidateEnvelope(msg.ToProto()); err != nil {
		return fmt.Errorf("%w: %v", sdk.ErrInvalidMessage, err)
	}
	if len(msg.Content) > sdk.MaxSendBytes {
		return fmt.Errorf("%w: content is %d bytes, the channel takes at most %d", sdk.ErrTooLarge, len(msg.Content), sdk.MaxSendBytes)
	}
	return nil
}

// idSet remembers the last n ids, like the runtime's.
type idSet struct {
	ring []string
	pos  int
	set  map[string]struct{}
}

func newIDSet(n int) *idSet {
	return &idSet{ring: make([]string, n), set: make(map[string]struct{}, n)}
}

// forget removes id, so that it is handled if it comes again.
func (s *idSet) forget(id string) { delete(s.set, id) }

// add returns false when id is already present.
func (s *idSet) add(id string) bool {
	if _, ok := s.set[id]; ok {
		return false
	}
	if old := s.ring[s.pos]; old != "" {
		delete(s.set, old)
	}
	s.ring[s.pos] = id
	s.set[id] = struct{}{}
	s.pos = (s.pos + 1) % len(s.ring)
	return true
}
