package devicetwin

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/edgehive/edgehive/internal/twinwire"
	"github.com/edgehive/edgehive/sdk"
	"github.com/edgehive/edgehive/sdk/sdktest"
)

const edgeUpdated = "device/" + dev + "/twin/edge_updated"

func (r *rig) report(eventID, value string) {
	r.t.Helper()
	r.mqtt(devTopic+"/twin/update", `{"event_id":"`+eventID+`","timestamp":1,"twin":{"temperature":{"actual":{"value":"`+value+`"},"metadata":{"type":"float"}}}}`)
}

func (r *rig) confirmSync(id string) {
	r.t.Helper()
	msg := sdk.NewMessage(id).BuildRouter("devicecontroller", sdk.WireGroupTwin, "twin", sdk.OpResponse)
	_ = msg.FillBody("OK")
	r.deliver(msg)
}

func (r *rig) pendingIDs() []string {
	r.t.Helper()
	ps, err := r.m.db.Pending(context.Background())
	if err != nil {
		r.t.Fatal(err)
	}
	var ids []string
	for _, p := range ps {
		ids = append(ids, p.MsgID)
	}
	return ids
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestConfirmationStopsResend(t *testing.T) {
	r := newRig(t, "")
	r.addDevice(dev, "thermo-1")
	r.report("e1", "20")
	sync := r.waitCloud(edgeUpdated, 1)[0]
	r.confirmSync(sync.Header.ID)
	if ids := r.pendingIDs(); len(ids) != 0 {
		t.Fatalf("pending after confirmation: %v", ids)
	}
	n := r.countID(sync.Header.ID)
	time.Sleep(200 * time.Millisecond) // four retry intervals
	if got := r.countID(sync.Header.ID); got != n {
		t.Fatalf("sent %d times after the confirmation, was %d", got, n)
	}
}

func TestResendUntilConfirmed(t *testing.T) {
	r := newRig(t, "")
	r.addDevice(dev, "thermo-1")
	r.report("e1", "20")
	sync := r.waitCloud(edgeUpdated, 1)[0]
	waitFor(t, "three sends of the same message", func() bool { return r.countID(sync.Header.ID) >= 3 })
	// Every resend is the identical message.
	for _, s := range r.h.Sent() {
		if s.Message.Header.ID == sync.Header.ID && string(s.Message.Content) != string(sync.Content) {
			t.Fatalf("resend differs: %s vs %s", s.Message.Content, sync.Content)
		}
	}
	// A confirmation of the resent message ends it.
	r.confirmSync(sync.Header.ID)
	n := r.countID(sync.Header.ID)
	time.Sleep(150 * time.Millisecond)
	if got := r.countID(sync.Header.ID); got != n {
		t.Fatalf("still resent after confirmation: %d > %d", got, n)
	}
}

func TestEdgehubUnavailableThenBack(t *testing.T) {
	r := newRig(t, "")
	r.addDevice(dev, "thermo-1")
	r.h.FailSendsTo("edgehub", errors.New("no such module"))
	r.report("e1", "20")
	time.Sleep(100 * time.Millisecond)
	if len(r.toCloud(edgeUpdated)) != 0 {
		t.Fatal("a failed send was recorded")
	}
	r.h.FailSendsTo("edgehub", nil)
	sync := r.waitCloud(edgeUpdated, 1)[0]
	if ids := r.pendingIDs(); len(ids) != 1 || ids[0] != sync.Header.ID {
		t.Fatalf("pending %v, sent %s", ids, sync.Header.ID)
	}
}

func TestDisconnectHoldsSyncsUntilConnect(t *testing.T) {
	r := newRig(t, "")
	r.addDevice(dev, "thermo-1")
	r.cloud("edgehub", "disconnect", "node/connection", "cloud_disconnected")
	r.report("e1", "20")
	r.report("e2", "21")
	r.mqtt(devTopic+"/state/update", `{"event_id":"","timestamp":1,"state":"online"}`)
	time.Sleep(150 * time.Millisecond)
	if n := len(r.toCloud(edgeUpdated)) + len(r.toCloud("device/"+dev+"/state/update")); n != 0 {
		t.Fatalf("%d syncs sent while the cloud is away", n)
	}
	// The mapper is still served while offline.
	if got := len(r.published(devTopic + "/twin/update/result")); got != 2 {
		t.Fatalf("%d update results offline, want 2", got)
	}
	// Two updates of one device wait as one message holding the newest values.
	if ids := r.pendingIDs(); len(ids) != 2 {
		t.Fatalf("pending %v, want one twin and one state sync", ids)
	}

	// KubeEdge's edgehub sends op "connect" with the state in the content.
	r.cloud("edgehub", "connect", "node/connection", "cloud_connected")
	detail := r.waitCloud("membership/detail", 1)[0]
	if rt := detail.Router; rt.Source != "twin" || rt.Group != "resource" || rt.Operation != "get" {
		t.Fatalf("membership/detail route %+v", rt)
	}
	var detailJSON string
	if err := json.Unmarshal(detail.Content, &detailJSON); err != nil {
		t.Fatalf("detail content is not a string: %s", detail.Content)
	}
	match(t, detailJSON, `{"event_type":"group_membership_event","event_id":"*","group_id":"edge-1","operation":"detail","timestamp":"*"}`)

	sync := r.waitCloud(edgeUpdated, 1)[0]
	r.waitCloud("device/"+dev+"/state/update", 1)
	match(t, string(sync.Content), `{"event_id":"*","timestamp":"*","twin":{"temperature":{"actual":{"value":"21","metadata":{"timestamp":"*"}},"optional":true,"metadata":{"type":"float"},"actual_version":{"cloud":0,"edge":2}}}}`)

	// Disconnect by operation "disconnect" as well.
	r.cloud("edgehub", "disconnect", "node/connection", "")
	r.report("e3", "22")
	time.Sleep(100 * time.Millisecond)
	if n := len(r.toCloud(edgeUpdated)); n != 1 {
		t.Fatalf("%d twin syncs, want 1 (the second waits for the cloud)", n)
	}
	// membership/detail is asked once per connect, not resent.
	if n := len(r.toCloud("membership/detail")); n != 1 {
		t.Fatalf("membership/detail sent %d times", n)
	}
}

func TestRestartResumesPendingSyncs(t *testing.T) {
	dir := t.TempDir()
	r1 := newRig(t, dir)
	r1.addDevice(dev, "thermo-1")
	r1.cloud("edgehub", "disconnect", "node/connection", "cloud_disconnected")
	upd := r1.mqtt(devTopic+"/twin/update", `{"event_id":"e1","timestamp":1,"twin":{"temperature":{"actual":{"value":"20"},"metadata":{"type":"float"}}}}`)
	pending := r1.pendingIDs()
	r1.h.Stop()

	r2 := newRig(t, dir) // starts connected: edgehub tells only of changes
	sync := r2.waitCloud(edgeUpdated, 1)[0]
	if len(pending) != 1 || sync.Header.ID != pending[0] {
		t.Fatalf("resent %s, pending before the restart %v", sync.Header.ID, pending)
	}
	// The redelivered update (not acknowledged before the crash) is not applied twice.
	r2.deliver(upd)
	twins, err := r2.m.db.Twins(context.Background(), dev)
	if err != nil {
		t.Fatal(err)
	}
	if tw := twins["temperature"]; tw == nil || *tw.Actual != "20" || tw.ActualVersion.Edge != 1 {
		t.Fatalf("twin after restart %+v", tw)
	}
	r2.mqtt(devTopic+"/twin/get", `{"event_id":"g"}`)
	match(t, r2.last(devTopic+"/twin/get/result"),
		`{"event_id":"g","timestamp":"*","twin":{"temperature":{"actual":{"value":"20","metadata":{"timestamp":"*"}},"optional":true,"metadata":{"type":"float"}}}}`)
	r2.confirmSync(sync.Header.ID)
	if ids := r2.pendingIDs(); len(ids) != 0 {
		t.Fatalf("pending after confirmation: %v", ids)
	}
}

func TestCloudDesiredValueRoundTrip(t *testing.T) {
	r := newRig(t, "")
	r.addDevice(dev, "thermo-1")
	r.mqtt(devTopic+"/twin/update", `{"event_id":"e1","timestamp":1,"twin":{"switch":{"actual":{"value":"off"}}}}`)
	r.confirmSync(r.waitCloud(edgeUpdated, 1)[0].Header.ID)

	// The cloud wants "on".
	r.cloud("devicecontroller", sdk.OpUpdate, "device/"+dev+"/twin/cloud_updated",
		map[string]any{"event_id": "c1", "timestamp": 1, "twin": map[string]any{
			"switch": map[string]any{"expected": map[string]any{"value": "on"}, "expected_version": map[string]any{"cloud": 1, "edge": 0}}}})
	match(t, r.last(devTopic+"/twin/update/delta"),
		`{"event_id":"*","timestamp":"*","twin":{"switch":{"expected":{"value":"on","metadata":{"timestamp":"*"}},"actual":{"value":"off","metadata":{"timestamp":"*"}},"optional":true,"metadata":{"type":"string"}}},"delta":{"switch":"on"}}`)
	match(t, r.last(devTopic+"/twin/update/document"), `{"event_id":"c1","timestamp":"*","twin":{"switch":{
		"last":{"actual":{"value":"off","metadata":{"timestamp":"*"}},"optional":true,"metadata":{"type":"string"}},
		"current":{"expected":{"value":"on","metadata":{"timestamp":"*"}},"actual":{"value":"off","metadata":{"timestamp":"*"}},"optional":true,"metadata":{"type":"string"}}}}}`)
	if n := len(r.published(devTopic + "/twin/update/result")); n != 1 {
		t.Fatalf("a cloud update was answered on update/result (%d results)", n)
	}

	// The mapper switches and reports; no delta is left; the cloud hears of it.
	deltas := len(r.published(devTopic + "/twin/update/delta"))
	r.mqtt(devTopic+"/twin/update", `{"event_id":"e2","timestamp":1,"twin":{"switch":{"actual":{"value":"on"}}}}`)
	if n := len(r.published(devTopic + "/twin/update/delta")); n != deltas {
		t.Fatal("delta published although expected = actual")
	}
	sync := r.waitCloud(edgeUpdated, 2)[1]
	match(t, string(sync.Content), `{"event_id":"*","timestamp":"*","twin":{"switch":{"actual":{"value":"on","metadata":{"timestamp":"*"}},"optional":true,"metadata":{"type":"string"},"actual_version":{"cloud":0,"edge":2}}}}`)

	// A stale desired value is not applied; the edge's twin goes back to the cloud.
	r.cloud("devicecontroller", sdk.OpUpdate, "device/"+dev+"/twin/cloud_updated",
		`{"event_id":"c2","timestamp":2,"twin":{"switch":{"expected":{"value":"off"},"expected_version":{"cloud":0,"edge":0}}}}`)
	twins, _ := r.m.db.Twins(context.Background(), dev)
	if *twins["switch"].Expected != "on" {
		t.Fatalf("stale value applied: %s", *twins["switch"].Expected)
	}
	back := r.waitCloud(edgeUpdated, 3)[2]
	var c twinwire.TwinUpdate
	if err := json.Unmarshal(back.Content, &c); err != nil {
		t.Fatal(err)
	}
	if sw := c.Twin["switch"]; sw == nil || *sw.Expected.Value != "on" || sw.ExpectedVersion.Cloud != 1 {
		t.Fatalf("conflict answer %s", back.Content)
	}

	// A cloud update for an unknown device is dropped.
	r.cloud("devicecontroller", sdk.OpUpdate, "device/default/nope/twin/cloud_updated", `{"twin":{"a":{"expected":{"value":"1"}}}}`)
}

func TestSyncMessageAnswered(t *testing.T) {
	r := newRig(t, "")
	msg := sdk.NewMessage("").BuildRouter("tester", sdk.GroupUser, "default/pod/x", sdk.OpQuery)
	msg.Header.Sync = true
	r.deliver(msg)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if _, ok := r.h.WaitSent(ctx, func(s sdktest.Sent) bool { return s.Target == msg.Header.ID }); !ok {
		t.Fatal("a sync message was left unanswered")
	}
}

func TestMalformedNeverPanics(t *testing.T) {
	r := newRig(t, "")
	r.addDevice(dev, "thermo-1")
	payloads := []string{"", "null", "[]", "{", `"str"`, "42", `{"twin":null}`, `{"twin":[]}`, `{"twin":{"k":{"actual":null}}}`,
		`{"twin":{"k":{"actual":{"value":null}}}}`, `{"twin":{"k":{"metadata":null,"expected":{}}}}`, `{"twin":{"":{}}}`,
		`{"event_id":5}`, `{"state":null}`, `{"added_devices":[null,{}],"removed_devices":[{}]}`}
	topics := []string{devTopic + "/twin/update", devTopic + "/twin/get", devTopic + "/state/update",
		"$hw/events/node/" + testNode + "/membership/get", "$hw/events/device//twin/update", "$hw/events/device/x",
		"$hw/events/device/" + dev + "/twin/update/result"}
	for _, p := range payloads {
		for _, topic := range topics {
			r.mqtt(topic, p)
		}
		for _, res := range []string{"membership", "device/" + dev + "/twin/cloud_updated", "node/connection", "twin"} {
			msg := sdk.NewMessage("x").BuildRouter("devicecontroller", sdk.WireGroupTwin, res, sdk.OpUpdate)
			msg.Content = json.RawMessage(`"` + p + `"`)
			if !json.Valid(msg.Content) {
				msg.Content = nil
			}
			r.deliver(msg)
			raw := sdk.NewMessage("").BuildRouter("devicecontroller", sdk.WireGroupTwin, res, sdk.OpResponse)
			if json.Valid([]byte(p)) {
				raw.Content = json.RawMessage(p)
			}
			r.deliver(raw)
		}
	}
	if err := r.h.Health(context.Background()); err != nil {
		t.Fatal(err)
	}
}
