// Package twinwire is the JSON of KubeEdge's device twin protocol, shared by
// the edge's devicetwin plugin (which speaks it with mappers over MQTT and
// with the cloud) and cloudhive's devicecontroller (the cloud's side): see
// shared/reference/kubeedge-wire.md §9.
package twinwire

import (
	"time"

	"github.com/google/uuid"
)

// BaseMessage starts every payload.
type BaseMessage struct {
	EventID   string `json:"event_id"`
	Timestamp int64  `json:"timestamp"`
}

// NewBase answers a request: its event_id, the sender's time.
func NewBase(eventID string) BaseMessage {
	return BaseMessage{EventID: eventID, Timestamp: time.Now().UnixMilli()}
}

// NewEvent starts a message sent on the sender's own account: a fresh event_id.
func NewEvent() BaseMessage { return NewBase(uuid.NewString()) }

// ValueMeta is a value's metadata: when the edge took it.
type ValueMeta struct {
	Timestamp int64 `json:"timestamp"`
}

// TwinValue is an expected or actual value.
type TwinValue struct {
	Value    *string    `json:"value,omitempty"`
	Metadata *ValueMeta `json:"metadata,omitempty"`
}

// TypeMeta is a twin's or attribute's type.
type TypeMeta struct {
	Type string `json:"type,omitempty"`
}

// TwinVersion is a value's version pair.
type TwinVersion struct {
	Cloud int64 `json:"cloud"`
	Edge  int64 `json:"edge"`
}

// Twin is one twin entry. Versions are left out toward mappers.
type Twin struct {
	Expected        *TwinValue   `json:"expected,omitempty"`
	Actual          *TwinValue   `json:"actual,omitempty"`
	Optional        *bool        `json:"optional,omitempty"`
	Metadata        *TypeMeta    `json:"metadata,omitempty"`
	ExpectedVersion *TwinVersion `json:"expected_version,omitempty"`
	ActualVersion   *TwinVersion `json:"actual_version,omitempty"`
}

// TwinUpdate is a twin update (mapper → edge), a twin update result and a
// get result (edge → mapper), and an edge_updated / cloud_updated content.
type TwinUpdate struct {
	BaseMessage
	Twin map[string]*Twin `json:"twin"`
}

// TwinDelta tells the mapper the desired values it has not reached.
type TwinDelta struct {
	BaseMessage
	Twin  map[string]*Twin  `json:"twin"`
	Delta map[string]string `json:"delta"`
}

// TwinDoc is the state of one twin before and after a change.
type TwinDoc struct {
	Last    *Twin `json:"last"`
	Current *Twin `json:"current"`
}

// TwinDocument is the update/document message: every changed twin's TwinDoc.
type TwinDocument struct {
	BaseMessage
	Twin map[string]*TwinDoc `json:"twin"`
}

// ErrorResult answers a request that failed.
type ErrorResult struct {
	BaseMessage
	Code   int    `json:"code"`
	Reason string `json:"reason"`
}

// StateUpdate is a device state report from a mapper.
type StateUpdate struct {
	BaseMessage
	State string `json:"state"`
}

// DeviceState is a device's state as the edge reports it.
type DeviceState struct {
	Name       string `json:"name,omitempty"`
	State      string `json:"state,omitempty"`
	LastOnline string `json:"lastOnlineTime,omitempty"`
}

// StateResult is a state update result (edge → mapper) and a state/update
// content (edge → cloud).
type StateResult struct {
	BaseMessage
	Device DeviceState `json:"device"`
}

// Attr is a device attribute.
type Attr struct {
	Value    string    `json:"value"`
	Optional *bool     `json:"optional,omitempty"`
	Metadata *TypeMeta `json:"metadata,omitempty"`
}

// Device is a device in membership messages.
type Device struct {
	ID          string           `json:"id,omitempty"`
	Name        string           `json:"name,omitempty"`
	Description string           `json:"description,omitempty"`
	State       string           `json:"state,omitempty"`
	LastOnline  string           `json:"last_online,omitempty"`
	Attributes  map[string]*Attr `json:"attributes,omitempty"`
	Twin        map[string]*Twin `json:"twin,omitempty"`
}

// MembershipUpdate comes from the cloud and goes on to mappers, one device
// a message.
type MembershipUpdate struct {
	BaseMessage
	AddDevices    []Device `json:"added_devices"`
	RemoveDevices []Device `json:"removed_devices"`
}

// MembershipGetResult answers a mapper's membership/get.
type MembershipGetResult struct {
	BaseMessage
	Devices []Device `json:"devices"`
}

// MembershipDetail asks the cloud for a node's devices.
type MembershipDetail struct {
	EventType string `json:"event_type"`
	EventID   string `json:"event_id"`
	GroupID   string `json:"group_id"`
	Operation string `json:"operation"`
	Timestamp int64  `json:"timestamp"`
}
