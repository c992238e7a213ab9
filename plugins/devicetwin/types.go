package devicetwin

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/edgehive/edgehive/internal/twinwire"
)

// The JSON shapes KubeEdge's devicetwin exchanges with mappers (MQTT) and
// the cloud are in internal/twinwire, shared with cloud/devicecontroller.

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
func validateUpdate(u *twinwire.TwinUpdate) error {
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
		for _, v := range []*twinwire.TwinValue{t.Expected, t.Actual} {
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

func nowMS() int64 { return time.Now().UnixMilli() }
