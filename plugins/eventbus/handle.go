package eventbus

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgehive/edgehive/sdk"
)

// Handle runs one message from another module or the cloud:
//
//   - publish: publish the content on the topic named by the resource;
//   - message: publish the JSON of content.message on content.message.topic;
//   - get_result (resource auth_info): publish the content on the node's
//     authInfo result topic;
//   - subscribe / unsubscribe: add or remove the resource as a topic filter,
//     kept in SQLite.
//
// Handle returns once the work is done (published, or stored and
// subscribed), so the host acknowledges the message only then. Bad input is
// logged, counted and returned as an error wrapping errRefused. A sync
// request is answered "OK" or with an error message.
func (b *EventBus) Handle(ctx context.Context, msg *sdk.Message) error {
	if b.ctx == nil {
		return fmt.Errorf("%s: message %s arrived before Start", Name, msg.Header.ID)
	}
	if msg.Router.Operation == sdk.OpResponse || msg.Router.Operation == sdk.OpError {
		b.logger.Debug("ignoring an answer", "msg", msg.String())
		return nil
	}
	err := b.handle(ctx, msg)
	if errors.Is(err, errRefused) {
		b.refuse("message", err, "msg_id", msg.Header.ID, "source", msg.Router.Source,
			"operation", msg.Router.Operation, "resource", printable(msg.Router.Resource))
	}
	if msg.Header.Sync {
		resp := sdk.NewAck(msg)
		if err != nil {
			resp = sdk.NewErrorResponse(msg, err)
		}
		if rerr := b.host.Response(ctx, resp); rerr != nil {
			b.logger.Warn("answering a sync request failed", "msg_id", msg.Header.ID, "error", rerr)
		}
	}
	return err
}

func (b *EventBus) handle(ctx context.Context, msg *sdk.Message) error {
	switch op := msg.Router.Operation; op {
	case sdk.OpPublish:
		payload, err := contentPayload(msg.Content)
		if err != nil {
			return err
		}
		return b.publish(ctx, msg.Router.Resource, payload)
	case sdk.OpMessage:
		topic, payload, err := messagePayload(msg)
		if err != nil {
			return err
		}
		return b.publish(ctx, topic, payload)
	case opGetResult:
		if msg.Router.Resource != authInfo {
			return refusef("get_result for resource %q; only %q is known", msg.Router.Resource, authInfo)
		}
		payload, err := contentPayload(msg.Content)
		if err != nil {
			return err
		}
		return b.publish(ctx, fmt.Sprintf("$hw/events/node/%s/authInfo/get/result", b.nodeName), payload)
	case sdk.OpSubscribe:
		return b.subscribe(msg.Router.Resource)
	case sdk.OpUnsubscribe:
		return b.unsubscribe(msg.Router.Resource)
	default:
		return refusef("operation %q is not one eventbus handles", op)
	}
}

// contentPayload is what a publish puts on MQTT: the value of a JSON string,
// or the JSON text of anything else.
func contentPayload(content json.RawMessage) ([]byte, error) {
	c := bytes.TrimSpace(content)
	if len(c) == 0 || bytes.Equal(c, []byte("null")) {
		return nil, refusef("no content to publish")
	}
	if c[0] == '"' {
		var s string
		if err := json.Unmarshal(c, &s); err != nil {
			return nil, refusef("content is not a valid JSON string: %v", err)
		}
		return []byte(s), nil
	}
	if !json.Valid(c) {
		return nil, refusef("content is not valid JSON")
	}
	return c, nil
}

// messagePayload takes the cloud's {"message":{"topic":"t",...}} (as an
// object or a JSON string holding one) and returns the topic and the JSON of
// the message object.
func messagePayload(msg *sdk.Message) (string, []byte, error) {
	raw, err := contentPayload(msg.Content) // unwraps a JSON string
	if err != nil {
		return "", nil, err
	}
	var body struct {
		Message json.RawMessage `json:"message"`
	}
	if err := json.Unmarshal(raw, &body); err != nil {
		return "", nil, refusef("content is not JSON of the form {\"message\":{\"topic\":...}}: %v", err)
	}
	var m struct {
		Topic *string `json:"topic"`
	}
	if len(body.Message) == 0 || body.Message[0] != '{' {
		return "", nil, refusef("content has no \"message\" object")
	}
	if err := json.Unmarshal(body.Message, &m); err != nil {
		return "", nil, refusef("content.message: %v", err)
	}
	if m.Topic == nil || *m.Topic == "" {
		return "", nil, refusef("content.message has no topic")
	}
	var out bytes.Buffer
	if err := json.Compact(&out, body.Message); err != nil {
		return "", nil, refusef("content.message: %v", err)
	}
	return *m.Topic, out.Bytes(), nil
}

// publish sends payload on topic with the configured QoS and retain flag and
// waits until the broker took it (QoS 1, 2) or it was written (QoS 0). It
// waits for a connection at most publishTimeout.
func (b *EventBus) publish(ctx context.Context, topic string, payload []byte) error {
	ctx, cancel := context.WithTimeout(ctx, publishTimeout)
	defer cancel()
	tok, err := b.startPublish(ctx, topic, payload)
	if err != nil {
		return err
	}
	return b.finishPublish(ctx, topic, tok)
}

// startPublish checks and queues a publish in the client without waiting for
// it to go out. With the embedded broker the publish is done when it returns
// (nil token): the broker has handed the message to every subscriber's
// session, and stored it for those with QoS 1 or 2.
func (b *EventBus) startPublish(ctx context.Context, topic string, payload []byte) (paho.Token, error) {
	if err := checkTopicName(topic); err != nil {
		return nil, err
	}
	if len(payload) > b.cfg.MaxPayloadBytes {
		return nil, refusef("payload is %d bytes, max_payload_bytes is %d", len(payload), b.cfg.MaxPayloadBytes)
	}
	if b.broker != nil {
		if err := b.broker.server.Publish(topic, payload, b.cfg.Retain, byte(b.cfg.QoS)); err != nil {
			return nil, fmt.Errorf("publish on %s: %w", topic, err)
		}
		return nil, nil
	}
	if err := b.waitConnected(ctx); err != nil {
		return nil, fmt.Errorf("publish on %s: %w", topic, err)
	}
	return b.client.Publish(topic, byte(b.cfg.QoS), b.cfg.Retain, payload), nil
}

// finishPublish waits for a publish startPublish queued.
func (b *EventBus) finishPublish(ctx context.Context, topic string, tok paho.Token) error {
	if tok == nil { // done inline
		b.stats.published.Add(1)
		return nil
	}
	select {
	case <-tok.Done():
	case <-ctx.Done():
		return fmt.Errorf("publish on %s: no answer from the broker: %w", topic, ctx.Err())
	}
	if err := tok.Error(); err != nil {
		return fmt.Errorf("publish on %s: %w", topic, err)
	}
	b.stats.published.Add(1)
	return nil
}

func (b *EventBus) waitConnected(ctx context.Context) error {
	for !b.client.IsConnectionOpen() {
		select {
		case <-ctx.Done():
			return fmt.Errorf("not connected to %s: %w", b.url, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}

// subscribe stores filter, then subscribes to it when connected (otherwise
// the next connection does).
func (b *EventBus) subscribe(filter string) error {
	if err := checkTopicFilter(filter); err != nil {
		return err
	}
	if err := b.store.add(filter, time.Now().UnixMilli()); err != nil {
		return err
	}
	b.mu.Lock()
	b.dynamic[filter] = true
	b.mu.Unlock()
	b.logger.Info("cloud subscribed a topic", "topic", filter)
	if b.cfg.Mode == modeInternal || !b.client.IsConnectionOpen() {
		return nil
	}
	tok := b.client.Subscribe(filter, 1, nil)
	if !tok.WaitTimeout(subscribeWait) {
		b.logger.Warn("subscribe timed out; the next connection subscribes again", "topic", filter)
		return nil
	}
	if err := tok.Error(); err != nil {
		return fmt.Errorf("subscribe %s: %w", filter, err)
	}
	return nil
}

// unsubscribe forgets filter and unsubscribes from it, unless it is one of
// the topics eventbus always listens to.
func (b *EventBus) unsubscribe(filter string) error {
	if err := checkTopicFilter(filter); err != nil {
		return err
	}
	if err := b.store.remove(filter); err != nil {
		return err
	}
	b.mu.Lock()
	delete(b.dynamic, filter)
	b.mu.Unlock()
	b.logger.Info("cloud unsubscribed a topic", "topic", filter)
	if b.cfg.Mode == modeInternal || slices.Contains(fixedTopics, filter) || !b.client.IsConnectionOpen() {
		return nil
	}
	tok := b.client.Unsubscribe(filter)
	if !tok.WaitTimeout(subscribeWait) {
		b.logger.Warn("unsubscribe timed out; messages on the topic are ignored", "topic", filter)
		return nil
	}
	if err := tok.Error(); err != nil {
		return fmt.Errorf("unsubscribe %s: %w", filter, err)
	}
	return nil
}
