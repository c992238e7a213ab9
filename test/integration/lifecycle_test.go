package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edgehive/edgehive/internal/loopback"
	pluginv1 "github.com/edgehive/edgehive/sdk/proto/plugin/v1"
)

// trafficHost runs a sender and a receiver that reports every message it
// handles to the driver before acknowledging it.
func trafficHost(t *testing.T) *testHost {
	th := startHost(t,
		loopbackBlockCfg("src", "gs", "", `report_to = "driver"`)+
			loopbackBlockCfg("dst", "gd", "", `report_to = "driver"`))
	th.waitRunning("src", "dst")
	return th
}

func startFlood(t *testing.T, th *testHost, count int, rate float64) {
	t.Helper()
	if _, err := th.send(pluginv1.Send_KIND_MODULE, "src", loopback.OpFlood,
		loopback.Flood{To: "dst", Count: count, Rate: rate, Size: 256, Concurrency: 4}, 0); err != nil {
		t.Fatal(err)
	}
}

// finishFlood waits for the sender's report and for every sent message to be
// recorded by the receiver; it returns sent, unique recorded, and duplicates.
func finishFlood(t *testing.T, th *testHost) (sent int64, unique, dups int) {
	t.Helper()
	d := th.waitFor(60*time.Second, byOp("flood-done"))
	var res loopback.FloodResult
	if err := json.Unmarshal(d.GetMessage().GetContent(), &res); err != nil {
		t.Fatal(err)
	}
	if res.Errors > 0 {
		t.Fatalf("sender saw %d send errors, last: %s", res.Errors, res.Last)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		u, total := th.recordedCount()
		if int64(u) >= res.Sent || time.Now().After(deadline) {
			return res.Sent, u, total - u
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestKillPluginUnderTrafficLosesNothing(t *testing.T) {
	th := trafficHost(t)
	srcPID := th.h.Supervisor("src").Status().PID
	dstPID := th.h.Supervisor("dst").Status().PID
	startFlood(t, th, 6000, 3000)
	time.Sleep(700 * time.Millisecond)
	if err := syscall.Kill(dstPID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	sent, unique, dups := finishFlood(t, th)
	t.Logf("sent %d, recorded %d unique, %d redelivered duplicates", sent, unique, dups)
	if sent != 6000 || int64(unique) != sent {
		t.Fatalf("lost %d of %d messages", sent-int64(unique), sent)
	}
	dst := th.h.Supervisor("dst").Status()
	if dst.State != "running" || dst.PID == dstPID || dst.Restarts != 1 {
		t.Fatalf("receiver not restarted once: %+v", dst)
	}
	if src := th.h.Supervisor("src").Status(); src.PID != srcPID || src.Restarts != 0 {
		t.Fatalf("sender was disturbed: %+v", src)
	}
}

func TestUpgradeUnderTrafficLosesNothing(t *testing.T) {
	th := trafficHost(t)
	script := filepath.Join(t.TempDir(), "loopback-v2")
	if err := os.WriteFile(script, []byte(fmt.Sprintf("#!/bin/sh\nLOOPBACK_VERSION=2.0.0 exec %s \"$@\"\n", edgehiveBin())), 0o755); err != nil {
		t.Fatal(err)
	}
	oldPID := th.h.Supervisor("dst").Status().PID
	startFlood(t, th, 6000, 3000)
	time.Sleep(700 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := th.h.Upgrade(ctx, "dst", script, ""); err != nil {
		t.Fatalf("upgrade: %v", err)
	}
	sent, unique, dups := finishFlood(t, th)
	t.Logf("sent %d, recorded %d unique, %d duplicates", sent, unique, dups)
	if sent != 6000 || int64(unique) != sent {
		t.Fatalf("lost %d of %d messages", sent-int64(unique), sent)
	}
	st := th.h.Supervisor("dst").Status()
	if st.Version != "2.0.0" || st.PID == oldPID || st.State != "running" || st.Path != script {
		t.Fatalf("status after upgrade: %+v", st)
	}
	if _, err := os.FindProcess(oldPID); err == nil {
		if syscall.Kill(oldPID, 0) == nil {
			t.Fatalf("old instance %d still running", oldPID)
		}
	}
}

func TestUpgradeToBrokenBinaryKeepsOldInstance(t *testing.T) {
	th := startHost(t, loopbackBlock("solo", "g", ""))
	th.waitRunning("solo")
	before := th.h.Supervisor("solo").Status()
	bad := filepath.Join(t.TempDir(), "not-a-plugin")
	if err := os.WriteFile(bad, []byte("#!/bin/sh\nexit 3\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := th.h.Upgrade(ctx, "solo", bad, ""); err == nil {
		t.Fatal("upgrade to a broken binary succeeded")
	}
	after := th.h.Supervisor("solo").Status()
	if after.State != "running" || after.PID != before.PID {
		t.Fatalf("old instance disturbed: %+v", after)
	}
	req, err := th.send(pluginv1.Send_KIND_MODULE, "solo", loopback.OpEcho, "x", 5000)
	if err != nil {
		t.Fatal(err)
	}
	th.waitFor(10*time.Second, byParent(req.GetId()))
}

func TestHungPluginIsKilledAndRestarted(t *testing.T) {
	th := startHost(t, loopbackBlock("sleepy", "g", `health {
    interval = "200ms"
    timeout  = "200ms"
    failures = 2
  }`))
	th.waitRunning("sleepy")
	pid := th.h.Supervisor("sleepy").Status().PID
	if _, err := th.send(pluginv1.Send_KIND_MODULE, "sleepy", loopback.OpHang, "", 0); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		st := th.h.Supervisor("sleepy").Status()
		if st.State == "running" && st.PID != pid && st.PID != 0 {
			if !strings.Contains(st.LastError, "health") {
				t.Fatalf("last error does not say why: %q", st.LastError)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("hung plugin not replaced: %+v", st)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestCrashLoopEndsFailedHostStaysUp(t *testing.T) {
	th := startHost(t, loopbackBlock("crashy", "g", "")+loopbackBlock("steady", "g2", ""))
	th.waitRunning("crashy", "steady")
	steadyPID := th.h.Supervisor("steady").Status().PID
	deadline := time.Now().Add(60 * time.Second)
	for {
		st := th.h.Supervisor("crashy").Status()
		if st.State == "failed" {
			break
		}
		if st.State == "running" {
			_, _ = th.send(pluginv1.Send_KIND_MODULE, "crashy", loopback.OpCrash, "", 0)
		}
		if time.Now().After(deadline) {
			t.Fatalf("crash loop never ended failed: %+v", st)
		}
		time.Sleep(30 * time.Millisecond)
	}
	// sends to a failed plugin fail at once with a reason
	if _, err := th.send(pluginv1.Send_KIND_MODULE, "crashy", loopback.OpEcho, "x", 0); err == nil || !strings.Contains(err.Error(), "failed") {
		t.Fatalf("send to failed plugin: %v", err)
	}
	req, err := th.send(pluginv1.Send_KIND_MODULE, "steady", loopback.OpEcho, "x", 5000)
	if err != nil {
		t.Fatal(err)
	}
	th.waitFor(10*time.Second, byParent(req.GetId()))
	if st := th.h.Supervisor("steady").Status(); st.PID != steadyPID {
		t.Fatalf("steady plugin disturbed: %+v", st)
	}
	// an operator restart brings the failed plugin back
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := th.h.Restart(ctx, "crashy"); err != nil {
		t.Fatalf("restart: %v", err)
	}
	if st := th.h.Supervisor("crashy").Status(); st.State != "running" {
		t.Fatalf("after restart: %+v", st)
	}
}

// A plugin that answers its health checks but says it is unhealthy (its
// runtime is down, say) is shown so, not restarted: a restart would not mend it.
func TestUnhealthyPluginIsShownNotRestarted(t *testing.T) {
	th := startHost(t, loopbackBlock("ailing", "g", `health {
    interval = "100ms"
    timeout  = "100ms"
    failures = 2
  }`))
	th.waitRunning("ailing")
	pid := th.h.Supervisor("ailing").Status().PID
	if _, err := th.send(pluginv1.Send_KIND_MODULE, "ailing", loopback.OpSick, "", 0); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(th.h.Supervisor("ailing").Status().LastError, "unhealthy: sick on request") {
		if time.Now().After(deadline) {
			t.Fatalf("status never showed the plugin unhealthy: %+v", th.h.Supervisor("ailing").Status())
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(time.Second) // ten more health checks
	if st := th.h.Supervisor("ailing").Status(); st.PID != pid || st.Restarts != 0 || st.State != "running" {
		t.Fatalf("an answering plugin was restarted: %+v", st)
	}
}
