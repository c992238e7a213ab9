package devicetwin

import (
	"encoding/json"
	"slices"
	"testing"

	"github.com/edgehive/edgehive/sdk"
)

func mapperMsg(t *testing.T, topic, payload string) *sdk.Message {
	t.Helper()
	msg := sdk.NewMessage("").BuildRouter("eventbus", sdk.GroupUser, topic, sdk.OpPublish)
	if err := msg.FillBody(payload); err != nil {
		t.Fatal(err)
	}
	return msg
}

// A batch is handled as the same messages one by one would be: answers in
// order, a refused update changes nothing, a duplicate counts once, and the
// device's changes reach the cloud in one edge_updated.
func TestTwinBatch(t *testing.T) {
	r := newRig(t, "")
	r.addDevice(dev, "thermo-1")
	r.addDevice("default/lamp", "lamp")
	upd := func(event, value string) string {
		return `{"event_id":"` + event + `","timestamp":1,"twin":{"temperature":{"actual":{"value":"` + value + `"},"metadata":{"type":"float"}}}}`
	}
	first := mapperMsg(t, devTopic+"/twin/update", upd("e1", "20.5"))
	dup := first.Clone()
	msgs := []*sdk.Message{
		first,
		mapperMsg(t, devTopic+"/twin/update", upd("e2", "warm")), // not a float: 400
		mapperMsg(t, "$hw/events/device/default/nosuch/twin/update", upd("e3", "1")),
		mapperMsg(t, "$hw/events/device/default/lamp/twin/update", `{"event_id":"e4","timestamp":1,"twin":{"power":{"expected":{"value":"on"},"actual":{"value":"off"}}}}`),
		dup,
		mapperMsg(t, devTopic+"/twin/update", upd("e5", "21.5")),
		mapperMsg(t, devTopic+"/twin/update", `not json`),
	}
	for i, err := range r.h.DeliverBatch(msgs...) {
		if err != nil {
			t.Errorf("message %d: %v", i, err)
		}
	}

	results := r.published(devTopic + "/twin/update/result")
	if len(results) != 3 {
		t.Fatalf("results on the device: %d, want 3 (e1, e2 refused, e5): %v", len(results), results)
	}
	match(t, results[0], `{"event_id":"e1","timestamp":"*","twin":{"temperature":{"actual":{"value":"20.5","metadata":{"timestamp":"*"}},"optional":true,"metadata":{"type":"float"}}}}`)
	match(t, results[1], `{"event_id":"e2","timestamp":"*","code":400,"reason":"*"}`)
	match(t, results[2], `{"event_id":"e5","timestamp":"*","twin":{"temperature":{"actual":{"value":"21.5","metadata":{"timestamp":"*"}},"optional":true,"metadata":{"type":"float"}}}}`)
	docs := r.published(devTopic + "/twin/update/document")
	if len(docs) != 2 {
		t.Fatalf("documents: %d, want 2", len(docs))
	}
	match(t, docs[1], `{"event_id":"e5","timestamp":"*","twin":{"temperature":{"last":{"actual":{"value":"20.5","metadata":{"timestamp":"*"}},"optional":true,"metadata":{"type":"float"}},"current":{"actual":{"value":"21.5","metadata":{"timestamp":"*"}},"optional":true,"metadata":{"type":"float"}}}}}`)
	match(t, r.last("$hw/events/device/default/nosuch/twin/update/result"), `{"event_id":"e3","timestamp":"*","code":404,"reason":"*"}`)
	match(t, r.last("$hw/events/device//twin/update/result"), `{"event_id":"","timestamp":"*","code":400,"reason":"*"}`)
	match(t, r.last("$hw/events/device/default/lamp/twin/update/delta"), `{"event_id":"*","timestamp":"*","twin":{"power":{"expected":{"value":"on","metadata":{"timestamp":"*"}},"actual":{"value":"off","metadata":{"timestamp":"*"}},"optional":true,"metadata":{"type":"string"}}},"delta":{"power":"on"}}`)

	// Answers keep the order of the requests.
	var order []string
	for _, s := range r.h.Sent() {
		if s.Target == "eventbus" && len(s.Message.Router.Resource) > 7 && s.Message.Router.Resource[len(s.Message.Router.Resource)-7:] == "/result" {
			var p struct {
				EventID string `json:"event_id"`
			}
			var body string
			_ = json.Unmarshal(s.Message.Content, &body)
			_ = json.Unmarshal([]byte(body), &p)
			order = append(order, p.EventID)
		}
	}
	if want := []string{"e1", "e2", "e3", "e4", "e5", ""}; !slices.Equal(order, want) {
		t.Errorf("result order %v, want %v", order, want)
	}

	// One edge_updated per device, with the last value and the version
	// counting the two accepted updates (the duplicate and the refused one
	// count for nothing).
	syncs := r.waitCloud("device/"+dev+"/twin/edge_updated", 1)
	if len(syncs) != 1 {
		t.Fatalf("edge_updated for %s: %d, want 1", dev, len(syncs))
	}
	match(t, syncs[0].ContentString(), `{"event_id":"*","timestamp":"*","twin":{"temperature":{"actual":{"value":"21.5","metadata":{"timestamp":"*"}},"optional":true,"metadata":{"type":"float"},"actual_version":{"cloud":0,"edge":2}}}}`)
	if n := len(r.waitCloud("device/default/lamp/twin/edge_updated", 1)); n != 1 {
		t.Errorf("edge_updated for the lamp: %d, want 1", n)
	}
	twins, err := r.m.db.Twins(t.Context(), dev)
	if err != nil {
		t.Fatal(err)
	}
	if tw := twins["temperature"]; tw == nil || *tw.Actual != "21.5" || tw.ActualVersion.Edge != 2 {
		t.Errorf("stored twin %+v", tw)
	}

	// The same messages again (a redelivery after a crash) change nothing.
	before := len(r.h.Sent())
	r.h.DeliverBatch(first.Clone())
	r.deliver(mapperMsg(t, devTopic+"/twin/update", upd("e6", "22.5")))
	twins, _ = r.m.db.Twins(t.Context(), dev)
	if tw := twins["temperature"]; *tw.Actual != "22.5" || tw.ActualVersion.Edge != 3 {
		t.Errorf("after a redelivery and one more update: %+v (version %+v)", tw, tw.ActualVersion)
	}
	if len(r.h.Sent()) == before {
		t.Error("nothing sent for the new update")
	}
}

// A cloud confirmation in the middle of a batch splits it, and confirmations
// in a row are applied together.
func TestTwinBatchWithConfirmations(t *testing.T) {
	r := newRig(t, "")
	r.addDevice(dev, "thermo-1")
	r.mqtt(devTopic+"/twin/update", `{"event_id":"a","timestamp":1,"twin":{"t":{"actual":{"value":"1"}}}}`)
	first := r.waitCloud("device/"+dev+"/twin/edge_updated", 1)[0]
	ack := func(parent string) *sdk.Message {
		m := sdk.NewMessage(parent).BuildRouter("devicecontroller", sdk.WireGroupTwin, "twin", sdk.OpResponse)
		_ = m.FillBody("OK")
		return m
	}
	errs := r.h.DeliverBatch(ack(first.Header.ID), ack("unknown-id"),
		mapperMsg(t, devTopic+"/twin/update", `{"event_id":"b","timestamp":1,"twin":{"t":{"actual":{"value":"2"}}}}`))
	for i, err := range errs {
		if err != nil {
			t.Errorf("message %d: %v", i, err)
		}
	}
	pending, err := r.m.db.Pending(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(pending) != 1 || pending[0].MsgID == first.Header.ID {
		t.Fatalf("pending after the confirmation and a new update: %+v", pending)
	}
	var m sdk.Message
	_ = json.Unmarshal(pending[0].Message, &m)
	match(t, m.ContentString(), `{"event_id":"*","timestamp":"*","twin":{"t":{"actual":{"value":"2","metadata":{"timestamp":"*"}},"optional":true,"metadata":{"type":"string"},"actual_version":{"cloud":0,"edge":2}}}}`)
}
