package devicecontroller

import (
	"strings"

	"github.com/edgehive/edgehive/sdk"
)

// Routes of what the controller sends and receives; the JSON shapes are in
// internal/twinwire, shared with plugins/devicetwin
// (../../shared/reference/kubeedge-wire.md §9.3).
const (
	moduleName     = "devicecontroller" // route.source of what it sends
	resMembership  = "membership"
	resTwinConfirm = "twin"
	devicePrefix   = "device/"
	cloudUpdated   = "/twin/cloud_updated"
	edgeUpdated    = "/twin/edge_updated"
	stateUpdated   = "/state/update"
	typeDeleted    = "deleted"
	edgeTypeString = "string"
)

// edgeType is the twin type the edge understands for a DeviceModel
// property type.
func edgeType(modelType string) string {
	switch strings.ToUpper(modelType) {
	case "INT":
		return "int"
	case "FLOAT", "DOUBLE":
		return "float"
	case "BOOLEAN":
		return "boolean"
	}
	return edgeTypeString
}

// newMessage is a message of the controller to a node, group twin.
func newMessage(op, resource string, content any) (*sdk.Message, error) {
	m := sdk.NewMessage("").BuildRouter(moduleName, sdk.WireGroupTwin, resource, op)
	if err := m.FillBody(content); err != nil {
		return nil, err
	}
	return m, nil
}

// deviceResource splits "device/<ns>/<name>/<suffix>" into the device's
// namespace and name; ok is false for anything else.
func deviceResource(resource, suffix string) (ns, name string, ok bool) {
	if !strings.HasPrefix(resource, devicePrefix) || !strings.HasSuffix(resource, suffix) {
		return "", "", false
	}
	id := strings.TrimSuffix(strings.TrimPrefix(resource, devicePrefix), suffix)
	ns, name, ok = strings.Cut(id, "/")
	if !ok || ns == "" || name == "" || strings.Contains(name, "/") {
		return "", "", false
	}
	return ns, name, true
}
