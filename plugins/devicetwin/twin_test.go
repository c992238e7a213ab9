package devicetwin

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/edgehive/edgehive/internal/twinwire"
	"github.com/edgehive/edgehive/sdk"
	"github.com/edgehive/edgehive/sdk/sdktest"
)

const (
	testNode = "edge-1"
	dev      = "default/thermo-1"
	devTopic = "$hw/events/device/" + dev
)

type rig struct {
	t *testing.T
	h *sdktest.Harness
	m *DeviceTwin
}

func newRig(t *testing.T, dir string) *rig {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	m := New()
	h := sdktest.New(t, m, sdktest.Options{NodeName: testNode, DataDir: dir, ConfigJSON: `{"sync_retry_interval":"50ms"}`})
	return &rig{t: t, h: h, m: m}
}

func (r *rig) deliver(msg *sdk.Message) {
	r.t.Helper()
	if err := r.h.Deliver(msg); err != nil {
		if errors.Is(err, sdktest.ErrPanic) {
			r.t.Fatalf("panic: %v", err)
		}
		r.t.Logf("Handle returned %v", err)
	}
}

// mqtt delivers an MQTT message as eventbus does.
func (r *rig) mqtt(topic, payload string) *sdk.Message {
	r.t.Helper()
	msg := sdk.NewMessage("").BuildRouter("eventbus", sdk.GroupUser, topic, sdk.OpPublish)
	if err := msg.FillBody(payload); err != nil {
		r.t.Fatal(err)
	}
	r.deliver(msg)
	return msg
}

// cloud delivers a message from the cloud as edgehub does.
func (r *rig) cloud(source, op, resource string, content any) *sdk.Message {
	r.t.Helper()
	msg := sdk.NewMessage("").BuildRouter(source, sdk.WireGroupTwin, resource, op)
	if err := msg.FillBody(content); err != nil {
		r.t.Fatal(err)
	}
	r.deliver(msg)
	return msg
}

func (r *rig) addDevice(id, name string) {
	r.t.Helper()
	r.cloud("devicecontroller", sdk.OpUpdate, "membership",
		fmt.Sprintf(`{"event_id":"m1","timestamp":1,"added_devices":[{"id":%q,"name":%q}],"removed_devices":null}`, id, name))
}

// published returns the payloads published on topic so far.
func (r *rig) published(topic string) []string {
	var out []string
	for _, s := range r.h.Sent() {
		m := s.Message
		if s.Kind == sdktest.KindModule && s.Target == "eventbus" && m.Router.Resource == topic {
			if m.Router.Source != Name || m.Router.Group != sdk.GroupUser || m.Router.Operation != sdk.OpPublish {
				r.t.Fatalf("publish route %+v", m.Router)
			}
			var payload string
			if err := json.Unmarshal(m.Content, &payload); err != nil {
				r.t.Fatalf("content of a publish is not a JSON string: %s", m.Content)
			}
			out = append(out, payload)
		}
	}
	return out
}

// last returns the last payload on topic, failing if there is none.
func (r *rig) last(topic string) string {
	r.t.Helper()
	p := r.published(topic)
	if len(p) == 0 {
		r.t.Fatalf("nothing published on %s", topic)
	}
	return p[len(p)-1]
}

// toCloud returns the messages sent to edgehub on resource, each msg_id once
// (resends left out), in the order first sent.
func (r *rig) toCloud(resource string) []*sdk.Message {
	var out []*sdk.Message
	seen := map[string]bool{}
	for _, s := range r.h.Sent() {
		if s.Kind == sdktest.KindModule && s.Target == "edgehub" && s.Message.Router.Resource == resource && !seen[s.Message.Header.ID] {
			seen[s.Message.Header.ID] = true
			out = append(out, s.Message)
		}
	}
	return out
}

func (r *rig) countID(id string) int {
	n := 0
	for _, s := range r.h.Sent() {
		if s.Target == "edgehub" && s.Message.Header.ID == id {
			n++
		}
	}
	return n
}

func (r *rig) waitCloud(resource string, n int) []*sdk.Message {
	r.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if got := r.toCloud(resource); len(got) >= n {
			return got
		}
		time.Sleep(5 * time.Millisecond)
	}
	r.t.Fatalf("fewer than %d messages to edgehub on %s: %d", n, resource, len(r.toCloud(resource)))
	return nil
}

// match compares JSON text with a wanted shape: same keys at every level,
// same values, except that the string "*" in want matches any non-null value.
func match(t *testing.T, got, want string) {
	t.Helper()
	var g, w any
	if err := json.Unmarshal([]byte(got), &g); err != nil {
		t.Fatalf("got is not JSON: %v: %s", err, got)
	}
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		t.Fatalf("want is not JSON: %v: %s", err, want)
	}
	if path, ok := same(g, w, "$"); !ok {
		t.Fatalf("at %s\n got: %s\nwant: %s", path, got, want)
	}
}

func same(g, w any, path string) (string, bool) {
	if s, ok := w.(string); ok && s == "*" {
		return path, g != nil
	}
	switch wv := w.(type) {
	case map[string]any:
		gv, ok := g.(map[string]any)
		if !ok || len(gv) != len(wv) {
			return path, false
		}
		for k, v := range wv {
			gx, ok := gv[k]
			if !ok {
				return path + "." + k, false
			}
			if p, ok := same(gx, v, path+"."+k); !ok {
				return p, false
			}
		}
		return "", true
	case []any:
		gv, ok := g.([]any)
		if !ok || len(gv) != len(wv) {
			return path, false
		}
		for i := range wv {
			if p, ok := same(gv[i], wv[i], fmt.Sprintf("%s[%d]", path, i)); !ok {
				return p, false
			}
		}
		return "", true
	}
	return path, reflect.DeepEqual(g, w)
}

func TestMembership(t *testing.T) {
	r := newRig(t, "")
	r.cloud("devicecontroller", sdk.OpUpdate, "membership",
		`{"event_id":"m1","timestamp":1,"added_devices":[{"id":"default/thermo-1","name":"thermo-1","description":"a thermometer"},{"id":"default/lamp","name":"lamp","attributes":{"model":{"value":"L1","optional":false,"metadata":{"type":"string"}}}}],"removed_devices":null}`)
	topic := "$hw/events/node/" + testNode + "/membership/updated"
	got := r.published(topic)
	if len(got) != 2 {
		t.Fatalf("membership/updated published %d times, want 2 (one per device)", len(got))
	}
	match(t, got[0], `{"event_id":"*","timestamp":"*","added_devices":[{"id":"default/thermo-1","name":"thermo-1","description":"a thermometer"}],"removed_devices":null}`)
	match(t, got[1], `{"event_id":"*","timestamp":"*","added_devices":[{"id":"default/lamp","name":"lamp","attributes":{"model":{"value":"L1","optional":false,"metadata":{"type":"string"}}}}],"removed_devices":null}`)

	r.mqtt("$hw/events/node/"+testNode+"/membership/get", `{"event_id":"g1"}`)
	match(t, r.last("$hw/events/node/"+testNode+"/membership/get/result"),
		`{"event_id":"g1","timestamp":"*","devices":[{"id":"default/lamp","name":"lamp","attributes":{"model":{"value":"L1","optional":false,"metadata":{"type":"string"}}}},{"id":"default/thermo-1","name":"thermo-1","description":"a thermometer"}]}`)

	// The cloud may send the content as a JSON string too.
	r.cloud("devicecontroller", sdk.OpUpdate, "membership", `{"event_id":"m2","timestamp":2,"added_devices":null,"removed_devices":[{"id":"default/lamp","name":"lamp"}]}`)
	match(t, r.last(topic), `{"event_id":"*","timestamp":"*","added_devices":null,"removed_devices":[{"id":"default/lamp","name":"lamp"}]}`)
	r.mqtt("$hw/events/node/"+testNode+"/membership/get", `{"event_id":"g2"}`)
	match(t, r.last("$hw/events/node/"+testNode+"/membership/get/result"),
		`{"event_id":"g2","timestamp":"*","devices":[{"id":"default/thermo-1","name":"thermo-1","description":"a thermometer"}]}`)
}

func TestTwinUpdate(t *testing.T) {
	r := newRig(t, "")
	r.addDevice(dev, "thermo-1")

	// The reference's example.
	r.mqtt(devTopic+"/twin/update", `{"event_id":"e7","timestamp":1722950500000,"twin":{"temperature":{"actual":{"value":"23.5"},"metadata":{"type":"float"}}}}`)
	match(t, r.last(devTopic+"/twin/update/result"),
		`{"event_id":"e7","timestamp":"*","twin":{"temperature":{"actual":{"value":"23.5","metadata":{"timestamp":"*"}},"optional":true,"metadata":{"type":"float"}}}}`)
	match(t, r.last(devTopic+"/twin/update/document"),
		`{"event_id":"e7","timestamp":"*","twin":{"temperature":{"last":null,"current":{"actual":{"value":"23.5","metadata":{"timestamp":"*"}},"optional":true,"metadata":{"type":"float"}}}}}`)
	if d := r.published(devTopic + "/twin/update/delta"); len(d) != 0 {
		t.Fatalf("delta without expected values: %v", d)
	}
	// The mapper's timestamp is replaced by the edge's.
	var res twinwire.TwinUpdate
	_ = json.Unmarshal([]byte(r.last(devTopic+"/twin/update/result")), &res)
	if ts := res.Twin["temperature"].Actual.Metadata.Timestamp; ts < time.Now().Add(-time.Minute).UnixMilli() {
		t.Fatalf("value timestamp %d is not the edge's", ts)
	}

	// The change goes to the cloud.
	sync := r.waitCloud("device/"+dev+"/twin/edge_updated", 1)[0]
	if rt := sync.Router; rt.Source != "twin" || rt.Group != "resource" || rt.Operation != "update" {
		t.Fatalf("edge_updated route %+v", rt)
	}
	match(t, string(sync.Content),
		`{"event_id":"*","timestamp":"*","twin":{"temperature":{"actual":{"value":"23.5","metadata":{"timestamp":"*"}},"optional":true,"metadata":{"type":"float"},"actual_version":{"cloud":0,"edge":1}}}}`)

	// A second report bumps the edge version; an expected value that differs gives a delta.
	r.mqtt(devTopic+"/twin/update", `{"event_id":"e8","timestamp":1,"twin":{"temperature":{"actual":{"value":"24"}},"switch":{"expected":{"value":"on"},"actual":{"value":"off"}}}}`)
	match(t, r.last(devTopic+"/twin/update/result"),
		`{"event_id":"e8","timestamp":"*","twin":{"temperature":{"actual":{"value":"24","metadata":{"timestamp":"*"}},"optional":true,"metadata":{"type":"float"}},
		  "switch":{"expected":{"value":"on","metadata":{"timestamp":"*"}},"actual":{"value":"off","metadata":{"timestamp":"*"}},"optional":true,"metadata":{"type":"string"}}}}`)
	match(t, r.last(devTopic+"/twin/update/document"),
		`{"event_id":"e8","timestamp":"*","twin":{
		  "temperature":{"last":{"actual":{"value":"23.5","metadata":{"timestamp":"*"}},"optional":true,"metadata":{"type":"float"}},
		                 "current":{"actual":{"value":"24","metadata":{"timestamp":"*"}},"optional":true,"metadata":{"type":"float"}}},
		  "switch":{"last":null,"current":{"expected":{"value":"on","metadata":{"timestamp":"*"}},"actual":{"value":"off","metadata":{"timestamp":"*"}},"optional":true,"metadata":{"type":"string"}}}}}`)
	match(t, r.last(devTopic+"/twin/update/delta"),
		`{"event_id":"*","timestamp":"*","twin":{"switch":{"expected":{"value":"on","metadata":{"timestamp":"*"}},"actual":{"value":"off","metadata":{"timestamp":"*"}},"optional":true,"metadata":{"type":"string"}}},"delta":{"switch":"on"}}`)
	syncs := r.waitCloud("device/"+dev+"/twin/edge_updated", 2)
	match(t, string(syncs[1].Content), `{"event_id":"*","timestamp":"*","twin":{
		"temperature":{"actual":{"value":"24","metadata":{"timestamp":"*"}},"optional":true,"metadata":{"type":"float"},"actual_version":{"cloud":0,"edge":2}},
		"switch":{"expected":{"value":"on","metadata":{"timestamp":"*"}},"actual":{"value":"off","metadata":{"timestamp":"*"}},"optional":true,"metadata":{"type":"string"},
		          "expected_version":{"cloud":0,"edge":1},"actual_version":{"cloud":0,"edge":1}}}}`)

	// twin/get returns what is stored.
	r.mqtt(devTopic+"/twin/get", `{"event_id":"g1","timestamp":1}`)
	match(t, r.last(devTopic+"/twin/get/result"), `{"event_id":"g1","timestamp":"*","twin":{
		"temperature":{"actual":{"value":"24","metadata":{"timestamp":"*"}},"optional":true,"metadata":{"type":"float"}},
		"switch":{"expected":{"value":"on","metadata":{"timestamp":"*"}},"actual":{"value":"off","metadata":{"timestamp":"*"}},"optional":true,"metadata":{"type":"string"}}}}`)

	// null deletes an optional twin.
	r.mqtt(devTopic+"/twin/update", `{"event_id":"e9","timestamp":1,"twin":{"temperature":null}}`)
	match(t, r.last(devTopic+"/twin/update/result"), `{"event_id":"e9","timestamp":"*","twin":{"temperature":null}}`)
	match(t, r.last(devTopic+"/twin/update/document"),
		`{"event_id":"e9","timestamp":"*","twin":{"temperature":{"last":{"actual":{"value":"24","metadata":{"timestamp":"*"}},"optional":true,"metadata":{"type":"float"}},"current":null}}}`)
	r.mqtt(devTopic+"/twin/get", `{"event_id":"g2","timestamp":1}`)
	match(t, r.last(devTopic+"/twin/get/result"), `{"event_id":"g2","timestamp":"*","twin":{
		"switch":{"expected":{"value":"on","metadata":{"timestamp":"*"}},"actual":{"value":"off","metadata":{"timestamp":"*"}},"optional":true,"metadata":{"type":"string"}}}}`)
	syncs = r.waitCloud("device/"+dev+"/twin/edge_updated", 3)
	var last twinwire.TwinUpdate
	if err := json.Unmarshal(syncs[len(syncs)-1].Content, &last); err != nil {
		t.Fatal(err)
	}
	if tw := last.Twin["temperature"]; tw == nil || tw.Metadata.Type != "deleted" || tw.ActualVersion.Edge != 3 {
		t.Fatalf("deletion synced as %+v", tw)
	}
}

func TestTwinUpdateErrors(t *testing.T) {
	r := newRig(t, "")
	r.addDevice(dev, "thermo-1")
	emptyTopic := "$hw/events/device//twin/update/result"
	tests := []struct {
		name    string
		device  string
		payload string
		topic   string
		eventID string
		code    float64
	}{
		{"not JSON", dev, `{"event_id":"x1",`, emptyTopic, "", 400},
		{"no twin", dev, `{"event_id":"x2","timestamp":1}`, emptyTopic, "", 400},
		{"space in key", dev, `{"event_id":"x3","twin":{"a b":{"actual":{"value":"1"}}}}`, emptyTopic, "", 400},
		{"key too long", dev, `{"event_id":"x4","twin":{"` + strings.Repeat("k", 129) + `":{"actual":{"value":"1"}}}}`, emptyTopic, "", 400},
		{"value too long", dev, `{"event_id":"x5","twin":{"k":{"actual":{"value":"` + strings.Repeat("v", 513) + `"}}}}`, emptyTopic, "", 400},
		{"brace in value", dev, `{"event_id":"x6","twin":{"k":{"expected":{"value":"{x}"}}}}`, emptyTopic, "", 400},
		{"not a float", dev, `{"event_id":"x7","twin":{"k":{"actual":{"value":"warm"},"metadata":{"type":"float"}}}}`, devTopic + "/twin/update/result", "x7", 400},
		{"unknown type", dev, `{"event_id":"x8","twin":{"k":{"actual":{"value":"1"},"metadata":{"type":"double"}}}}`, devTopic + "/twin/update/result", "x8", 400},
		{"not a boolean", dev, `{"event_id":"x9","twin":{"k":{"actual":{"value":"True"},"metadata":{"type":"boolean"}}}}`, devTopic + "/twin/update/result", "x9", 400},
		{"unknown device", "default/nope", `{"event_id":"x10","twin":{"k":{"actual":{"value":"1"}}}}`, "$hw/events/device/default/nope/twin/update/result", "x10", 404},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(r.published(tt.topic))
			r.mqtt("$hw/events/device/"+tt.device+"/twin/update", tt.payload)
			got := r.published(tt.topic)
			if len(got) != before+1 {
				t.Fatalf("no error result on %s", tt.topic)
			}
			var res map[string]any
			if err := json.Unmarshal([]byte(got[len(got)-1]), &res); err != nil {
				t.Fatal(err)
			}
			reason, _ := res["reason"].(string)
			if res["event_id"] != tt.eventID || res["code"] != tt.code || reason == "" || res["timestamp"] == nil || len(res) != 4 {
				t.Fatalf("error result %v", res)
			}
		})
	}
	// Nothing of the refused updates was stored or synced.
	r.mqtt(devTopic+"/twin/get", `{"event_id":"g"}`)
	match(t, r.last(devTopic+"/twin/get/result"), `{"event_id":"g","timestamp":"*","twin":{}}`)
	if n := len(r.toCloud("device/" + dev + "/twin/edge_updated")); n != 0 {
		t.Fatalf("%d syncs after refused updates", n)
	}
	// A whole update is refused when one key is bad.
	r.mqtt(devTopic+"/twin/update", `{"event_id":"y","twin":{"good":{"actual":{"value":"1"},"metadata":{"type":"int"}},"bad":{"actual":{"value":"x"},"metadata":{"type":"int"}}}}`)
	r.mqtt(devTopic+"/twin/get", `{"event_id":"g3"}`)
	match(t, r.last(devTopic+"/twin/get/result"), `{"event_id":"g3","timestamp":"*","twin":{}}`)
}

func TestTwinGetErrors(t *testing.T) {
	r := newRig(t, "")
	r.mqtt("$hw/events/device/default/nope/twin/get", `{"event_id":"g1"}`)
	match(t, r.last("$hw/events/device/default/nope/twin/get/result"), `{"event_id":"g1","timestamp":"*","code":404,"reason":"*"}`)
	r.mqtt("$hw/events/device/default/nope/twin/get", `not json`)
	match(t, r.last("$hw/events/device/default/nope/twin/get/result"), `{"event_id":"","timestamp":"*","code":400,"reason":"*"}`)
}

func TestValidationRules(t *testing.T) {
	tests := []struct {
		name      string
		key, typ  string
		value     string
		keyOK     bool
		valueOK   bool
		typedOK   bool
		checkType bool
	}{
		{"plain", "temperature", "string", "23.5", true, true, true, true},
		{"all allowed chars", "A-z_0.9,:/@#", "string", "a-Z_0.9,:/@#", true, true, true, true},
		{"128-byte key", strings.Repeat("k", 128), "string", "v", true, true, true, true},
		{"129-byte key", strings.Repeat("k", 129), "string", "v", false, true, true, true},
		{"empty key", "", "string", "v", false, true, true, true},
		{"space in key", "a b", "string", "v", false, true, true, true},
		{"plus in key", "a+b", "string", "v", false, true, true, true},
		{"quote in key", `a"b`, "string", "v", false, true, true, true},
		{"unicode key", "tempé", "string", "v", false, true, true, true},
		{"512-byte value", "k", "string", strings.Repeat("v", 512), true, true, true, true},
		{"513-byte value", "k", "string", strings.Repeat("v", 513), true, false, true, false},
		{"empty value", "k", "int", "", true, true, true, true},
		{"brace in value", "k", "string", "{}", true, false, true, false},
		{"space in value", "k", "string", "a b", true, false, true, false},
		{"int", "k", "int", "-42", true, true, true, true},
		{"integer", "k", "integer", "9223372036854775807", true, true, true, true},
		{"int overflow", "k", "int", "9223372036854775808", true, true, false, true},
		{"int not float", "k", "int", "1.5", true, true, false, true},
		{"float", "k", "float", "1.5e3", true, true, true, true},
		{"float word", "k", "float", "warm", true, true, false, true},
		{"boolean", "k", "boolean", "false", true, true, true, true},
		{"boolean case", "k", "boolean", "TRUE", true, true, false, true},
		{"double rejected", "k", "double", "1.5", true, true, false, true},
		{"bytes rejected", "k", "bytes", "AA", true, true, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := validateKey(tt.key); (err == nil) != tt.keyOK {
				t.Errorf("validateKey(%q) = %v", tt.key, err)
			}
			if err := validateValue("k", tt.value); (err == nil) != tt.valueOK {
				t.Errorf("validateValue(%q) = %v", tt.value, err)
			}
			if tt.checkType {
				if err := validateTyped("k", tt.typ, tt.value); (err == nil) != tt.typedOK {
					t.Errorf("validateTyped(%s, %q) = %v", tt.typ, tt.value, err)
				}
			}
		})
	}
}

func TestStateUpdate(t *testing.T) {
	r := newRig(t, "")
	r.addDevice(dev, "thermo-1")
	r.mqtt(devTopic+"/state/update", `{"event_id":"","timestamp":1,"state":"Online"}`)
	got := r.last(devTopic + "/state/update/result")
	match(t, got, `{"event_id":"*","timestamp":"*","device":{"name":"thermo-1","state":"Online","lastOnlineTime":"*"}}`)
	var res twinwire.StateResult
	_ = json.Unmarshal([]byte(got), &res)
	if _, err := time.Parse(time.RFC3339, res.Device.LastOnline); err != nil || !strings.HasSuffix(res.Device.LastOnline, "Z") {
		t.Fatalf("lastOnlineTime %q: %v", res.Device.LastOnline, err)
	}
	sync := r.waitCloud("device/"+dev+"/state/update", 1)[0]
	if rt := sync.Router; rt.Source != "twin" || rt.Group != "resource" || rt.Operation != "update" {
		t.Fatalf("state sync route %+v", rt)
	}
	var content string
	if err := json.Unmarshal(sync.Content, &content); err != nil {
		t.Fatalf("state sync content is not a string: %s", sync.Content)
	}
	if content != got {
		t.Fatalf("state sync content %s, want the result %s", content, got)
	}

	r.mqtt(devTopic+"/state/update", `{"event_id":"","timestamp":2,"state":"offline"}`)
	match(t, r.last(devTopic+"/state/update/result"), `{"event_id":"*","timestamp":"*","device":{"name":"thermo-1","state":"offline"}}`)
	n := len(r.published(devTopic + "/state/update/result"))
	r.mqtt(devTopic+"/state/update", `{"event_id":"","timestamp":3,"state":"sleepy"}`)
	if len(r.published(devTopic+"/state/update/result")) != n {
		t.Fatal("an unknown state was answered")
	}
	r.mqtt(devTopic+"/state/update", `{"state":"online"`)
	r.mqtt("$hw/events/device/default/nope/state/update", `{"state":"online"}`)

	r.mqtt("$hw/events/node/"+testNode+"/membership/get", `{"event_id":"g"}`)
	match(t, r.last("$hw/events/node/"+testNode+"/membership/get/result"),
		`{"event_id":"g","timestamp":"*","devices":[{"id":"default/thermo-1","name":"thermo-1","state":"offline"}]}`)
}
