package devicecontroller

import (
	"encoding/json"
	"testing"

	"github.com/edgehive/edgehive/internal/twinwire"
	"github.com/edgehive/edgehive/sdk"
)

// FuzzReport feeds arbitrary resources and contents through what the
// status writer does with a node's report: nothing may panic, and the
// merged twins name only the device's properties.
func FuzzReport(f *testing.F) {
	f.Add("device/default/t1/twin/edge_updated", `{"event_id":"e","twin":{"temperature":{"actual":{"value":"1"},"metadata":{"type":"float"}}}}`)
	f.Add("device/default/t1/twin/edge_updated", `{"twin":{"temperature":null,"setpoint":{"metadata":{"type":"deleted"}}}}`)
	f.Add("device/default/t1/state/update", `"{\"device\":{\"state\":\"online\"}}"`)
	f.Add("device//twin/edge_updated", `[]`)
	f.Fuzz(func(t *testing.T, resource, content string) {
		msg := sdk.NewMessage("").BuildRouter("twin", "resource", resource, "update")
		msg.Content = json.RawMessage(content)
		if ns, name, ok := deviceResource(resource, edgeUpdated); ok {
			if ns == "" || name == "" {
				t.Fatalf("empty namespace or name from %q", resource)
			}
			var u twinwire.TwinUpdate
			if msg.DecodeContent(&u) != nil {
				return
			}
			d := &device{}
			d.Spec.Properties = []deviceProperty{{Name: "temperature"}, {Name: "setpoint"}}
			d.Status.Twins = []statusTwin{{PropertyName: "setpoint", Reported: &twinProperty{Value: "2"}}}
			list, _ := mergeTwins(d, u.Twin)
			for _, tw := range list {
				if tw.PropertyName != "temperature" && tw.PropertyName != "setpoint" {
					t.Fatalf("status twin for %q, not a property", tw.PropertyName)
				}
			}
		}
		var s twinwire.StateResult
		_ = msg.DecodeContent(&s)
	})
}
