// Package bench holds the programs behind `edgehive bench`: they run the real
// host with real plugin processes and print one JSON object per run.
package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/edgehive/edgehive/host"
	"github.com/edgehive/edgehive/host/config"
	"github.com/edgehive/edgehive/host/router"
	"github.com/edgehive/edgehive/internal/loopback"
	"github.com/edgehive/edgehive/sdk"
	pluginv1 "github.com/edgehive/edgehive/sdk/proto/plugin/v1"
)

// rig is a host with loopback plugins and an in-process "bench" module that
// gives orders and collects reports.
type rig struct {
	dir    string
	h      *host.Host
	local  *router.Local
	cancel context.CancelFunc
	done   chan error

	closeOnce sync.Once

	mu       sync.Mutex
	reports  map[string][]*pluginv1.Message // by operation
	answers  map[string]*pluginv1.Message   // by parent id
	recorded map[string]int
	notify   chan struct{}
}

func loopbackHCL(exe, name, group, reportTo string) string {
	return fmt.Sprintf(`
plugin %q {
  path = %q
  args = ["__serve", "loopback"]
  gogc = 400
  restart {
    delay     = "20ms"
    max_delay = "1s"
  }
  config {
    group     = %q
    report_to = %q
  }
}
`, name, exe, group, reportTo)
}

// newRig starts a host whose plugins are the given HCL blocks.
func newRig(blocks string, logOut io.Writer) (*rig, error) {
	return newRigWith(blocks, logOut, "bench", "bench", nil)
}

// newRigWith is newRig with the in-process module named and handled as
// given (nil: the rig's own report collector).
func newRigWith(blocks string, logOut io.Writer, localName, localGroup string, handle func(*pluginv1.Delivery)) (*rig, error) {
	dir, err := os.MkdirTemp("", "edgehive-bench-")
	if err != nil {
		return nil, err
	}
	src := fmt.Sprintf("node_name = \"bench\"\ndata_dir = %q\nadmin {\n  socket = %q\n}\nlog {\n  level = \"warn\"\n}\n%s",
		filepath.Join(dir, "data"), filepath.Join(dir, "admin.sock"), blocks)
	cfg, diags := config.Parse(filepath.Join(dir, "bench.hcl"), []byte(src), config.WithBaseDir(dir))
	if diags.HasErrors() {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("bench config: %s", diags.Error())
	}
	logger := hclog.New(&hclog.LoggerOptions{Name: "bench", Level: hclog.Warn, Output: logOut})
	h, err := host.New(cfg, logger)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	r := &rig{dir: dir, h: h, done: make(chan error, 1), reports: map[string][]*pluginv1.Message{},
		answers: map[string]*pluginv1.Message{}, recorded: map[string]int{}, notify: make(chan struct{}, 1)}
	if handle == nil {
		handle = r.onDelivery
	}
	r.local, err = router.NewLocal(h.Router(), localName, localGroup, handle)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go func() { r.done <- h.Run(ctx, 10*time.Second) }()
	return r, nil
}

// startPair runs a sender (bench-src, reporting to the rig) and a receiver
// (bench-dst, reporting each message to dstReportTo when set) and waits until
// both run.
func startPair(logOut io.Writer, dstReportTo string) (*rig, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	r, err := newRig(loopbackHCL(exe, "bench-src", "bench-src", "bench")+loopbackHCL(exe, "bench-dst", "bench-dst", dstReportTo), logOut)
	if err != nil {
		return nil, err
	}
	if err := r.waitRunning(30*time.Second, "bench-src", "bench-dst"); err != nil {
		r.close()
		return nil, err
	}
	return r, nil
}

func (r *rig) close() {
	r.closeOnce.Do(func() {
		r.cancel()
		select {
		case <-r.done:
		case <-time.After(30 * time.Second):
		}
		r.local.Close()
		os.RemoveAll(r.dir)
	})
}

func (r *rig) onDelivery(d *pluginv1.Delivery) {
	m := d.GetMessage()
	r.mu.Lock()
	switch {
	case m.GetOperation() == "recorded":
		var rec map[string]string
		if json.Unmarshal(m.GetContent(), &rec) == nil {
			r.recorded[rec["id"]]++
		}
	case m.GetParentId() != "":
		r.answers[m.GetParentId()] = m
	default:
		r.reports[m.GetOperation()] = append(r.reports[m.GetOperation()], m)
	}
	r.mu.Unlock()
	select {
	case r.notify <- struct{}{}:
	default:
	}
}

func (r *rig) waitRunning(timeout time.Duration, names ...string) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		ok := true
		for _, n := range names {
			if sup := r.h.Supervisor(n); sup == nil || sup.Status().State != "running" {
				ok = false
			}
		}
		if ok {
			return nil
		}
		time.Sleep(5 * time.Millisecond)
	}
	return fmt.Errorf("plugins %v not running after %s", names, timeout)
}

func (r *rig) order(target, op string, content any, syncMs int64) (*pluginv1.Message, error) {
	m := sdk.NewMessage("")
	m.BuildRouter("bench", "bench", "bench/order/"+op, op)
	if err := m.FillBody(content); err != nil {
		return nil, err
	}
	pm := m.ToProto()
	pm.Sync = syncMs > 0
	return pm, r.local.Send(pluginv1.Send_KIND_MODULE, target, syncMs, pm)
}

// waitReport waits for a report with operation op (or an answer to parent).
func (r *rig) wait(timeout time.Duration, get func() *pluginv1.Message) (*pluginv1.Message, error) {
	deadline := time.After(timeout)
	for {
		r.mu.Lock()
		m := get()
		r.mu.Unlock()
		if m != nil {
			return m, nil
		}
		select {
		case <-r.notify:
		case <-deadline:
			return nil, fmt.Errorf("no report within %s", timeout)
		}
	}
}

func (r *rig) waitReport(timeout time.Duration, op string) (*pluginv1.Message, error) {
	return r.wait(timeout, func() *pluginv1.Message {
		if l := r.reports[op]; len(l) > 0 {
			return l[0]
		}
		return nil
	})
}

func (r *rig) stats(name string) (loopback.Stats, error) {
	var st loopback.Stats
	req, err := r.order(name, loopback.OpStats, "", 10000)
	if err != nil {
		return st, err
	}
	m, err := r.wait(15*time.Second, func() *pluginv1.Message { return r.answers[req.GetId()] })
	if err != nil {
		return st, err
	}
	return st, json.Unmarshal(m.GetContent(), &st)
}

func (r *rig) recordedCounts() (unique, total int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, n := range r.recorded {
		unique++
		total += n
	}
	return unique, total
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	return enc.Encode(v)
}
