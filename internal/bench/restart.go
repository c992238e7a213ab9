package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"syscall"
	"time"

	"github.com/edgehive/edgehive/internal/loopback"
)

// RestartOptions shape the restart benchmark.
type RestartOptions struct {
	Rate     float64       // messages per second during the run
	Duration time.Duration // whole run; the kill comes at a third of it
}

// RestartResult is printed as JSON.
type RestartResult struct {
	Rate       float64 `json:"rate"`
	Sent       int64   `json:"sent"`
	Recorded   int     `json:"recorded"`
	Duplicates int     `json:"redelivered_duplicates"`
	Lost       int64   `json:"lost"`
	RecoveryMs float64 `json:"recovery_ms"`
	RestartMs  float64 `json:"restart_ms"` // kill until the new instance was attached
}

// Restart kills the receiving plugin with SIGKILL under load and measures the
// time until its next instance acknowledges a message again, and the loss.
func Restart(opts RestartOptions, out, logOut io.Writer) error {
	if opts.Rate <= 0 {
		opts.Rate = 5000
	}
	if opts.Duration <= 0 {
		opts.Duration = 4 * time.Second
	}
	// Every message the receiver handles is reported before it is acknowledged.
	r, err := startPair(logOut, "bench")
	if err != nil {
		return err
	}
	defer r.close()
	if _, err := r.order("bench-src", loopback.OpFlood, loopback.Flood{
		To: "bench-dst", Duration: opts.Duration.String(), Rate: opts.Rate, Size: 256, Concurrency: 4,
	}, 0); err != nil {
		return err
	}
	time.Sleep(opts.Duration / 3)
	sup := r.h.Supervisor("bench-dst")
	old := sup.Current()
	if old == nil {
		return fmt.Errorf("bench-dst has no running instance")
	}
	killed := time.Now()
	if err := syscall.Kill(old.PID, syscall.SIGKILL); err != nil {
		return fmt.Errorf("kill bench-dst: %w", err)
	}
	res := RestartResult{Rate: opts.Rate}
	for {
		if cur := sup.Current(); cur != nil && cur != old && cur.Attachment() != nil {
			if res.RestartMs == 0 {
				res.RestartMs = ms(time.Since(killed))
			}
			if cur.Attachment().Acked() > 0 {
				res.RecoveryMs = ms(time.Since(killed))
				break
			}
		}
		if time.Since(killed) > 30*time.Second {
			return fmt.Errorf("bench-dst did not recover within 30s")
		}
		time.Sleep(500 * time.Microsecond)
	}
	done, err := r.waitReport(opts.Duration+60*time.Second, "flood-done")
	if err != nil {
		return err
	}
	var flood loopback.FloodResult
	if err := json.Unmarshal(done.GetContent(), &flood); err != nil {
		return err
	}
	res.Sent = flood.Sent
	deadline := time.Now().Add(30 * time.Second)
	for {
		unique, total := r.recordedCounts()
		res.Recorded, res.Duplicates = unique, total-unique
		if int64(unique) >= flood.Sent || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	res.Lost = res.Sent - int64(res.Recorded)
	if flood.Errors > 0 {
		return fmt.Errorf("sender saw %d send errors (last: %s)", flood.Errors, flood.Last)
	}
	return printJSON(out, res)
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
