package eventbus

import (
	"context"
	"errors"
	"strings"
	"time"
	"unicode/utf8"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgehive/edgehive/sdk"
)

// inbound is an MQTT message on its way to another module.
type inbound struct {
	module string
	msg    *sdk.Message
	ack    func() // acknowledges the MQTT message to the broker
	seq    int64  // its row in the journal (internal mode, QoS > 0)
}

// onMessage is paho's handler for every MQTT message. It checks the message,
// turns it into a module message and queues it; it waits for room in the
// queue at most enqueueTimeout so that paho's router is not held up for long.
// The MQTT message is acknowledged only once it was handed on (or refused).
func (b *EventBus) onMessage(_ paho.Client, m paho.Message) {
	b.stats.received.Add(1)
	topic, payload := m.Topic(), m.Payload()
	if !b.subscribedTo(topic) {
		// A persistent session can still carry a topic the cloud removed
		// while we were disconnected.
		b.logger.Debug("ignoring a message on a topic no longer subscribed", "topic", topic)
		m.Ack()
		return
	}
	item, err := b.inboundFor(topic, payload)
	if err != nil {
		b.refuse("MQTT message", err, "topic", printable(topic), "bytes", len(payload))
		m.Ack()
		return
	}
	item.ack = m.Ack
	timer := time.NewTimer(enqueueTimeout)
	defer timer.Stop()
	select {
	case b.queue <- item:
	case <-b.ctx.Done(): // not acknowledged: the broker delivers it again
	case <-timer.C:
		// Not acknowledged either: a persistent session redelivers it after
		// the next reconnection.
		b.drop()
		b.logger.Error("dropping an MQTT message: the queue to the other modules is full", "topic", topic, "queue", cap(b.queue))
	}
}

// inboundFor validates an MQTT message and builds the module message.
func (b *EventBus) inboundFor(topic string, payload []byte) (*inbound, error) {
	if err := checkTopicText(topic); err != nil {
		return nil, err
	}
	if len(payload) > b.cfg.MaxPayloadBytes {
		return nil, refusef("payload is %d bytes, max_payload_bytes is %d", len(payload), b.cfg.MaxPayloadBytes)
	}
	if !utf8.Valid(payload) {
		return nil, refusef("payload is not valid UTF-8")
	}
	item := &inbound{msg: sdk.NewMessage("")}
	if toTwin(topic) {
		item.module = twinModule
		item.msg.BuildRouter(sourceToTwin, sdk.GroupUser, topic, sdk.OpPublish)
	} else {
		item.module = cloudModule
		item.msg.BuildRouter(sourceToCloud, sdk.GroupUser, topic, sdk.OpUpload)
	}
	if err := item.msg.FillBody(string(payload)); err != nil {
		return nil, refusef("%v", err)
	}
	return item, nil
}

// subscribedTo reports whether topic matches one of the current filters.
func (b *EventBus) subscribedTo(topic string) bool {
	for _, f := range fixedTopics {
		if matchTopic(f, topic) {
			return true
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for f := range b.dynamic {
		if matchTopic(f, topic) {
			return true
		}
	}
	return false
}

// forward hands queued messages on, in order and in batches, until Stop.
func (b *EventBus) forward() {
	defer close(b.done)
	for {
		select {
		case <-b.ctx.Done():
			return
		case item := <-b.queue:
			// Take what else is waiting: a batch is only what piled up
			// while the previous one was handed on.
			batch := []*inbound{item}
		more:
			for len(batch) < maxForwardBatch {
				select {
				case it := <-b.queue:
					batch = append(batch, it)
				default:
					break more
				}
			}
			if !b.forwardBatch(batch) {
				return
			}
		}
	}
}

// send calls Send until it succeeds, with back-off between attempts. It
// returns false only when the module stops first (the message stays
// unacknowledged); a message that cannot be handed on is dropped, counted,
// and acknowledged by returning true.
func (b *EventBus) send(item *inbound) bool {
	delay := sendBackoff
	for attempt := 1; ; attempt++ {
		ctx, cancel := context.WithTimeout(b.ctx, sendTimeout)
		err := b.host.Send(ctx, item.module, item.msg)
		cancel()
		if err == nil {
			b.stats.forwarded.Add(1)
			return true
		}
		if b.ctx.Err() != nil {
			return false
		}
		permanent := errors.Is(err, sdk.ErrTooLarge) || errors.Is(err, sdk.ErrInvalidMessage)
		if permanent || attempt >= sendAttempts {
			b.drop()
			b.logger.Error("dropping an MQTT message: it could not be handed on", "to", item.module,
				"topic", item.msg.Router.Resource, "msg_id", item.msg.Header.ID, "attempts", attempt, "error", err)
			return true
		}
		b.logger.Warn("handing on an MQTT message failed; retrying", "to", item.module,
			"topic", item.msg.Router.Resource, "attempt", attempt, "retry_in", delay, "error", err)
		select {
		case <-b.ctx.Done():
			return false
		case <-time.After(delay):
		}
		delay = min(delay*2, sendMaxBackoff)
	}
}

// refuse logs and counts bad input.
func (b *EventBus) refuse(what string, err error, kv ...any) {
	b.stats.refused.Add(1)
	b.logger.Warn("refused "+what, append([]any{"reason", err.Error()}, kv...)...)
}

// printable quotes a string for a log line, whatever bytes it holds.
func printable(s string) string {
	if len(s) > 256 {
		s = s[:256] + "..."
	}
	if utf8.ValidString(s) {
		return s
	}
	return "(invalid UTF-8) " + strings.ToValidUTF8(s, "\uFFFD")
}
