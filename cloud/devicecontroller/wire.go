package devicecontroller

import (
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/edgehive/edgehive/sdk"
)

// What the controller sends and receives, in KubeEdge's devicetwin JSON
// (../../shared/reference/kubeedge-wire.md §9.3; plugins/devicetwin reads it).
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

type baseMessage struct {
	EventID   string `json:"event_id"`
	Timestamp int64  `json:"timestamp"`
}

func newBase() baseMessage {
	return baseMessage{EventID: uuid.NewString(), Timestamp: time.Now().UnixMilli()}
}

type valueMeta struct {
	Timestamp int64 `json:"timestamp,omitempty"`
}

type twinValue struct {
	Value    *string    `json:"value,omitempty"`
	Metadata *valueMeta `json:"metadata,omitempty"`
}

type typeMeta struct {
	Type string `json:"type,omitempty"`
}

type twinVersion struct {
	Cloud int64 `json:"cloud"`
	Edge  int64 `json:"edge"`
}

type msgTwin struct {
	Expected        *twinValue   `json:"expected,omitempty"`
	Actual          *twinValue   `json:"actual,omitempty"`
	Optional        *bool        `json:"optional,omitempty"`
	Metadata        *typeMeta    `json:"metadata,omitempty"`
	ExpectedVersion *twinVersion `json:"expected_version,omitempty"`
	ActualVersion   *twinVersion `json:"actual_version,omitempty"`
}

type twinUpdate struct {
	baseMessage
	Twin map[string]*msgTwin `json:"twin"`
}

type memberDevice struct {
	ID          string              `json:"id,omitempty"`
	Name        string              `json:"name,omitempty"`
	Description string              `json:"description,omitempty"`
	Twin        map[string]*msgTwin `json:"twin,omitempty"`
}

type membershipUpdate struct {
	baseMessage
	AddDevices    []memberDevice `json:"added_devices"`
	RemoveDevices []memberDevice `json:"removed_devices"`
}

type stateResult struct {
	baseMessage
	Device struct {
		Name       string `json:"name"`
		State      string `json:"state"`
		LastOnline string `json:"lastOnlineTime"`
	} `json:"device"`
}

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
