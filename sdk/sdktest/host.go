package sdktest

import (
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"

	"github.com/hashicorp/go-hclog"

	"github.com/edgehive/edgehive/sdk"
)

// hostContext is the sdk.Context the module under test sees.
type hostContext struct {
	h *Harness
}

var _ sdk.Context = (*hostContext)(nil)

func (c *hostContext) Send(ctx context.Context, module string, msg *sdk.Message) error {
	if err := c.precheck(ctx, "send to "+module, msg); err != nil {
		return err
	}
	if module == "" {
		return fmt.Errorf("send: %w: empty module name", sdk.ErrUnknownDestination)
	}
	if err := c.h.failure(module); err != nil {
		return fmt.Errorf("send to %s: %w", module, err)
	}
	c.h.record(KindModule, module, msg)
	return nil
}

// SendBatch sends each message like Send, in order, and reports failures the
// way the real runtime does (a *sdk.BatchError).
func (c *hostContext) SendBatch(ctx context.Context, module string, msgs []*sdk.Message) error {
	errs := make([]error, len(msgs))
	failed := false
	for i, m := range msgs {
		if errs[i] = c.Send(ctx, module, m); errs[i] != nil {
			failed = true
		}
	}
	if failed {
		return &sdk.BatchError{Errs: errs}
	}
	return nil
}

func (c *hostContext) SendToGroup(ctx context.Context, group string, msg *sdk.Message) error {
	if err := c.precheck(ctx, "send to group "+group, msg); err != nil {
		return err
	}
	if group == "" {
		return fmt.Errorf("send to group: %w: empty group name", sdk.ErrUnknownDestination)
	}
	c.h.record(KindGroup, group, msg)
	return nil
}

func (c *hostContext) SendSync(ctx context.Context, module string, msg *sdk.Message) (*sdk.Message, error) {
	if msg == nil {
		return nil, fmt.Errorf("sync send to %s: %w: nil message", module, sdk.ErrInvalidMessage)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultSyncTimeout)
		defer cancel()
	}
	msg.Header.Sync = true // the runtime marks the caller's message too
	if err := c.precheck(ctx, "sync send to "+module, msg); err != nil {
		return nil, err
	}
	if err := c.h.failure(module); err != nil {
		return nil, fmt.Errorf("sync send to %s: %w", module, err)
	}
	fn := c.h.syncHandler(module)
	if fn == nil {
		return nil, fmt.Errorf("sync send to %s: %w (no sdktest OnSync handler)", module, sdk.ErrUnknownDestination)
	}
	c.h.record(KindModule, module, msg)

	type result struct {
		resp *sdk.Message
		err  error
	}
	done := make(chan result, 1)
	req := msg.Clone()
	go func() {
		resp, err := fn(req)
		done <- result{resp, err}
	}()
	select {
	case r := <-done:
		if r.err != nil {
			return nil, fmt.Errorf("sync send to %s: %w", module, r.err)
		}
		if r.resp == nil {
			return nil, fmt.Errorf("sync send to %s: the sdktest OnSync handler answered nil", module)
		}
		if r.resp.Header.ParentID != msg.Header.ID {
			// The runtime would hand such a message to Handle, and the caller would time out.
			return nil, fmt.Errorf("sync send to %s: answer has parent_msg_id %q, want the request's id %q (build it with sdk.NewResponse)",
				module, r.resp.Header.ParentID, msg.Header.ID)
		}
		return r.resp.Clone(), nil
	case <-ctx.Done():
		return nil, fmt.Errorf("sync send to %s: no answer to %s: %w", module, msg.Header.ID, ctx.Err())
	}
}

func (c *hostContext) Response(ctx context.Context, resp *sdk.Message) error {
	if resp == nil {
		return fmt.Errorf("response: %w: nil message", sdk.ErrInvalidMessage)
	}
	if resp.Header.ParentID == "" {
		return fmt.Errorf("%w: a response needs parent_msg_id", sdk.ErrInvalidMessage)
	}
	if err := c.precheck(ctx, "response to "+resp.Header.ParentID, resp); err != nil {
		return err
	}
	c.h.record(KindResponse, resp.Header.ParentID, resp)
	return nil
}

func (c *hostContext) precheck(ctx context.Context, what string, msg *sdk.Message) error {
	if err := validate(msg); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

func (c *hostContext) Logger() hclog.Logger { return c.h.logger }
func (c *hostContext) Name() string         { return c.h.cfg.PluginName }
func (c *hostContext) NodeName() string     { return c.h.cfg.NodeName }
func (c *hostContext) DataDir() string      { return c.h.cfg.DataDir }

// newTestLogger logs through t.Log until the test's cleanups have run; later
// lines (from goroutines the module failed to stop) are dropped rather than
// panicking the test binary.
func newTestLogger(t testing.TB, name string) hclog.Logger {
	w := &testWriter{t: t}
	t.Cleanup(w.close) // registered before Stop's cleanup, so it runs after it
	return hclog.New(&hclog.LoggerOptions{
		Name:   name,
		Level:  hclog.Trace,
		Output: w,
	})
}

type testWriter struct {
	mu     sync.Mutex
	t      testing.TB
	closed bool
}

var _ io.Writer = (*testWriter)(nil)

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.closed {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

func (w *testWriter) close() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.closed = true
}
