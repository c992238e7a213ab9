package eventbus

import (
	"encoding/json"
	"errors"
	"fmt"
	"testing"

	"github.com/edgehive/edgehive/sdk"
)

// A batch publishes in order; a refused message fails alone; a message of
// another kind in the middle (a subscribe) is handled in its place.
func TestHandleBatchPublishes(t *testing.T) {
	b, h := startBus(t, "", internalConfig(""))
	tc := newTestClient(t, b.BrokerAddr())
	tc.subscribe("batch/#")
	pub := func(topic, content string) *sdk.Message {
		m := sdk.NewMessage("").BuildRouter("devicetwin", sdk.GroupUser, topic, sdk.OpPublish)
		m.Content = json.RawMessage(content)
		return m
	}
	var msgs []*sdk.Message
	for i := range 20 {
		msgs = append(msgs, pub(fmt.Sprintf("batch/%d", i), jsonString(fmt.Sprintf("p%d", i))))
	}
	msgs = append(msgs, pub("batch/+/bad", jsonString("wildcard")))
	sub := sdk.NewMessage("").BuildRouter("router_eventbus", sdk.GroupUser, "batch-sub/#", sdk.OpSubscribe)
	msgs = append(msgs, sub, pub("batch/last", `{"n":1}`))

	errs := h.DeliverBatch(msgs...)
	for i, err := range errs {
		if i == 20 {
			if !errors.Is(err, errRefused) {
				t.Errorf("wildcard publish: %v, want refused", err)
			}
			continue
		}
		if err != nil {
			t.Errorf("message %d: %v", i, err)
		}
	}
	for i := range 20 {
		m := tc.next()
		if want := fmt.Sprintf("batch/%d", i); m.Topic() != want || string(m.Payload()) != fmt.Sprintf("p%d", i) {
			t.Fatalf("message %d: %s %q, want %s", i, m.Topic(), m.Payload(), want)
		}
	}
	if m := tc.next(); m.Topic() != "batch/last" || string(m.Payload()) != `{"n":1}` {
		t.Fatalf("last: %s %q", m.Topic(), m.Payload())
	}
	if !b.subscribedTo("batch-sub/x") {
		t.Error("the subscribe in the batch was not applied")
	}
	if s := b.Stats(); s.Published != 21 || s.Refused != 1 {
		t.Errorf("stats %+v, want 21 published, 1 refused", s)
	}
}

// MQTT messages that pile up reach the other modules in order.
func TestForwardInOrder(t *testing.T) {
	b, h := startBus(t, "", internalConfig(""))
	tc := newTestClient(t, b.BrokerAddr())
	const n = 300
	for i := range n {
		topic := fmt.Sprintf("$hw/events/device/default/d%d/twin/update", i%3)
		if i%5 == 0 {
			topic = fmt.Sprintf("app/user/%d", i)
		}
		tok := tc.c.Publish(topic, 1, false, fmt.Sprintf(`{"i":%d}`, i))
		_ = tok // waited for below, all at once
	}
	marker(t, h, tc)
	var got []int
	for _, s := range h.Sent() {
		var body string
		var p struct{ I *int }
		if json.Unmarshal(s.Message.Content, &body) != nil || json.Unmarshal([]byte(body), &p) != nil || p.I == nil {
			continue
		}
		got = append(got, *p.I)
	}
	if len(got) != n {
		t.Fatalf("forwarded %d of %d", len(got), n)
	}
	for i, v := range got {
		if v != i {
			t.Fatalf("message %d is %d: order lost", i, v)
		}
	}
}

// A QoS 1 publish the embedded broker acknowledged is in the journal: if
// eventbus stops before handing it on, the next instance hands it on; a
// message already handed on is not repeated.
func TestJournalSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	b, h := startBus(t, dir, internalConfig(""))
	tc := newTestClient(t, b.BrokerAddr())
	tc.publish("$hw/events/device/default/j1/twin/update", []byte(`{"n":1}`)) // handed on
	first := waitSend(t, h, twinModule, "$hw/events/device/default/j1/twin/update")
	h.FailSendsTo(twinModule, sdk.ErrQueueFull)
	tc.publish("$hw/events/device/default/j2/twin/update", []byte(`{"n":2}`)) // acknowledged, stuck
	tc.c.Disconnect(50)
	h.Stop()

	b2, h2 := startBus(t, dir, internalConfig(""))
	got := waitSend(t, h2, twinModule, "$hw/events/device/default/j2/twin/update")
	if got.ContentString() != `{"n":2}` {
		t.Errorf("content %s", got.Content)
	}
	// Wait for the journal to be flushed, then restart again: nothing comes twice.
	tc2 := newTestClient(t, b2.BrokerAddr())
	marker(t, h2, tc2)
	tc2.c.Disconnect(50)
	h2.Stop()
	b3, h3 := startBus(t, dir, internalConfig(""))
	marker(t, h3, newTestClient(t, b3.BrokerAddr()))
	for _, s := range h3.Sent() {
		if s.Target == twinModule {
			t.Errorf("handed on again after a clean restart: %s (first was %s)", s.Message.Router.Resource, first.Header.ID)
		}
	}
}
