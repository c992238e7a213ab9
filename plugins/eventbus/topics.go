package eventbus

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// Topics eventbus always subscribes to (KubeEdge's set).
var fixedTopics = []string{
	"$hw/events/upload/#",
	"$hw/events/device/+/+/state/update",
	"$hw/events/device/+/+/twin/+",
	"$hw/events/node/+/membership/get",
	"SYS/dis/upload_records",
	"+/user/#",
}

// Prefixes of the topics that belong to devicetwin; the rest goes to the cloud.
const (
	devicePrefix = "$hw/events/device/"
	nodePrefix   = "$hw/events/node/"
)

// maxTopicBytes is MQTT's limit on a topic's length.
const maxTopicBytes = 65535

// errRefused marks input eventbus will not handle; test with errors.Is.
var errRefused = errors.New("refused")

func refusef(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errRefused, fmt.Sprintf(format, args...))
}

// toTwin reports whether messages on topic go to devicetwin.
func toTwin(topic string) bool {
	return strings.HasPrefix(topic, devicePrefix) || strings.HasPrefix(topic, nodePrefix)
}

// checkTopicName validates a topic to publish on: non-empty, valid UTF-8, no
// NUL, no wildcards, within MQTT's length limit.
func checkTopicName(topic string) error {
	if err := checkTopicText(topic); err != nil {
		return err
	}
	if strings.ContainsAny(topic, "+#") {
		return refusef("topic %q has a wildcard; a publish needs a topic name", topic)
	}
	return nil
}

// checkTopicFilter validates a topic filter to subscribe to: the rules of
// checkTopicName, except that "+" must fill a whole level and "#" must be a
// whole last level.
func checkTopicFilter(filter string) error {
	if err := checkTopicText(filter); err != nil {
		return err
	}
	levels := strings.Split(filter, "/")
	for i, l := range levels {
		if strings.Contains(l, "+") && l != "+" {
			return refusef("topic filter %q: + must be a whole level", filter)
		}
		if strings.Contains(l, "#") && (l != "#" || i != len(levels)-1) {
			return refusef("topic filter %q: # must be the whole last level", filter)
		}
	}
	return nil
}

func checkTopicText(topic string) error {
	switch {
	case topic == "":
		return refusef("empty topic")
	case len(topic) > maxTopicBytes:
		return refusef("topic is %d bytes, MQTT allows %d", len(topic), maxTopicBytes)
	case !utf8.ValidString(topic):
		return refusef("topic %q is not valid UTF-8", topic)
	case strings.ContainsRune(topic, 0):
		return refusef("topic %q contains NUL", topic)
	}
	return nil
}

// matchTopic reports whether topic matches the MQTT filter. As MQTT says, a
// topic starting with "$" is not matched by a filter starting with a wildcard.
func matchTopic(filter, topic string) bool {
	if strings.HasPrefix(topic, "$") && (strings.HasPrefix(filter, "+") || strings.HasPrefix(filter, "#")) {
		return false
	}
	// Level by level, without splitting: this runs for every message.
	for {
		fl, frest, fmore := strings.Cut(filter, "/")
		if fl == "#" {
			return true // also matches the parent level: "a/#" matches "a"
		}
		tl, trest, tmore := strings.Cut(topic, "/")
		if fl != "+" && fl != tl {
			return false
		}
		switch {
		case !fmore && !tmore:
			return true
		case !fmore:
			return false
		case !tmore:
			return frest == "#" // "a/#" matches "a"
		}
		filter, topic = frest, trest
	}
}
