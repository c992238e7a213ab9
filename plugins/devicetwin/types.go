package devicetwin

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
)

// The JSON shapes KubeEdge's devicetwin exchanges with mappers (MQTT) and the cloud.

// valueMeta is a value's metadata: when the edge took it.
type valueMeta struct {
	Timestamp int64 `json:"timestamp"`
}

// twinValue is an expected or actual value.
type twinValue struct {
	Value    *string    `json:"value,omitempty"`
	Metadata *valueMeta `json:"metadata,omitempty"`
}

// typeMeta is a twin's or attribute's type.
type typeMeta struct {
	Type string `json:"type,omitempty"`
}

// twinVersion is a value's version pair.
type twinVersion struct {
	Cloud int64 `json:"cloud"`
	Edge  int64 `json:"edge"`
}

// msgTwin is one twin entry. Versions are left out toward mappers.
type msgTwin struct {
	Expected        *twinValue   `json:"expected,omitempty"`
	Actual          *twinValue   `json:"actual,omitempty"`
	Optional        *bool        `json:"optional,omitempty"`
	Metadata        *typeMeta    `json:"metadata,omitempty"`
	ExpectedVersion *twinVersion `json:"expected_version,omitempty"`
	ActualVersion   *twinVersion `json:"actual_version,omitempty"`
}

// baseMessage starts every payload.
type baseMessage struct {
	EventID   string `json:"event_id"`
	Timestamp int64  `json:"timestamp"`
}

// newBase answers a request: its event_id, the edge's time.
func newBase(eventID string) baseMessage { return baseMessage{EventID: eventID, Timestamp: nowMS()} }

// newEvent starts a message the edge sends on its own: a fresh event_id.
func newEvent() baseMessage { return newBase(uuid.NewString()) }

// twinUpdate is a twin update (mapper → edge), a twin update result and a
// get result (edge → mapper), and an edge_updated / cloud_updated content.
type twinUpdate struct {
	baseMessage
	Twin map[string]*msgTwin `json:"twin"`
}

// twinDelta tells the mapper the desired values it has not reached.
type twinDelta struct {
	baseMessage
	Twin  map[string]*msgTwin `json:"twin"`
	Delta map[string]string   `json:"delta"`
}

// twinDoc is the state of one twin before and after a change.
type twinDoc struct {
	Last    *msgTwin `json:"last"`
	Current *msgTwin `json:"current"`
}

type twinDocument struct {
	baseMessage
	Twin map[string]*twinDoc `json:"twin"`
}

// errorResult answers a request that failed.
type errorResult struct {
	baseMessage
	Code   int    `json:"code"`
	Reason string `json:"reason"`
}

// stateUpdate is a device state report from a mapper.
type stateUpdate struct {
	baseMessage
	State string `json:"state"`
}

type deviceState struct {
	Name       string `json:"name,omitempty"`
	State      string `json:"state,omitempty"`
	LastOnline string `json:"lastOnlineTime,omitempty"`
}

type stateResult struct {
	baseMessage
	Device deviceState `json:"device"`
}

// msgAttr is a device attribute.
type msgAttr struct {
	Value    string    `json:"value"`
	Optional *bool     `json:"optional,omitempty"`
	Metadata *typeMeta `json:"metadata,omitempty"`
}

// device is a device in membership messages.
type device struct {
	ID          string              `json:"id,omitempty"`
	Name        string              `json:"name,omitempty"`
	Description string              `json:"description,omitempty"`
	State       string              `json:"state,omitempty"`
	LastOnline  string              `json:"last_online,omitempty"`
	Attributes  map[string]*msgAttr `json:"attributes,omitempty"`
	Twin        map[string]*msgTwin `json:"twin,omitempty"`
}

// membershipUpdate comes from the cloud and goes to mappers, one device a message.
type membershipUpdate struct {
	baseMessage
	AddDevices    []device `json:"added_devices"`
	RemoveDevices []device `json:"removed_devices"`
}

type membershipGetResult struct {
	baseMessage
	Devices []device `json:"devices"`
}

// membershipDetail asks the cloud for this node's devices.
type membershipDetail struct {
	EventType string `json:"event_type"`
	EventID   string `json:"event_id"`
	GroupID   string `json:"group_id"`
	Operation string `json:"operation"`
	Timestamp int64  `json:"timestamp"`
}

func nowMS() int64 { return time.Now().UnixMilli() }

// Validation of mapper updates, as KubeEdge does it.
const (
	maxKeyLen   = 128
	maxValueLen = 512
)

// Twin types a value may have; "integer" is the same as "int".
const (
	typeString  = "string"
	typeInt     = "int"
	typeInteger = "integer"
	typeFloat   = "float"
	typeBoolean = "boolean"
	typeDeleted = "deleted"
)

func allowedChar(r rune) bool {
	switch {
	case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
		return true
	}
	return strings.ContainsRune("-_.,:/@#", r)
}

func allowedText(s string) bool {
	for _, r := range s {
		if !allowedChar(r) {
			return false
		}
	}
	return true
}

// validateKey checks a twin name: 1..128 characters from A-Z a-z 0-9 - _ . , : / @ #.
func validateKey(key string) error {
	if key == "" || len(key) > maxKeyLen {
		return fmt.Errorf("the key %q must be 1 to %d characters long", truncate(key), maxKeyLen)
	}
	if !allowedText(key) {
		return fmt.Errorf("the key %q may only contain A-Z a-z 0-9 - _ . , : / @ #", truncate(key))
	}
	return nil
}

// validateValue checks a value's characters: empty, or at most 512 characters
// from the key's set.
func validateValue(key, value string) error {
	if len(value) > maxValueLen {
		return fmt.Errorf("the value of key %s is longer than %d characters", key, maxValueLen)
	}
	if !allowedText(value) {
		return fmt.Errorf("the value of key %s may only contain A-Z a-z 0-9 - _ . , : / @ #", key)
	}
	return nil
}

// validType reports whether t is a type a twin may have.
func validType(t string) bool {
	switch t {
	case typeString, typeInt, typeInteger, typeFloat, typeBoolean:
		return true
	}
	return false
}

// validateTyped checks that value parses as type t. An empty value is allowed
// for every type: it means no value.
func validateTyped(key, t, value string) error {
	if !validType(t) {
		return fmt.Errorf("the type %q of key %s is not one of string, int, integer, float, boolean", t, key)
	}
	if value == "" {
		return nil
	}
	var err error
	switch t {
	case typeInt, typeInteger:
		_, err = strconv.ParseInt(value, 10, 64)
	case typeFloat:
		_, err = strconv.ParseFloat(value, 64)
	case typeBoolean:
		if value != "true" && value != "false" {
			err = errors.New("want true or false")
		}
	}
	if err != nil {
		return fmt.Errorf("the value %q of key %s is not a valid %s", value, key, t)
	}
	return nil
}

// validateUpdate applies the checks KubeEdge runs while it parses a mapper's
// update: the twin map must be there, every key and value well-formed.
func validateUpdate(u *twinUpdate) error {
	if u.Twin == nil {
		return errors.New("update twin error, key:twin does not exist")
	}
	for key, t := range u.Twin {
		if err := validateKey(key); err != nil {
			return err
		}
		if t == nil {
			continue
		}
		for _, v := range []*twinValue{t.Expected, t.Actual} {
			if v != nil && v.Value != nil {
				if err := validateValue(key, *v.Value); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

func truncate(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}
