// Package loopback is a plugin for the host's own tests and benchmarks: it
// echoes, forwards, calls, floods and misbehaves on command, through the
// public SDK only, so the host is exercised exactly as a real plugin would.
package loopback

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgehive/edgehive/sdk"
)

// Version is reported in PluginInfo; tests override it with the "version" config key.
const Version = "1.0.0"

// Operations understood by the plugin.
const (
	OpEcho      = "echo"      // sync: answer with the same content; async: send "echoed" back to the source
	OpForward   = "forward"   // content Forward: send a new message as told
	OpCall      = "call"      // content Forward: SendSync to the target, report the answer with op "called"
	OpRecord    = "record"    // count; with report_to set, send "recorded" {id} there before returning
	OpCrash     = "crash"     // exit the process shortly after acknowledging
	OpHang      = "hang"      // stop answering health checks
	OpSick      = "sick"      // answer health checks with "unhealthy"
	OpFlood     = "flood"     // content Flood: send at a rate, report "flood-done" to report_to
	OpStats     = "stats"     // sync: answer with Stats
	OpMalformed = "malformed" // sync: try to send bad messages, answer with the errors
)

// Forward tells the plugin what to send.
type Forward struct {
	To        string `json:"to"`
	Kind      string `json:"kind"` // module (default) or group
	Operation string `json:"operation"`
	Size      int    `json:"size"`       // content bytes
	TimeoutMs int    `json:"timeout_ms"` // for OpCall; default 5000
}

// Flood is a traffic order.
type Flood struct {
	To          string  `json:"to"`
	Count       int     `json:"count"`       // stop after this many (0: until Duration)
	Duration    string  `json:"duration"`    // stop after this long
	Rate        float64 `json:"rate"`        // messages per second, 0 for as fast as possible
	Size        int     `json:"size"`        // content bytes
	Concurrency int     `json:"concurrency"` // senders in parallel
	Batch       int     `json:"batch"`       // messages per SendBatch (0 or 1: Send)
}

// FloodResult reports a flood.
type FloodResult struct {
	Sent   int64  `json:"sent"`
	Errors int64  `json:"errors"`
	Last   string `json:"last_error,omitempty"`
}

// Stats is the answer to OpStats.
type Stats struct {
	Received int64            `json:"received"`
	Recorded int64            `json:"recorded"` // flood messages seen
	Ops      map[string]int64 `json:"ops"`      // messages received by operation
	Version  string           `json:"version"`
	PID      int              `json:"pid"`
	P50Us    int64            `json:"p50_us"`
	P99Us    int64            `json:"p99_us"`
	P999Us   int64            `json:"p999_us"`
}

// Payload is the content of flood messages: the send time, for latency.
type Payload struct {
	SentNs int64  `json:"t"`
	Seq    int64  `json:"n"`
	Pad    string `json:"p,omitempty"`
}

type config struct {
	Group    string `json:"group"`
	ReportTo string `json:"report_to"`
	Version  string `json:"version"`
}

// Module is the loopback plugin.
type Module struct {
	mu       sync.Mutex
	cfg      config
	host     sdk.Context
	ctx      context.Context
	received atomic.Int64
	hung     atomic.Bool
	sick     atomic.Bool
	ops      sync.Map // operation -> *atomic.Int64

	latMu     sync.Mutex
	latencies []int64 // nanoseconds, flood messages only
	recorded  int64
}

// maxSamples bounds the latency samples kept (8 bytes each).
const maxSamples = 1 << 22

var (
	_ sdk.Module        = (*Module)(nil)
	_ sdk.HealthChecker = (*Module)(nil)
)

// New returns the module.
func New() *Module { return &Module{} }

func (m *Module) name() string {
	if n := os.Getenv(sdk.EnvPluginName); n != "" {
		return n
	}
	return "loopback"
}

// Info names the module after its plugin block, so one binary serves many test modules.
func (m *Module) Info() sdk.PluginInfo {
	m.mu.Lock()
	defer m.mu.Unlock()
	v := m.cfg.Version
	if v == "" {
		v = Version
		if env := os.Getenv("LOOPBACK_VERSION"); env != "" {
			v = env
		}
	}
	g := m.cfg.Group
	if g == "" {
		g = "loopback"
	}
	return sdk.PluginInfo{Name: m.name(), Group: g, Version: v, APIVersions: []string{sdk.APIVersion1}}
}

// ConfigSchema declares the keys.
func (m *Module) ConfigSchema() *sdk.Schema {
	return &sdk.Schema{Attributes: []sdk.Attribute{
		{Name: "group", Type: sdk.TypeString, Default: "loopback", Description: "module group"},
		{Name: "report_to", Type: sdk.TypeString, Default: "", Description: "module told about recorded messages and finished floods"},
		{Name: "version", Type: sdk.TypeString, Default: "", Description: "version reported in status"},
	}}
}

// SetConfig keeps the config.
func (m *Module) SetConfig(c *sdk.Config) error {
	var cfg config
	if err := c.Decode(&cfg); err != nil {
		return err
	}
	m.mu.Lock()
	m.cfg = cfg
	m.mu.Unlock()
	return nil
}

// Start keeps the host context.
func (m *Module) Start(ctx context.Context, host sdk.Context) error {
	m.host, m.ctx = host, ctx
	return nil
}

// Health fails forever once OpHang was received.
func (m *Module) Health(ctx context.Context) error {
	if m.hung.Load() {
		<-ctx.Done()
		return ctx.Err()
	}
	if m.sick.Load() {
		return errors.New("sick on request")
	}
	return nil
}

// Handle runs one command.
func (m *Module) Handle(ctx context.Context, msg *sdk.Message) error {
	m.received.Add(1)
	counter, _ := m.ops.LoadOrStore(msg.Router.Operation, new(atomic.Int64))
	counter.(*atomic.Int64).Add(1)
	switch msg.Router.Operation {
	case OpEcho:
		if msg.Header.Sync {
			resp, err := sdk.NewResponse(msg, msg.Content)
			if err != nil {
				return err
			}
			return m.host.Response(ctx, resp)
		}
		out := m.newMessage("echoed", msg.Content)
		out.Header.ParentID = msg.Header.ID
		return m.host.Send(ctx, msg.Router.Source, out)
	case OpForward:
		var f Forward
		if err := msg.DecodeContent(&f); err != nil {
			return err
		}
		out := m.newMessage(f.Operation, padContent(f.Size))
		if f.Kind == "group" {
			return m.host.SendToGroup(ctx, f.To, out)
		}
		return m.host.Send(ctx, f.To, out)
	case OpCall:
		var f Forward
		if err := msg.DecodeContent(&f); err != nil {
			return err
		}
		timeout := 5 * time.Second
		if f.TimeoutMs > 0 {
			timeout = time.Duration(f.TimeoutMs) * time.Millisecond
		}
		cctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		req := m.newMessage(OpEcho, json.RawMessage(`{"call":true}`))
		answer, err := m.host.SendSync(cctx, f.To, req)
		report := map[string]string{"request": req.Header.ID}
		if err != nil {
			report["error"] = err.Error()
		} else {
			report["answer_parent"] = answer.Header.ParentID
			report["answer"] = string(answer.Content)
		}
		return m.report(ctx, msg, "called", report)
	case OpRecord:
		m.observe(msg)
		if to := m.reportTo(); to != "" {
			out := m.newMessage("recorded", map[string]string{"id": msg.Header.ID})
			return m.host.Send(ctx, to, out)
		}
		return nil
	case OpCrash:
		go func() {
			time.Sleep(50 * time.Millisecond)
			os.Exit(7)
		}()
		return nil
	case OpHang:
		m.hung.Store(true)
		return nil
	case OpSick:
		m.sick.Store(true)
		return nil
	case OpFlood:
		var f Flood
		if err := msg.DecodeContent(&f); err != nil {
			return err
		}
		go m.flood(f)
		return nil
	case OpStats:
		st := Stats{Received: m.received.Load(), Version: m.Info().Version, PID: os.Getpid()}
		st.Recorded, st.P50Us, st.P99Us, st.P999Us = m.latencyStats()
		st.Ops = map[string]int64{}
		m.ops.Range(func(k, v any) bool {
			st.Ops[k.(string)] = v.(*atomic.Int64).Load()
			return true
		})
		return m.report(ctx, msg, "stats", st)
	case OpMalformed:
		return m.malformed(ctx, msg)
	}
	return nil
}

func (m *Module) reportTo() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.cfg.ReportTo
}

func (m *Module) newMessage(op string, content any) *sdk.Message {
	out := sdk.NewMessage("")
	out.BuildRouter(m.name(), m.Info().Group, "loopback/test/"+op, op)
	_ = out.FillBody(content)
	return out
}

// report answers a sync request, or sends the result to report_to or the source.
func (m *Module) report(ctx context.Context, req *sdk.Message, op string, v any) error {
	if req.Header.Sync {
		resp, err := sdk.NewResponse(req, v)
		if err != nil {
			return err
		}
		return m.host.Response(ctx, resp)
	}
	to := m.reportTo()
	if to == "" {
		to = req.Router.Source
	}
	out := m.newMessage(op, v)
	out.Header.ParentID = req.Header.ID
	return m.host.Send(ctx, to, out)
}

func (m *Module) malformed(ctx context.Context, req *sdk.Message) error {
	results := map[string]string{}
	noID := m.newMessage("bad", "x")
	noID.Header.ID = ""
	results["no_id"] = errText(m.host.Send(ctx, m.name(), noID))
	badJSON := m.newMessage("bad", "x")
	badJSON.Content = json.RawMessage(`{"unterminated":`)
	results["bad_json"] = errText(m.host.Send(ctx, m.name(), badJSON))
	noOp := m.newMessage("", "x")
	results["no_operation"] = errText(m.host.Send(ctx, m.name(), noOp))
	huge := m.newMessage("huge", padContent(16<<20))
	results["huge"] = errText(m.host.Send(ctx, m.name(), huge))
	results["unknown_destination"] = errText(m.host.Send(ctx, "no-such-module", m.newMessage("x", "x")))
	orphan := m.newMessage(sdk.OpResponse, "x")
	orphan.Header.ParentID = "nobody-asked"
	results["orphan_response"] = errText(m.host.Response(ctx, orphan))
	return m.report(ctx, req, "malformed-result", results)
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func padContent(size int) json.RawMessage {
	if size <= 2 {
		return json.RawMessage(`""`)
	}
	return json.RawMessage(`"` + strings.Repeat("x", size-2) + `"`)
}

// flood sends the ordered traffic and reports when done.
func (m *Module) flood(f Flood) {
	ctx := m.ctx
	var deadline time.Time
	if f.Duration != "" {
		d, err := time.ParseDuration(f.Duration)
		if err == nil {
			deadline = time.Now().Add(d)
		}
	}
	workers := max(f.Concurrency, 1)
	pad := ""
	if f.Size > 40 {
		pad = strings.Repeat("x", f.Size-40)
	}
	var seq, sent, errs atomic.Int64
	var lastErr atomic.Value
	var interval time.Duration
	if f.Rate > 0 {
		interval = time.Duration(float64(time.Second) * float64(workers) / f.Rate)
	}
	batch := max(f.Batch, 1)
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			next := time.Now()
			msgs := make([]*sdk.Message, 0, batch)
			for ctx.Err() == nil {
				if interval > 0 {
					next = next.Add(interval * time.Duration(batch))
					if d := time.Until(next); d > 0 {
						time.Sleep(d)
					}
				}
				msgs = msgs[:0]
				for len(msgs) < batch {
					n := seq.Add(1)
					if f.Count > 0 && n > int64(f.Count) {
						break
					}
					out := sdk.NewMessage("")
					out.BuildRouter(m.name(), "loopback", "loopback/flood/x", OpRecord)
					out.Content = AppendPayload(nil, time.Now().UnixNano(), n, pad)
					msgs = append(msgs, out)
				}
				if len(msgs) == 0 || !deadline.IsZero() && time.Now().After(deadline) {
					return
				}
				var err error
				if len(msgs) == 1 {
					err = m.host.Send(ctx, f.To, msgs[0])
				} else {
					err = m.host.SendBatch(ctx, f.To, msgs)
				}
				if err == nil {
					sent.Add(int64(len(msgs)))
					continue
				}
				lastErr.Store(err.Error())
				var be *sdk.BatchError
				if errors.As(err, &be) {
					for _, e := range be.Errs {
						if e != nil {
							errs.Add(1)
						} else {
							sent.Add(1)
						}
					}
				} else {
					errs.Add(int64(len(msgs)))
				}
			}
		}()
	}
	wg.Wait()
	res := FloodResult{Sent: sent.Load(), Errors: errs.Load()}
	if v, ok := lastErr.Load().(string); ok {
		res.Last = v
	}
	if to := m.reportTo(); to != "" {
		_ = m.host.Send(ctx, to, m.newMessage("flood-done", res))
	}
}

// String helps debugging.
func (f Flood) String() string { return fmt.Sprintf("flood to %s x%d", f.To, f.Count) }

// observe records the latency of a flood message.
func (m *Module) observe(msg *sdk.Message) {
	sent, ok := PayloadSentNs(msg.Content)
	if !ok {
		return
	}
	lat := time.Now().UnixNano() - sent
	m.latMu.Lock()
	m.recorded++
	if len(m.latencies) < maxSamples {
		m.latencies = append(m.latencies, lat)
	}
	m.latMu.Unlock()
}

func (m *Module) latencyStats() (n, p50, p99, p999 int64) {
	m.latMu.Lock()
	samples := append([]int64(nil), m.latencies...)
	n = m.recorded
	m.latMu.Unlock()
	if len(samples) == 0 {
		return n, 0, 0, 0
	}
	slices.Sort(samples)
	at := func(q float64) int64 {
		i := int(q * float64(len(samples)-1))
		return samples[i] / 1000
	}
	return n, at(0.50), at(0.99), at(0.999)
}

// AppendPayload writes the JSON of a Payload without reflection: the
// benchmark should measure the message plane, not encoding/json.
func AppendPayload(b []byte, sentNs, seq int64, pad string) []byte {
	b = append(b, `{"t":`...)
	b = strconv.AppendInt(b, sentNs, 10)
	b = append(b, `,"n":`...)
	b = strconv.AppendInt(b, seq, 10)
	if pad != "" {
		b = append(b, `,"p":"`...)
		b = append(b, pad...)
		b = append(b, '"')
	}
	return append(b, '}')
}

// PayloadSentNs reads the send time from content written by AppendPayload.
func PayloadSentNs(content []byte) (int64, bool) {
	const prefix = `{"t":`
	if !bytes.HasPrefix(content, []byte(prefix)) {
		return 0, false
	}
	rest := content[len(prefix):]
	end := bytes.IndexAny(rest, ",}")
	if end <= 0 {
		return 0, false
	}
	v, err := strconv.ParseInt(string(rest[:end]), 10, 64)
	return v, err == nil && v > 0
}
