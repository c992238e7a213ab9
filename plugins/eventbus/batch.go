package eventbus

import (
	"context"
	"errors"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgehive/edgehive/sdk"
)

var _ sdk.BatchHandler = (*EventBus)(nil)

// HandleBatch handles the messages that piled up while the previous batch
// ran. Publishes (not sync) are all queued in the MQTT client first and then
// waited for together, so a batch costs about one broker round trip; other
// messages go through Handle, after the publishes before them are done, so
// order is kept. HandleBatch returns, and the runtime acknowledges, only once
// every publish was taken by the broker (QoS 1, 2) or written (QoS 0).
func (b *EventBus) HandleBatch(ctx context.Context, msgs []*sdk.Message) []error {
	errs := make([]error, len(msgs))
	if b.ctx == nil {
		for i, m := range msgs {
			errs[i] = b.Handle(ctx, m)
		}
		return errs
	}
	ctx, cancel := context.WithTimeout(ctx, publishTimeout)
	defer cancel()
	type started struct {
		idx   int
		topic string
		tok   paho.Token
	}
	var inFlight []started
	wait := func() {
		for _, s := range inFlight {
			errs[s.idx] = b.finishPublish(ctx, s.topic, s.tok)
			if errs[s.idx] != nil {
				b.logger.Warn("publish failed", "msg_id", msgs[s.idx].Header.ID, "topic", printable(s.topic), "error", errs[s.idx])
			}
		}
		inFlight = inFlight[:0]
	}
	for i, msg := range msgs {
		if msg.Router.Operation != sdk.OpPublish || msg.Header.Sync {
			wait()
			errs[i] = b.Handle(ctx, msg)
			continue
		}
		payload, err := contentPayload(msg.Content)
		var tok paho.Token
		if err == nil {
			tok, err = b.startPublish(ctx, msg.Router.Resource, payload)
		}
		if err != nil {
			if errors.Is(err, errRefused) {
				b.refuse("message", err, "msg_id", msg.Header.ID, "source", msg.Router.Source,
					"operation", msg.Router.Operation, "resource", printable(msg.Router.Resource))
			}
			errs[i] = err
			continue
		}
		inFlight = append(inFlight, started{idx: i, topic: msg.Router.Resource, tok: tok})
	}
	wait()
	return errs
}

// maxForwardBatch bounds the MQTT messages handed on in one SendBatch.
const maxForwardBatch = 256

// forwardBatch hands a run of queued MQTT messages on with one SendBatch per
// destination run, then acknowledges them to the broker in order. Messages
// the host did not take are sent again one by one with back-off (send). It
// returns false when the module stops first; what is left is not
// acknowledged, so the broker delivers it again.
func (b *EventBus) forwardBatch(items []*inbound) bool {
	for start := 0; start < len(items); {
		end := start + 1
		for end < len(items) && items[end].module == items[start].module {
			end++
		}
		run := items[start:end]
		msgs := make([]*sdk.Message, len(run))
		for i, it := range run {
			msgs[i] = it.msg
		}
		ctx, cancel := context.WithTimeout(b.ctx, sendTimeout)
		err := b.host.SendBatch(ctx, run[0].module, msgs)
		cancel()
		var be *sdk.BatchError
		hasPerMessage := errors.As(err, &be) && len(be.Errs) == len(run)
		for i, it := range run {
			if err == nil || (hasPerMessage && be.Errs[i] == nil) {
				b.stats.forwarded.Add(1)
				it.ack()
				continue
			}
			if b.ctx.Err() != nil || !b.send(it) {
				return false
			}
			it.ack()
		}
		start = end
	}
	return true
}
