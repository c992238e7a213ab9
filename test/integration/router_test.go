package integration

import (
	"encoding/json"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edgehive/edgehive/internal/loopback"
	pluginv1 "github.com/edgehive/edgehive/sdk/proto/plugin/v1"
)

// Router semantics through real plugin processes.
func TestRouterSemanticsWithPluginProcesses(t *testing.T) {
	th := startHost(t, loopbackBlock("alpha", "ga", "")+loopbackBlock("beta", "gb", "")+loopbackBlock("gamma", "gb", ""))
	th.waitRunning("alpha", "beta", "gamma")

	tests := []struct {
		name string
		run  func(t *testing.T)
	}{
		{"module: echo comes back to the sender", func(t *testing.T) {
			req, err := th.send(pluginv1.Send_KIND_MODULE, "alpha", loopback.OpEcho, map[string]int{"x": 1}, 0)
			if err != nil {
				t.Fatal(err)
			}
			d := th.waitFor(10*time.Second, byParent(req.GetId()))
			if d.GetFrom() != "alpha" || d.GetMessage().GetOperation() != "echoed" || string(d.GetMessage().GetContent()) != `{"x":1}` {
				t.Fatalf("got %v", d)
			}
		}},
		{"group: fan-out reaches every member", func(t *testing.T) {
			req, err := th.send(pluginv1.Send_KIND_GROUP, "gb", loopback.OpEcho, "fan", 0)
			if err != nil {
				t.Fatal(err)
			}
			from := map[string]bool{}
			deadline := time.Now().Add(10 * time.Second)
			for len(from) < 2 && time.Now().Before(deadline) {
				th.mu.Lock()
				for _, d := range th.received {
					if d.GetMessage().GetParentId() == req.GetId() {
						from[d.GetFrom()] = true
					}
				}
				th.mu.Unlock()
				time.Sleep(10 * time.Millisecond)
			}
			if !from["beta"] || !from["gamma"] || from["alpha"] {
				t.Fatalf("answers from %v", from)
			}
		}},
		{"sync: plugin to plugin request and response", func(t *testing.T) {
			req, err := th.send(pluginv1.Send_KIND_MODULE, "alpha", loopback.OpCall, loopback.Forward{To: "beta"}, 0)
			if err != nil {
				t.Fatal(err)
			}
			d := th.waitFor(10*time.Second, byParent(req.GetId()))
			var rep map[string]string
			if err := json.Unmarshal(d.GetMessage().GetContent(), &rep); err != nil {
				t.Fatal(err)
			}
			if rep["error"] != "" || rep["answer_parent"] != rep["request"] || rep["answer"] != `{"call":true}` {
				t.Fatalf("call report %v", rep)
			}
		}},
		{"sync: driver to plugin", func(t *testing.T) {
			req, err := th.send(pluginv1.Send_KIND_MODULE, "gamma", loopback.OpEcho, "ping", 5000)
			if err != nil {
				t.Fatal(err)
			}
			d := th.waitFor(10*time.Second, byParent(req.GetId()))
			if d.GetMessage().GetOperation() != "response" || string(d.GetMessage().GetContent()) != `"ping"` {
				t.Fatalf("got %v", d.GetMessage())
			}
		}},
		{"sync: timeout when nobody answers", func(t *testing.T) {
			// the driver never answers "echo"
			req, err := th.send(pluginv1.Send_KIND_MODULE, "alpha", loopback.OpCall, loopback.Forward{To: "driver", TimeoutMs: 300}, 0)
			if err != nil {
				t.Fatal(err)
			}
			d := th.waitFor(10*time.Second, byParent(req.GetId()))
			var rep map[string]string
			_ = json.Unmarshal(d.GetMessage().GetContent(), &rep)
			if !strings.Contains(rep["error"], "deadline exceeded") {
				t.Fatalf("want a deadline error, got %v", rep)
			}
		}},
		{"unknown destination is an error to the sender", func(t *testing.T) {
			if _, err := th.send(pluginv1.Send_KIND_MODULE, "nobody", loopback.OpEcho, "x", 0); err == nil || !strings.Contains(err.Error(), "unknown destination") {
				t.Fatalf("got %v", err)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, tc.run)
	}
}

// A caller that restarts while waiting gets the answer in its new instance.
func TestResponseToRestartedCaller(t *testing.T) {
	th := startHost(t, loopbackBlock("caller", "gc", ""))
	th.waitRunning("caller")
	// caller asks the driver (SendSync, 4 s); the driver holds the request.
	req, err := th.send(pluginv1.Send_KIND_MODULE, "caller", loopback.OpCall, loopback.Forward{To: "driver", TimeoutMs: 4000}, 0)
	if err != nil {
		t.Fatal(err)
	}
	call := th.waitFor(10*time.Second, func(d *pluginv1.Delivery) bool {
		return d.GetFrom() == "caller" && d.GetMessage().GetOperation() == loopback.OpEcho
	})
	_ = req
	oldPID := th.h.Supervisor("caller").Status().PID
	if err := syscall.Kill(oldPID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		st := th.h.Supervisor("caller").Status()
		if st.State == "running" && st.PID != oldPID && st.PID != 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("caller not restarted: %+v", st)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Answer the old call: it must reach the new instance, whose handler sees it.
	answer := &pluginv1.Message{Id: "answer-1", ParentId: call.GetMessage().GetId(), Operation: "response", Content: []byte(`"late"`)}
	if err := th.driver.Send(pluginv1.Send_KIND_RESPONSE, "", 0, answer); err != nil {
		t.Fatalf("answer refused: %v", err)
	}
	stats, err := th.send(pluginv1.Send_KIND_MODULE, "caller", loopback.OpStats, "", 5000)
	if err != nil {
		t.Fatal(err)
	}
	d := th.waitFor(10*time.Second, byParent(stats.GetId()))
	var st loopback.Stats
	_ = json.Unmarshal(d.GetMessage().GetContent(), &st)
	// The new instance got the redelivered call (unacknowledged at the kill)
	// and the answer to the old instance's call.
	if st.Ops["response"] != 1 || st.Ops[loopback.OpCall] != 1 || st.PID == oldPID {
		t.Fatalf("new instance saw %+v", st)
	}
}

// Malformed envelopes and huge messages get errors back; nothing else is affected.
func TestMalformedAndHugeMessagesRefused(t *testing.T) {
	th := startHost(t, loopbackBlock("bad", "gx", "")+loopbackBlock("good", "gy", ""))
	th.waitRunning("bad", "good")
	pidBefore := th.h.Supervisor("bad").Status().PID
	req, err := th.send(pluginv1.Send_KIND_MODULE, "bad", loopback.OpMalformed, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	d := th.waitFor(20*time.Second, byParent(req.GetId()))
	var res map[string]string
	if err := json.Unmarshal(d.GetMessage().GetContent(), &res); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"no_id":               "invalid message",
		"bad_json":            "invalid message",
		"no_operation":        "invalid message",
		"huge":                "too large",
		"unknown_destination": "unknown destination",
		"orphan_response":     "no caller waits",
	}
	for k, sub := range want {
		if !strings.Contains(res[k], sub) {
			t.Errorf("%s: got %q, want it to mention %q", k, res[k], sub)
		}
	}
	// both plugins still serve, the sender was not restarted
	for _, name := range []string{"bad", "good"} {
		req, err := th.send(pluginv1.Send_KIND_MODULE, name, loopback.OpEcho, "still", 5000)
		if err != nil {
			t.Fatal(err)
		}
		th.waitFor(10*time.Second, byParent(req.GetId()))
	}
	if st := th.h.Supervisor("bad").Status(); st.PID != pidBefore || st.Restarts != 0 {
		t.Fatalf("sender was restarted: %+v", st)
	}
}

// The third-party example plugin, built on its own against the SDK, answers
// through the host like any module.
func TestHelloExampleAnswers(t *testing.T) {
	th := startHost(t, fmt.Sprintf("plugin \"hello\" {\n  path = %q\n  config {\n    greeting = \"hi\"\n  }\n}\n", binDir+"/plugins/hello"))
	th.waitRunning("hello")
	req, err := th.send(pluginv1.Send_KIND_MODULE, "hello", "greet", map[string]string{"name": "ada"}, 5000)
	if err != nil {
		t.Fatal(err)
	}
	d := th.waitFor(10*time.Second, byParent(req.GetId()))
	if got := string(d.GetMessage().GetContent()); got != `{"greeting":"hi, ada"}` || d.GetMessage().GetOperation() != "response" {
		t.Fatalf("hello answered %s %s", d.GetMessage().GetOperation(), got)
	}
	async, err := th.send(pluginv1.Send_KIND_MODULE, "hello", "greet", map[string]string{"name": "bob"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	g := th.waitFor(10*time.Second, func(d *pluginv1.Delivery) bool {
		return d.GetMessage().GetOperation() == "greeted" && d.GetFrom() == "hello"
	})
	if got := string(g.GetMessage().GetContent()); got != `{"greeting":"hi, bob"}` {
		t.Fatalf("async greeting %s (request %s)", got, async.GetId())
	}
}
