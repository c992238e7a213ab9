package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgehive/edgehive/host/router"
	"github.com/edgehive/edgehive/internal/loopback"
	"github.com/edgehive/edgehive/sdk"
	pluginv1 "github.com/edgehive/edgehive/sdk/proto/plugin/v1"
)

// RouteOptions shape the route benchmark's traffic.
type RouteOptions struct {
	Duration    time.Duration
	Size        int     // content bytes per message
	Rate        float64 // messages per second; 0 for as fast as possible
	Concurrency int     // sending goroutines in the sender plugin
	Batch       int     // messages per SendBatch in the sender (1: Send per message)
	NoBaseline  bool    // skip the in-process baseline
}

// RouteResult is printed as JSON.
type RouteResult struct {
	Mode              string  `json:"mode"`
	DurationS         float64 `json:"duration_s"`
	SizeBytes         int     `json:"size_bytes"`
	RateTarget        float64 `json:"rate_target,omitempty"`
	Concurrency       int     `json:"concurrency"`
	Batch             int     `json:"batch"`
	Sent              int64   `json:"sent"`
	Received          int64   `json:"received"`
	MsgsPerS          float64 `json:"msgs_per_s"`
	P50Us             int64   `json:"p50_us"`
	P99Us             int64   `json:"p99_us"`
	P999Us            int64   `json:"p999_us"`
	Lost              int64   `json:"lost"`
	SendErrors        int64   `json:"send_errors"`
	InprocessMsgsPerS float64 `json:"inprocess_msgs_per_s"`
	InprocessP99Us    int64   `json:"inprocess_p99_us"`
	IsolationCost     float64 `json:"isolation_cost_ratio"`
}

// Route measures plugin -> host -> plugin through real plugin processes, then
// the same traffic through an in-process router as the baseline.
func Route(opts RouteOptions, out, logOut io.Writer) error {
	if opts.Duration <= 0 {
		opts.Duration = 5 * time.Second
	}
	if opts.Size < 64 {
		opts.Size = 64
	}
	if opts.Concurrency <= 0 {
		opts.Concurrency = 16
		if opts.Rate > 0 {
			opts.Concurrency = 8
		}
	}
	if opts.Batch <= 0 {
		opts.Batch = 128
		if opts.Rate > 0 {
			opts.Batch = 1 // at a fixed rate every message is sent on its own
		}
	}
	r, err := startPair(logOut, "")
	if err != nil {
		return err
	}
	defer r.close()
	res := RouteResult{Mode: "plugin-host-plugin", DurationS: opts.Duration.Seconds(), SizeBytes: opts.Size, RateTarget: opts.Rate, Concurrency: opts.Concurrency, Batch: opts.Batch}
	start := time.Now()
	if _, err := r.order("bench-src", loopback.OpFlood, loopback.Flood{
		To: "bench-dst", Duration: opts.Duration.String(), Rate: opts.Rate, Size: opts.Size, Concurrency: opts.Concurrency, Batch: opts.Batch,
	}, 0); err != nil {
		return err
	}
	done, err := r.waitReport(opts.Duration+60*time.Second, "flood-done")
	if err != nil {
		return err
	}
	var flood loopback.FloodResult
	if err := json.Unmarshal(done.GetContent(), &flood); err != nil {
		return err
	}
	res.Sent, res.SendErrors = flood.Sent, flood.Errors
	var st loopback.Stats
	deadline := time.Now().Add(30 * time.Second)
	for {
		if st, err = r.stats("bench-dst"); err != nil {
			return err
		}
		if st.Recorded >= res.Sent || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	elapsed := time.Since(start).Seconds()
	res.Received = st.Recorded
	res.Lost = res.Sent - st.Recorded
	res.MsgsPerS = float64(st.Recorded) / min(elapsed, opts.Duration.Seconds()+0.05)
	res.P50Us, res.P99Us, res.P999Us = st.P50Us, st.P99Us, st.P999Us
	r.close()

	if opts.NoBaseline {
		return printJSON(out, res)
	}
	base, err := inProcess(opts)
	if err != nil {
		return err
	}
	res.InprocessMsgsPerS, res.InprocessP99Us = base.msgsPerS, base.p99Us
	if res.MsgsPerS > 0 {
		res.IsolationCost = round2(base.msgsPerS / res.MsgsPerS)
	}
	res.MsgsPerS = round2(res.MsgsPerS)
	res.InprocessMsgsPerS = round2(res.InprocessMsgsPerS)
	return printJSON(out, res)
}

func round2(f float64) float64 { return float64(int64(f*100)) / 100 }

type baseline struct {
	msgsPerS float64
	p99Us    int64
}

// inProcess sends the same traffic between two modules living in the router's
// own process: what the message plane costs without process isolation.
func inProcess(opts RouteOptions) (baseline, error) {
	rt := router.New(router.Options{})
	var mu sync.Mutex
	var lat []int64
	var received atomic.Int64
	dst, err := router.NewLocal(rt, "dst", "dst", func(d *pluginv1.Delivery) {
		if sentNs, ok := loopback.PayloadSentNs(d.GetMessage().GetContent()); ok {
			l := time.Now().UnixNano() - sentNs
			mu.Lock()
			if len(lat) < 1<<22 {
				lat = append(lat, l)
			}
			mu.Unlock()
		}
		received.Add(1)
	})
	if err != nil {
		return baseline{}, err
	}
	defer dst.Close()
	src, err := router.NewLocal(rt, "src", "src", func(*pluginv1.Delivery) {})
	if err != nil {
		return baseline{}, err
	}
	defer src.Close()
	pad := strings.Repeat("x", max(opts.Size-40, 0))
	var interval time.Duration
	if opts.Rate > 0 {
		interval = time.Duration(float64(time.Second) * float64(opts.Concurrency) / opts.Rate)
	}
	var seq, sent atomic.Int64
	deadline := time.Now().Add(opts.Duration)
	var wg sync.WaitGroup
	var sendErr atomic.Value
	for w := 0; w < opts.Concurrency; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			next := time.Now()
			for time.Now().Before(deadline) {
				if interval > 0 {
					next = next.Add(interval)
					if d := time.Until(next); d > 0 {
						time.Sleep(d)
					}
				}
				m := sdk.NewMessage("")
				m.BuildRouter("src", "src", "loopback/flood/x", loopback.OpRecord)
				m.Content = loopback.AppendPayload(nil, time.Now().UnixNano(), seq.Add(1), pad)
				if err := src.Send(pluginv1.Send_KIND_MODULE, "dst", 0, m.ToProto()); err != nil {
					sendErr.Store(err)
					continue
				}
				sent.Add(1)
			}
		}()
	}
	wg.Wait()
	for i := 0; i < 1000 && received.Load() < sent.Load(); i++ {
		time.Sleep(5 * time.Millisecond)
	}
	if e, ok := sendErr.Load().(error); ok {
		return baseline{}, fmt.Errorf("in-process baseline: %w", e)
	}
	mu.Lock()
	slices.Sort(lat)
	var p99 int64
	if len(lat) > 0 {
		p99 = lat[int(0.99*float64(len(lat)-1))] / 1000
	}
	mu.Unlock()
	return baseline{msgsPerS: float64(received.Load()) / opts.Duration.Seconds(), p99Us: p99}, nil
}
