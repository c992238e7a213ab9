package sdk

import (
	"context"
	"errors"
	"fmt"
	"os"
	goruntime "runtime"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pluginv1 "github.com/edgehive/edgehive/sdk/proto/plugin/v1"
)

// runtime is the plugin side of the host protocol. The channel's reader owns
// the incoming frames, the writer owns the stream's Send, and the handler
// goroutine runs Module.Handle; they meet in the outbox under mu.
type runtime struct {
	pluginv1.UnimplementedPluginServer

	module Module
	logger hclog.Logger

	mu          sync.Mutex
	cfg         *Config
	started     bool
	channelOpen bool
	stopping    bool
	outSends    []*pluginv1.Send
	outAcks     []uint64
	nextSeq     uint64
	pending     map[uint64]pendingSend   // send seq -> waiting sender
	waiters     map[string]chan *Message // sync request id -> answer
	kick        chan struct{}
	stream      pluginv1.Plugin_ChannelServer

	writeMu sync.Mutex // held while frames are written to the stream

	window  chan struct{} // a slot per outstanding send
	handleQ chan *pluginv1.Delivery
	seen    *idSet

	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{} // closed when the handler loop has ended

	exit func(code int) // os.Exit; tests replace it
}

var _ pluginv1.PluginServer = (*runtime)(nil)

func newRuntime(module Module, logger hclog.Logger) *runtime {
	ctx, cancel := context.WithCancel(context.Background())
	return &runtime{
		module:  module,
		logger:  logger,
		pending: map[uint64]pendingSend{},
		waiters: map[string]chan *Message{},
		kick:    make(chan struct{}, 1),
		window:  make(chan struct{}, SendWindow),
		handleQ: make(chan *pluginv1.Delivery, 2*MaxInFlight),
		seen:    newIDSet(16384),
		ctx:     ctx,
		cancel:  cancel,
		done:    make(chan struct{}),
		exit:    os.Exit,
	}
}

func (r *runtime) GetInfo(context.Context, *pluginv1.GetInfoRequest) (*pluginv1.GetInfoResponse, error) {
	info := r.module.Info()
	resp := &pluginv1.GetInfoResponse{
		Name: info.Name, Group: info.Group, Version: info.Version,
		ApiVersions: info.APIVersions, Description: info.Description,
	}
	if schema := r.module.ConfigSchema(); schema != nil {
		if err := schema.Validate(); err != nil {
			return nil, status.Errorf(codes.Internal, "plugin %s declares a bad schema: %v", info.Name, err)
		}
		ps, err := schema.ToProto()
		if err != nil {
			return nil, status.Errorf(codes.Internal, "%v", err)
		}
		resp.ConfigSchema = ps
	}
	return resp, nil
}

func (r *runtime) SetConfig(_ context.Context, req *pluginv1.SetConfigRequest) (*pluginv1.SetConfigResponse, error) {
	if !slices.Contains(r.module.Info().APIVersions, req.GetApiVersion()) {
		return nil, status.Errorf(codes.FailedPrecondition, "plugin API version %q not supported (have %v)", req.GetApiVersion(), r.module.Info().APIVersions)
	}
	cfg := &Config{
		APIVersion: req.GetApiVersion(), NodeName: req.GetNodeName(), DataDir: req.GetDataDir(),
		PluginName: req.GetPluginName(), InstanceID: req.GetInstanceId(), Raw: req.GetConfigJson(),
	}
	r.mu.Lock()
	if r.started {
		r.mu.Unlock()
		return nil, status.Error(codes.FailedPrecondition, "already started: config is set once")
	}
	r.mu.Unlock()
	if err := r.module.SetConfig(cfg); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "%v", err)
	}
	r.mu.Lock()
	r.cfg = cfg
	r.mu.Unlock()
	return &pluginv1.SetConfigResponse{}, nil
}

func (r *runtime) Health(ctx context.Context, _ *pluginv1.HealthRequest) (*pluginv1.HealthResponse, error) {
	if hc, ok := r.module.(HealthChecker); ok {
		if err := hc.Health(ctx); err != nil {
			return &pluginv1.HealthResponse{Healthy: false, Message: err.Error()}, nil
		}
	}
	return &pluginv1.HealthResponse{Healthy: true}, nil
}

func (r *runtime) Shutdown(ctx context.Context, req *pluginv1.ShutdownRequest) (*pluginv1.ShutdownResponse, error) {
	if ms := req.GetDeadlineUnixMs(); ms > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, time.UnixMilli(ms))
		defer cancel()
	}
	r.stop(ctx)
	return &pluginv1.ShutdownResponse{}, nil
}

// stop ends the module: no new deliveries are handled, the current one
// finishes, Stop runs, and the last acknowledgements are flushed.
func (r *runtime) stop(ctx context.Context) {
	r.mu.Lock()
	if r.stopping {
		r.mu.Unlock()
		return
	}
	r.stopping = true
	started := r.started
	r.mu.Unlock()
	r.cancel()
	if started {
		select {
		case <-r.done:
		case <-ctx.Done():
		}
	}
	if s, ok := r.module.(Stopper); ok {
		if err := s.Stop(ctx); err != nil {
			r.logger.Warn("module stop failed", "error", err)
		}
	}
	r.flushWait(ctx)
}

// flushWait waits until the writer has sent every queued acknowledgement.
func (r *runtime) flushWait(ctx context.Context) {
	for {
		r.mu.Lock()
		empty := len(r.outAcks) == 0 && len(r.outSends) == 0
		open := r.channelOpen
		r.mu.Unlock()
		if empty || !open {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(2 * time.Millisecond):
		}
	}
}

// Channel serves the host's stream for the life of the plugin. The module is
// started when the first channel opens.
func (r *runtime) Channel(stream pluginv1.Plugin_ChannelServer) error {
	r.mu.Lock()
	if r.cfg == nil {
		r.mu.Unlock()
		return status.Error(codes.FailedPrecondition, "SetConfig must come before Channel")
	}
	if r.channelOpen {
		r.mu.Unlock()
		return status.Error(codes.AlreadyExists, "a channel is already open")
	}
	r.channelOpen = true
	startNow := !r.started
	r.started = true
	r.mu.Unlock()

	r.mu.Lock()
	r.stream = stream
	r.mu.Unlock()
	writerDone := make(chan struct{})
	writerCtx, stopWriter := context.WithCancel(stream.Context())
	go func() {
		defer close(writerDone)
		r.writeLoop(writerCtx)
	}()

	// Read before starting the module: a Send inside Start needs the host's
	// confirmation, which arrives on this stream.
	readErr := make(chan error, 1)
	go func() { readErr <- r.readLoop(stream) }()
	if startNow {
		mctx := &moduleContext{rt: r}
		if err := r.module.Start(r.ctx, mctx); err != nil {
			r.logger.Error("module failed to start", "error", err)
			stopWriter()
			<-writerDone
			r.loseHost()
			return status.Errorf(codes.Aborted, "start: %v", err)
		}
		go r.handleLoop()
	}

	err := <-readErr
	stopWriter()
	<-writerDone
	r.mu.Lock()
	r.stream = nil
	r.mu.Unlock()
	r.loseHost()
	return err
}

// loseHost fails the outstanding sends and, unless the plugin is stopping on
// request, exits: a plugin without its host must not linger.
func (r *runtime) loseHost() {
	r.mu.Lock()
	r.channelOpen = false
	pending := r.pending
	r.pending = map[uint64]pendingSend{}
	r.outSends = nil
	stopping := r.stopping
	r.mu.Unlock()
	for _, p := range pending {
		p.ch <- sendResult{idx: p.idx, err: ErrHostGone}
		<-r.window
	}
	if !stopping {
		r.logger.Error("host channel closed; exiting")
		go func() {
			time.Sleep(100 * time.Millisecond)
			r.exit(3)
		}()
	}
}

func (r *runtime) readLoop(stream pluginv1.Plugin_ChannelServer) error {
	for {
		frame, err := stream.Recv()
		if err != nil {
			if status.Code(err) == codes.Canceled || errors.Is(err, context.Canceled) {
				return nil
			}
			return err
		}
		r.applyResults(frame)
		for _, d := range frame.GetDeliveries() {
			r.accept(d)
		}
	}
}

func (r *runtime) applyResults(frame *pluginv1.HostFrame) {
	if len(frame.GetSendConfirms()) == 0 && len(frame.GetSendErrors()) == 0 {
		return
	}
	r.mu.Lock()
	var done []pendingSend
	var errs []error
	for _, seq := range frame.GetSendConfirms() {
		if p, ok := r.pending[seq]; ok {
			delete(r.pending, seq)
			done = append(done, p)
			errs = append(errs, nil)
		}
	}
	for _, se := range frame.GetSendErrors() {
		if p, ok := r.pending[se.GetSeq()]; ok {
			delete(r.pending, se.GetSeq())
			done = append(done, p)
			errs = append(errs, ErrorFromSendError(se))
		}
	}
	r.mu.Unlock()
	for i, p := range done {
		p.ch <- sendResult{idx: p.idx, err: errs[i]} // buffered for the whole batch
		<-r.window
	}
}

// ErrorFromSendError turns the host's refusal into an error that matches the
// package's sentinel errors with errors.Is.
func ErrorFromSendError(se *pluginv1.SendError) error {
	var base error
	switch se.GetCode() {
	case pluginv1.SendError_CODE_UNKNOWN_DESTINATION:
		base = ErrUnknownDestination
	case pluginv1.SendError_CODE_QUEUE_FULL:
		base = ErrQueueFull
	case pluginv1.SendError_CODE_INVALID:
		base = ErrInvalidMessage
	case pluginv1.SendError_CODE_TOO_LARGE:
		base = ErrTooLarge
	case pluginv1.SendError_CODE_NO_WAITER:
		base = ErrNoWaiter
	case pluginv1.SendError_CODE_SHUTTING_DOWN:
		base = ErrShuttingDown
	default:
		return fmt.Errorf("host refused message: %s", se.GetMessage())
	}
	return fmt.Errorf("%w: %s", base, se.GetMessage())
}

// accept takes one delivery: an answer to a waiting SendSync goes straight to
// its caller; anything else is queued for the handler.
func (r *runtime) accept(d *pluginv1.Delivery) {
	m := d.GetMessage()
	if pid := m.GetParentId(); pid != "" {
		r.mu.Lock()
		ch, ok := r.waiters[pid]
		if ok {
			delete(r.waiters, pid)
		}
		r.mu.Unlock()
		if ok {
			ch <- MessageFromProto(m)
			r.ack(d.GetSeq())
			return
		}
	}
	r.handleQ <- d
}

func (r *runtime) handleLoop() {
	defer close(r.done)
	batcher, _ := r.module.(BatchHandler)
	var batch []*pluginv1.Delivery
	for {
		select {
		case <-r.ctx.Done():
			return
		case d := <-r.handleQ:
			if batcher == nil {
				r.handleOne(d)
				continue
			}
			// Take whatever else is waiting: no timer, a batch is only what
			// piled up while the previous one ran.
			batch = append(batch[:0], d)
		more:
			for len(batch) < MaxHandleBatch {
				select {
				case d := <-r.handleQ:
					batch = append(batch, d)
				default:
					break more
				}
			}
			r.handleBatch(batcher, batch)
		}
	}
}

// handleBatch runs HandleBatch on the deliveries that are not duplicates and
// acknowledges them all afterwards.
func (r *runtime) handleBatch(h BatchHandler, batch []*pluginv1.Delivery) {
	defer func() {
		r.mu.Lock()
		for _, d := range batch {
			r.outAcks = append(r.outAcks, d.GetSeq())
		}
		r.mu.Unlock()
		r.wake()
	}()
	msgs := make([]*Message, 0, len(batch))
	for _, d := range batch {
		id := d.GetMessage().GetId()
		if id != "" && !r.seen.add(id) {
			r.logger.Debug("dropping duplicate delivery", "msg_id", id)
			continue
		}
		msgs = append(msgs, MessageFromProto(d.GetMessage()))
	}
	if len(msgs) == 0 {
		return
	}
	defer func() {
		if p := recover(); p != nil {
			r.logger.Error("batch handler panicked; messages acknowledged to avoid a poison loop", "messages", len(msgs), "panic", fmt.Sprint(p))
		}
	}()
	errs := h.HandleBatch(r.ctx, msgs)
	for i, err := range errs {
		if err != nil && i < len(msgs) {
			r.seen.forget(msgs[i].Header.ID)
			r.logger.Warn("handler returned an error", "msg_id", msgs[i].Header.ID, "operation", msgs[i].Router.Operation, "resource", msgs[i].Router.Resource, "error", err)
		}
	}
}

func (r *runtime) handleOne(d *pluginv1.Delivery) {
	defer r.ack(d.GetSeq())
	id := d.GetMessage().GetId()
	if id != "" && !r.seen.add(id) {
		r.logger.Debug("dropping duplicate delivery", "msg_id", id)
		return
	}
	msg := MessageFromProto(d.GetMessage())
	defer func() {
		if p := recover(); p != nil {
			r.logger.Error("handler panicked; message acknowledged to avoid a poison loop", "msg_id", id, "panic", fmt.Sprint(p))
		}
	}()
	if err := r.module.Handle(r.ctx, msg); err != nil {
		// A failed message may come again (the cloud resends with the same
		// id): it must not be taken for a duplicate then.
		r.seen.forget(id)
		r.logger.Warn("handler returned an error", "msg_id", id, "operation", msg.Router.Operation, "resource", msg.Router.Resource, "error", err)
	}
}

func (r *runtime) ack(seq uint64) {
	r.mu.Lock()
	r.outAcks = append(r.outAcks, seq)
	r.mu.Unlock()
	r.wake()
}

func (r *runtime) wake() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// writeLoop drains the outbox into frames until ctx is done: everything
// queued since the last frame goes at once, split only at BatchBytes.
func (r *runtime) writeLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.kick:
		}
		// Let the goroutines that just woke us add to the batch: one
		// scheduler pass instead of a syscall per message under load.
		goruntime.Gosched()
		r.writeMu.Lock()
		err := r.drainLocked()
		r.writeMu.Unlock()
		if err != nil {
			r.logger.Debug("channel send failed", "error", err)
			return
		}
	}
}

// drainLocked sends frames until the outbox is empty; writeMu is held.
func (r *runtime) drainLocked() error {
	for {
		r.mu.Lock()
		stream := r.stream
		frame, _ := r.takeFrameLocked()
		r.mu.Unlock()
		if frame == nil || stream == nil {
			return nil
		}
		if err := stream.Send(frame); err != nil {
			return err
		}
	}
}

func (r *runtime) takeFrameLocked() (*pluginv1.PluginFrame, bool) {
	if len(r.outAcks) == 0 && len(r.outSends) == 0 {
		return nil, false
	}
	frame := &pluginv1.PluginFrame{Acks: r.outAcks}
	r.outAcks = nil
	size := 0
	n := 0
	for n < len(r.outSends) {
		size += len(r.outSends[n].GetMessage().GetContent()) + 128
		n++
		if size >= BatchBytes {
			break
		}
	}
	frame.Sends = r.outSends[:n:n]
	r.outSends = r.outSends[n:]
	if len(r.outSends) == 0 {
		r.outSends = nil
	}
	return frame, len(r.outSends) > 0
}

type sendResult struct {
	idx int
	err error
}

type pendingSend struct {
	ch  chan sendResult
	idx int
}

// send puts one message on the channel and waits for the host's verdict.
func (r *runtime) send(ctx context.Context, kind pluginv1.Send_Kind, target string, msg *Message, syncTimeout time.Duration) error {
	return r.sendBatch(ctx, kind, target, []*Message{msg}, syncTimeout)[0]
}

// sendBatch puts messages on the channel in order and waits once for all the
// host's verdicts: the cost of a round trip is shared by the batch.
func (r *runtime) sendBatch(ctx context.Context, kind pluginv1.Send_Kind, target string, msgs []*Message, syncTimeout time.Duration) []error {
	errs := make([]error, len(msgs))
	resolved := make([]bool, len(msgs))
	result := make(chan sendResult, len(msgs))
	outstanding := 0
	for i, msg := range msgs {
		if msg == nil {
			errs[i], resolved[i] = fmt.Errorf("%w: nil message", ErrInvalidMessage), true
			continue
		}
		if len(msg.Content) > MaxSendBytes {
			errs[i], resolved[i] = fmt.Errorf("%w: content is %d bytes, the channel takes at most %d", ErrTooLarge, len(msg.Content), MaxSendBytes), true
			continue
		}
		select {
		case r.window <- struct{}{}:
		default:
			r.wake() // what is queued must go out before we wait for room
			select {
			case r.window <- struct{}{}:
			case <-ctx.Done():
				for j := i; j < len(msgs); j++ {
					errs[j], resolved[j] = fmt.Errorf("send to %s: waiting for a send slot: %w", target, ctx.Err()), true
				}
			}
		}
		if resolved[i] {
			break
		}
		r.mu.Lock()
		if !r.channelOpen {
			r.mu.Unlock()
			<-r.window
			errs[i], resolved[i] = ErrHostGone, true
			continue
		}
		r.nextSeq++
		seq := r.nextSeq
		r.pending[seq] = pendingSend{ch: result, idx: i}
		s := &pluginv1.Send{Seq: seq, Kind: kind, Target: target, Message: msg.ToProto()}
		if syncTimeout > 0 {
			s.SyncTimeoutMs = max(syncTimeout.Milliseconds(), 1)
		}
		r.outSends = append(r.outSends, s)
		r.mu.Unlock()
		outstanding++
	}
	if outstanding > 0 {
		r.wake()
	}
	for outstanding > 0 {
		select {
		case res := <-result:
			errs[res.idx], resolved[res.idx] = res.err, true
			outstanding--
		case <-ctx.Done():
			// Slots are released when the verdicts arrive; the messages may still be delivered.
			for i := range errs {
				if !resolved[i] {
					errs[i] = fmt.Errorf("send to %s: %w", target, ctx.Err())
				}
			}
			return errs
		}
	}
	return errs
}

func (r *runtime) sendSync(ctx context.Context, module string, msg *Message) (*Message, error) {
	if msg == nil {
		return nil, fmt.Errorf("%w: nil message", ErrInvalidMessage)
	}
	timeout := 30 * time.Second
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl)
		if timeout <= 0 {
			return nil, fmt.Errorf("sync send to %s: %w", module, context.DeadlineExceeded)
		}
	} else {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	msg.Header.Sync = true
	answer := make(chan *Message, 1)
	r.mu.Lock()
	r.waiters[msg.Header.ID] = answer
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		delete(r.waiters, msg.Header.ID)
		r.mu.Unlock()
	}()
	if err := r.send(ctx, pluginv1.Send_KIND_MODULE, module, msg, timeout); err != nil {
		return nil, err
	}
	select {
	case resp := <-answer:
		return resp, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("sync send to %s: no answer to %s: %w", module, msg.Header.ID, ctx.Err())
	}
}

// watchParent exits when the host process is gone and this process has been
// re-parented: the host's SIGKILL must not leave plugins behind.
func (r *runtime) watchParent(ppid int, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for range t.C {
		if os.Getppid() != ppid {
			r.logger.Error("host process is gone; exiting", "old_ppid", ppid)
			r.exit(4)
		}
	}
}

type moduleContext struct {
	rt *runtime
}

var _ Context = (*moduleContext)(nil)

func (c *moduleContext) Send(ctx context.Context, module string, msg *Message) error {
	return c.rt.send(ctx, pluginv1.Send_KIND_MODULE, module, msg, 0)
}

func (c *moduleContext) SendBatch(ctx context.Context, module string, msgs []*Message) error {
	return batchError(c.rt.sendBatch(ctx, pluginv1.Send_KIND_MODULE, module, msgs, 0))
}

func (c *moduleContext) SendToGroup(ctx context.Context, group string, msg *Message) error {
	return c.rt.send(ctx, pluginv1.Send_KIND_GROUP, group, msg, 0)
}

func (c *moduleContext) SendSync(ctx context.Context, module string, msg *Message) (*Message, error) {
	return c.rt.sendSync(ctx, module, msg)
}

func (c *moduleContext) Response(ctx context.Context, resp *Message) error {
	if resp == nil || resp.Header.ParentID == "" {
		return fmt.Errorf("%w: a response needs parent_msg_id", ErrInvalidMessage)
	}
	return c.rt.send(ctx, pluginv1.Send_KIND_RESPONSE, "", resp, 0)
}

func (c *moduleContext) Logger() hclog.Logger { return c.rt.logger }
func (c *moduleContext) Name() string         { return c.rt.cfg.PluginName }
func (c *moduleContext) NodeName() string     { return c.rt.cfg.NodeName }
func (c *moduleContext) DataDir() string      { return c.rt.cfg.DataDir }

// idSet remembers the last n message ids, to drop redeliveries of messages
// already handled by this process.
type idSet struct {
	limit int
	ring  []string
	pos   int
	set   map[string]struct{}
}

// newIDSet grows to n ids as messages arrive: an idle plugin pays nothing.
func newIDSet(n int) *idSet {
	return &idSet{limit: n, set: map[string]struct{}{}}
}

// forget removes id so that it is handled if it comes again.
func (s *idSet) forget(id string) { delete(s.set, id) }

// add returns false when id was already present. Only the handler goroutine calls it.
func (s *idSet) add(id string) bool {
	if _, ok := s.set[id]; ok {
		return false
	}
	s.set[id] = struct{}{}
	if len(s.ring) < s.limit {
		s.ring = append(s.ring, id)
		return true
	}
	delete(s.set, s.ring[s.pos])
	s.ring[s.pos] = id
	s.pos = (s.pos + 1) % len(s.ring)
	return true
}
