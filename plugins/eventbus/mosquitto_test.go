package eventbus

import (
	"fmt"
	"testing"
	"time"

	"github.com/edgehive/edgehive/internal/testenv"
	"github.com/edgehive/edgehive/sdk"
	"github.com/edgehive/edgehive/sdk/sdktest"
)

func startMosquitto(t *testing.T) string { return testenv.Mosquitto(t) }

func externalConfig(addr string) string {
	return fmt.Sprintf(`{"mode":"external","broker_url":"tcp://%s","qos":1}`, addr)
}

func TestMosquitto(t *testing.T) {
	addr := startMosquitto(t)
	b, h := startBus(t, "", externalConfig(addr))
	if b.BrokerAddr() != "" {
		t.Fatalf("an embedded broker runs in external mode: %s", b.BrokerAddr())
	}
	tc := newTestClient(t, addr)
	tc.subscribe("$hw/events/device/+/+/twin/update/result")

	twin := "$hw/events/device/default/t1/twin/update"
	tc.publish(twin, []byte(`{"event_id":"e1"}`))
	msg := waitSend(t, h, twinModule, twin)
	if msg.Router.Source != "eventbus" || msg.Router.Operation != "publish" || string(msg.Content) != jsonString(`{"event_id":"e1"}`) {
		t.Fatalf("to devicetwin: %s %s", msg, msg.Content)
	}
	tc.publish("default/user/a", []byte("up"))
	msg = waitSend(t, h, cloudModule, "default/user/a")
	if msg.Router.Source != "bus" || msg.Router.Operation != "upload" {
		t.Fatalf("to edgehub: %s", msg)
	}
	if err := deliver(t, h, "devicetwin", "publish", twin+"/result", jsonString(`{"event_id":"e1","twin":{}}`)); err != nil {
		t.Fatal(err)
	}
	if m := tc.next(); m.Topic() != twin+"/result" || string(m.Payload()) != `{"event_id":"e1","twin":{}}` {
		t.Fatalf("received %s %s", m.Topic(), m.Payload())
	}
	if err := deliver(t, h, "router_eventbus", "subscribe", "default/test", ""); err != nil {
		t.Fatal(err)
	}
	tc.publish("default/test", []byte("rule"))
	waitSend(t, h, cloudModule, "default/test")
}

// TestMosquittoRestart stops eventbus while messages are stuck on their way to
// devicetwin and while more are published, then starts it again: its
// persistent session on mosquitto delivers every one of them.
func TestMosquittoRestart(t *testing.T) {
	old := sendAttempts
	sendAttempts = 1 << 30 // keep retrying until Stop
	t.Cleanup(func() { sendAttempts = old })
	addr := startMosquitto(t)
	dir := t.TempDir()
	_, h := startBus(t, dir, externalConfig(addr))
	if err := deliver(t, h, "router_eventbus", "subscribe", "default/rule", ""); err != nil {
		t.Fatal(err)
	}
	tc := newTestClient(t, addr)
	twin := "$hw/events/device/default/t1/twin/update"

	const n = 30
	tc.publish(twin, []byte(`{"seq":0}`))
	waitSend(t, h, twinModule, twin)
	h.FailSendsTo(twinModule, sdk.ErrQueueFull) // devicetwin stops taking messages
	for i := 1; i < n/2; i++ {
		tc.publish(twin, fmt.Appendf(nil, `{"seq":%d}`, i))
	}
	time.Sleep(100 * time.Millisecond)
	h.Stop() // the stuck messages were never acknowledged to mosquitto
	for i := n / 2; i < n; i++ {
		tc.publish(twin, fmt.Appendf(nil, `{"seq":%d}`, i))
	}
	tc.publish("default/rule", []byte("while down"))

	_, h2 := startBus(t, dir, externalConfig(addr))
	seen := map[string]bool{}
	for i := 1; i < n; i++ {
		want := jsonString(fmt.Sprintf(`{"seq":%d}`, i))
		waitContent(t, h2, twinModule, want)
		seen[want] = true
	}
	// The cloud's subscription was restored, and the message sent meanwhile arrived.
	msg := waitSend(t, h2, cloudModule, "default/rule")
	if string(msg.Content) != jsonString("while down") {
		t.Fatalf("content %s", msg.Content)
	}
	if len(seen) != n-1 {
		t.Fatalf("saw %d of %d", len(seen), n-1)
	}
}

func waitContent(t *testing.T, h *sdktest.Harness, module, content string) {
	t.Helper()
	ctx, cancel := contextFor()
	defer cancel()
	if _, ok := h.WaitSent(ctx, func(s sdktest.Sent) bool {
		return s.Kind == sdktest.KindModule && s.Target == module && string(s.Message.Content) == content
	}); !ok {
		t.Fatalf("nothing sent to %s with content %s", module, content)
	}
}
