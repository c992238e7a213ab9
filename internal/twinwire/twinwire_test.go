package twinwire

import (
	"encoding/json"
	"testing"
)

// The field names are KubeEdge's: a rename here breaks mappers and the cloud.
func TestMarshal(t *testing.T) {
	v, opt := "21.5", true
	for _, tc := range []struct {
		name string
		msg  any
		want string
	}{
		{"twin update with versions",
			TwinUpdate{BaseMessage: BaseMessage{EventID: "e1", Timestamp: 7}, Twin: map[string]*Twin{"temp": {
				Actual:        &TwinValue{Value: &v, Metadata: &ValueMeta{Timestamp: 5}},
				Optional:      &opt,
				Metadata:      &TypeMeta{Type: "float"},
				ActualVersion: &TwinVersion{Cloud: 1, Edge: 2},
			}}},
			`{"event_id":"e1","timestamp":7,"twin":{"temp":{"actual":{"value":"21.5","metadata":{"timestamp":5}},"optional":true,"metadata":{"type":"float"},"actual_version":{"cloud":1,"edge":2}}}}`},
		{"membership update from the cloud leaves out what it does not set",
			MembershipUpdate{BaseMessage: BaseMessage{EventID: "e2", Timestamp: 8}, AddDevices: []Device{{ID: "default/t1", Name: "t1"}}},
			`{"event_id":"e2","timestamp":8,"added_devices":[{"id":"default/t1","name":"t1"}],"removed_devices":null}`},
		{"state result",
			StateResult{BaseMessage: BaseMessage{EventID: "e3", Timestamp: 9}, Device: DeviceState{Name: "t1", State: "online"}},
			`{"event_id":"e3","timestamp":9,"device":{"name":"t1","state":"online"}}`},
		{"error result",
			ErrorResult{BaseMessage: BaseMessage{EventID: "e4", Timestamp: 1}, Code: 404, Reason: "no such device"},
			`{"event_id":"e4","timestamp":1,"code":404,"reason":"no such device"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := json.Marshal(tc.msg)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tc.want {
				t.Errorf("got  %s\nwant %s", got, tc.want)
			}
		})
	}
}

func TestNewEventAndBase(t *testing.T) {
	a, b := NewEvent(), NewEvent()
	if a.EventID == "" || a.EventID == b.EventID {
		t.Errorf("event ids %q and %q: want fresh, distinct ids", a.EventID, b.EventID)
	}
	if r := NewBase("req-1"); r.EventID != "req-1" || r.Timestamp <= 0 {
		t.Errorf("NewBase = %+v, want the request's event_id and a timestamp", r)
	}
}
