package eventbus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/edgehive/edgehive/sdk"
	"github.com/edgehive/edgehive/sdk/sdktest"
)

const waitFor = 10 * time.Second

// startBus starts the module with config (JSON) in dataDir ("" for a new one).
func startBus(t *testing.T, dataDir, config string) (*EventBus, *sdktest.Harness) {
	t.Helper()
	if dataDir == "" {
		dataDir = t.TempDir()
	}
	b := New()
	h := sdktest.New(t, b, sdktest.Options{ConfigJSON: config, DataDir: dataDir, NodeName: "node-1"})
	waitHealthy(t, h)
	return b, h
}

func internalConfig(extra string) string {
	c := `{"listen":"127.0.0.1:0"`
	if extra != "" {
		c += "," + extra
	}
	return c + "}"
}

func waitHealthy(t *testing.T, h *sdktest.Harness) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for {
		err := h.Health(context.Background())
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not healthy: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// testClient is a mapper or application on the node.
type testClient struct {
	t *testing.T
	c paho.Client

	mu   sync.Mutex
	got  []paho.Message
	more chan struct{}
}

func newTestClient(t *testing.T, addr string) *testClient {
	t.Helper()
	tc := &testClient{t: t, more: make(chan struct{}, 1)}
	opts := paho.NewClientOptions().AddBroker("tcp://" + addr).
		SetClientID(fmt.Sprintf("test-%d", time.Now().UnixNano())).
		SetCleanSession(true).SetAutoReconnect(false).
		SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) {
			tc.mu.Lock()
			tc.got = append(tc.got, m)
			tc.mu.Unlock()
			select {
			case tc.more <- struct{}{}:
			default:
			}
		})
	tc.c = paho.NewClient(opts)
	if tok := tc.c.Connect(); !tok.WaitTimeout(waitFor) || tok.Error() != nil {
		t.Fatalf("test client connect to %s: %v", addr, tok.Error())
	}
	t.Cleanup(func() { tc.c.Disconnect(100) })
	return tc
}

func (tc *testClient) publish(topic string, payload []byte) {
	tc.t.Helper()
	tok := tc.c.Publish(topic, 1, false, payload)
	if !tok.WaitTimeout(waitFor) || tok.Error() != nil {
		tc.t.Fatalf("publish %s: %v", topic, tok.Error())
	}
}

func (tc *testClient) subscribe(topic string) {
	tc.t.Helper()
	tok := tc.c.Subscribe(topic, 1, nil)
	if !tok.WaitTimeout(waitFor) || tok.Error() != nil {
		tc.t.Fatalf("subscribe %s: %v", topic, tok.Error())
	}
}

// next waits for the next message received.
func (tc *testClient) next() paho.Message {
	tc.t.Helper()
	deadline := time.After(waitFor)
	for {
		tc.mu.Lock()
		if len(tc.got) > 0 {
			m := tc.got[0]
			tc.got = tc.got[1:]
			tc.mu.Unlock()
			return m
		}
		tc.mu.Unlock()
		select {
		case <-tc.more:
		case <-deadline:
			tc.t.Fatal("no MQTT message received")
		}
	}
}

// waitUpload waits for a send to module whose resource is topic.
func waitSend(t *testing.T, h *sdktest.Harness, module, topic string) *sdk.Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	s, ok := h.WaitSent(ctx, func(s sdktest.Sent) bool {
		return s.Kind == sdktest.KindModule && s.Target == module && s.Message.Router.Resource == topic
	})
	if !ok {
		t.Fatalf("nothing sent to %s for topic %s; sent: %+v", module, topic, h.Sent())
	}
	return s.Message
}

// sentFor counts sends whose resource is topic.
func sentFor(h *sdktest.Harness, topic string) int {
	n := 0
	for _, s := range h.Sent() {
		if s.Kind == sdktest.KindModule && s.Message.Router.Resource == topic {
			n++
		}
	}
	return n
}

// marker publishes on a topic that goes to the cloud and waits for it: every
// message the same client published before it has been handled by then.
func marker(t *testing.T, h *sdktest.Harness, tc *testClient) {
	t.Helper()
	topic := fmt.Sprintf("marker/user/%d", time.Now().UnixNano())
	tc.publish(topic, []byte("m"))
	waitSend(t, h, cloudModule, topic)
}

func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

func TestMQTTToTwin(t *testing.T) {
	b, h := startBus(t, "", internalConfig(""))
	tc := newTestClient(t, b.BrokerAddr())
	for _, topic := range []string{
		"$hw/events/device/default/thermo-1/twin/update",
		"$hw/events/device/default/thermo-1/twin/get",
		"$hw/events/device/default/thermo-1/state/update",
		"$hw/events/node/node-1/membership/get",
	} {
		payload := `{"event_id":"e7","timestamp":1722950500000,"twin":{"temperature":{"actual":{"value":"23.5"}}}}`
		tc.publish(topic, []byte(payload))
		msg := waitSend(t, h, twinModule, topic)
		want := sdk.MessageRoute{Source: "eventbus", Group: "user", Operation: "publish", Resource: topic}
		if msg.Router != want {
			t.Errorf("route %+v, want %+v", msg.Router, want)
		}
		if string(msg.Content) != jsonString(payload) {
			t.Errorf("content %s, want %s", msg.Content, jsonString(payload))
		}
		if msg.Header.ID == "" || msg.Header.Timestamp == 0 {
			t.Errorf("header %+v", msg.Header)
		}
	}
}

func TestMQTTToCloud(t *testing.T) {
	b, h := startBus(t, "", internalConfig(""))
	tc := newTestClient(t, b.BrokerAddr())
	for _, topic := range []string{"$hw/events/upload/thing", "SYS/dis/upload_records", "default/user/app/x"} {
		payload := `{"edgemsg":"hi <&>"}`
		tc.publish(topic, []byte(payload))
		msg := waitSend(t, h, cloudModule, topic)
		want := sdk.MessageRoute{Source: "bus", Group: "user", Operation: "upload", Resource: topic}
		if msg.Router != want {
			t.Errorf("route %+v, want %+v", msg.Router, want)
		}
		var got string
		if err := json.Unmarshal(msg.Content, &got); err != nil || got != payload {
			t.Errorf("content %s (%v), want the JSON string of %s", msg.Content, err, payload)
		}
	}
	// Not subscribed: nothing happens.
	tc.publish("default/other", []byte("x"))
	marker(t, h, tc)
	if n := sentFor(h, "default/other"); n != 0 {
		t.Fatalf("an unsubscribed topic was forwarded %d times", n)
	}
	if s := b.Stats(); s.Forwarded < 4 || s.Dropped != 0 || s.Refused != 0 {
		t.Fatalf("stats %+v", s)
	}
}

func deliver(t *testing.T, h *sdktest.Harness, source, op, resource, content string) error {
	t.Helper()
	msg := sdk.NewMessage("").BuildRouter(source, sdk.GroupUser, resource, op)
	if content != "" {
		msg.Content = json.RawMessage(content)
	}
	return h.Deliver(msg)
}

func TestPublish(t *testing.T) {
	b, h := startBus(t, "", internalConfig(""))
	tc := newTestClient(t, b.BrokerAddr())
	tc.subscribe("$hw/events/#")
	tc.subscribe("default/#")

	tests := []struct {
		name, source, op, resource, content string
		topic, payload                      string
	}{
		{"string content from devicetwin", "devicetwin", "publish", "$hw/events/device/default/t1/twin/update/result",
			jsonString(`{"event_id":"e7","twin":{}}`), "$hw/events/device/default/t1/twin/update/result", `{"event_id":"e7","twin":{}}`},
		{"object content", "devicetwin", "publish", "$hw/events/device/default/t1/twin/update/delta",
			`{"delta":{"switch":"on"}}`, "$hw/events/device/default/t1/twin/update/delta", `{"delta":{"switch":"on"}}`},
		{"cloud publish", "router_eventbus", "publish", "default/test/param", jsonString("hello"), "default/test/param", "hello"},
		{"cloud message", "router_eventbus", "message", "whatever",
			`{"message":{"topic":"default/msg","data":{"a":1}}}`, "default/msg", `{"topic":"default/msg","data":{"a":1}}`},
		{"cloud message as a string", "router_eventbus", "message", "whatever",
			jsonString(`{"message": {"topic": "default/msg2"}}`), "default/msg2", `{"topic":"default/msg2"}`},
		{"auth info", "router_eventbus", "get_result", "auth_info", `{"token":"x"}`,
			"$hw/events/node/node-1/authInfo/get/result", `{"token":"x"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := deliver(t, h, tt.source, tt.op, tt.resource, tt.content); err != nil {
				t.Fatalf("Handle: %v", err)
			}
			m := tc.next()
			if m.Topic() != tt.topic || string(m.Payload()) != tt.payload {
				t.Fatalf("received %q %q, want %q %q", m.Topic(), m.Payload(), tt.topic, tt.payload)
			}
		})
	}
	if s := b.Stats(); s.Published != uint64(len(tests)) {
		t.Fatalf("stats %+v", s)
	}
}

func TestSyncPublishIsAnswered(t *testing.T) {
	_, h := startBus(t, "", internalConfig(""))
	msg := sdk.NewMessage("").BuildRouter("devicetwin", sdk.GroupUser, "a/b", "publish")
	msg.Content = json.RawMessage(`"x"`)
	msg.Header.Sync = true
	if err := h.Deliver(msg); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	s, ok := h.WaitSent(ctx, sdktest.ResponseTo(msg.Header.ID))
	if !ok || s.Message.Router.Operation != sdk.OpResponse || string(s.Message.Content) != `"OK"` {
		t.Fatalf("answer %+v", s)
	}
	bad := sdk.NewMessage("").BuildRouter("devicetwin", sdk.GroupUser, "a/+", "publish")
	bad.Content = json.RawMessage(`"x"`)
	bad.Header.Sync = true
	if err := h.Deliver(bad); !errors.Is(err, errRefused) {
		t.Fatalf("Handle = %v", err)
	}
	s, ok = h.WaitSent(ctx, sdktest.ResponseTo(bad.Header.ID))
	if !ok || s.Message.Router.Operation != sdk.OpError {
		t.Fatalf("answer %+v", s)
	}
}

func TestCloudSubscribe(t *testing.T) {
	dir := t.TempDir()
	b, h := startBus(t, dir, internalConfig(""))
	tc := newTestClient(t, b.BrokerAddr())

	tc.publish("default/test", []byte("before"))
	marker(t, h, tc)
	if n := sentFor(h, "default/test"); n != 0 {
		t.Fatalf("forwarded before the subscription: %d", n)
	}
	for range 2 { // idempotent
		if err := deliver(t, h, "router_eventbus", "subscribe", "default/test", ""); err != nil {
			t.Fatal(err)
		}
	}
	tc.publish("default/test", []byte(`{"edgemsg":"hi"}`))
	msg := waitSend(t, h, cloudModule, "default/test")
	if msg.Router.Source != "bus" || msg.Router.Operation != "upload" || string(msg.Content) != jsonString(`{"edgemsg":"hi"}`) {
		t.Fatalf("forwarded %s %s", msg, msg.Content)
	}
	topics, err := b.store.list()
	if err != nil || len(topics) != 1 || topics[0] != "default/test" {
		t.Fatalf("stored %v, %v", topics, err)
	}

	// The subscription survives a restart on the same database.
	h.Stop()
	b2, h2 := startBus(t, dir, internalConfig(""))
	tc2 := newTestClient(t, b2.BrokerAddr())
	tc2.publish("default/test", []byte("after restart"))
	msg = waitSend(t, h2, cloudModule, "default/test")
	if string(msg.Content) != jsonString("after restart") {
		t.Fatalf("content %s", msg.Content)
	}

	// Unsubscribe: no longer forwarded, and gone from the store.
	if err := deliver(t, h2, "router_eventbus", "unsubscribe", "default/test", ""); err != nil {
		t.Fatal(err)
	}
	tc2.publish("default/test", []byte("after unsubscribe"))
	marker(t, h2, tc2)
	if n := sentFor(h2, "default/test"); n != 1 {
		t.Fatalf("forwarded %d times, want only the one before unsubscribe", n)
	}
	if topics, err := b2.store.list(); err != nil || len(topics) != 0 {
		t.Fatalf("stored %v, %v", topics, err)
	}
	// Unsubscribing a fixed topic keeps eventbus listening to it.
	if err := deliver(t, h2, "router_eventbus", "unsubscribe", "SYS/dis/upload_records", ""); err != nil {
		t.Fatal(err)
	}
	tc2.publish("SYS/dis/upload_records", []byte("still"))
	waitSend(t, h2, cloudModule, "SYS/dis/upload_records")
}

func TestBadInputFromMQTT(t *testing.T) {
	b, h := startBus(t, "", internalConfig(`"max_payload_bytes":64`))
	tc := newTestClient(t, b.BrokerAddr())

	tc.publish("$hw/events/device/default/t1/twin/update", []byte(strings.Repeat("x", 65)))
	tc.publish("$hw/events/upload/big", []byte(strings.Repeat("y", 1000)))
	tc.publish("$hw/events/device/default/t1/state/update", []byte{0xff, 0xfe, '{'})
	tc.publish("$hw/events/device/default/t1/twin/update", []byte(strings.Repeat("z", 64))) // at the limit: fine
	marker(t, h, tc)
	if n := sentFor(h, "$hw/events/upload/big") + sentFor(h, "$hw/events/device/default/t1/state/update"); n != 0 {
		t.Fatalf("bad messages forwarded: %d", n)
	}
	msg := waitSend(t, h, twinModule, "$hw/events/device/default/t1/twin/update")
	if string(msg.Content) != jsonString(strings.Repeat("z", 64)) {
		t.Fatalf("content %s", msg.Content)
	}
	if s := b.Stats(); s.Refused != 3 || s.Dropped != 0 {
		t.Fatalf("stats %+v", s)
	}
	waitHealthy(t, h) // refusals do not make the module unhealthy
}

func TestBadInputFromModules(t *testing.T) {
	b, h := startBus(t, "", internalConfig(`"max_payload_bytes":64`))
	tests := []struct {
		name, op, resource, content string
	}{
		{"oversized payload", "publish", "a/b", jsonString(strings.Repeat("x", 65))},
		{"oversized object", "publish", "a/b", `{"x":"` + strings.Repeat("x", 64) + `"}`},
		{"invalid UTF-8 topic", "publish", "a/\xff\xfe", `"x"`},
		{"wildcard topic +", "publish", "a/+/b", `"x"`},
		{"wildcard topic #", "publish", "a/#", `"x"`},
		{"empty topic", "publish", "", `"x"`},
		{"no content", "publish", "a/b", ""},
		{"null content", "publish", "a/b", "null"},
		{"message: not JSON", "message", "r", jsonString("{not json")},
		{"message: no message", "message", "r", `{"msg":{"topic":"t"}}`},
		{"message: message not an object", "message", "r", `{"message":"t"}`},
		{"message: no topic", "message", "r", `{"message":{"data":1}}`},
		{"message: topic not a string", "message", "r", `{"message":{"topic":5}}`},
		{"message: an array", "message", "r", `[1,2]`},
		{"message: wildcard topic", "message", "r", `{"message":{"topic":"a/#"}}`},
		{"get_result: unknown resource", "get_result", "other", `{}`},
		{"subscribe: invalid UTF-8", "subscribe", "a/\xc3", ""},
		{"subscribe: bad wildcard", "subscribe", "a/b#", ""},
		{"subscribe: # not last", "subscribe", "a/#/b", ""},
		{"unsubscribe: empty", "unsubscribe", "", ""},
		{"unknown operation", "insert", "default/pod/x", `{}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := deliver(t, h, "router_eventbus", tt.op, tt.resource, tt.content)
			if !errors.Is(err, errRefused) {
				t.Fatalf("Handle = %v, want a refusal", err)
			}
		})
	}
	if s := b.Stats(); s.Refused != uint64(len(tests)) || s.Published != 0 {
		t.Fatalf("stats %+v", s)
	}
	if topics, _ := b.store.list(); len(topics) != 0 {
		t.Fatalf("stored %v", topics)
	}
	waitHealthy(t, h)
}

func TestSendRetriesThenDrops(t *testing.T) {
	old := []any{sendBackoff, sendMaxBackoff, sendAttempts}
	sendBackoff, sendMaxBackoff, sendAttempts = 5*time.Millisecond, 20*time.Millisecond, 4
	t.Cleanup(func() {
		sendBackoff, sendMaxBackoff, sendAttempts = old[0].(time.Duration), old[1].(time.Duration), old[2].(int)
	})
	b, h := startBus(t, "", internalConfig(""))
	tc := newTestClient(t, b.BrokerAddr())

	// A transient failure: retried until it works.
	h.FailSendsTo(twinModule, sdk.ErrQueueFull)
	tc.publish("$hw/events/device/default/t1/twin/update", []byte(`{"n":1}`))
	time.Sleep(30 * time.Millisecond)
	h.FailSendsTo(twinModule, nil)
	waitSend(t, h, twinModule, "$hw/events/device/default/t1/twin/update")
	if s := b.Stats(); s.Dropped != 0 {
		t.Fatalf("stats %+v", s)
	}

	// A lasting failure: dropped after sendAttempts, counted, and unhealthy.
	h.FailSendsTo(cloudModule, sdk.ErrUnknownDestination)
	tc.publish("$hw/events/upload/lost", []byte("x"))
	deadline := time.Now().Add(waitFor)
	for b.Stats().Dropped == 0 {
		if time.Now().After(deadline) {
			t.Fatal("not dropped")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := h.Health(context.Background()); err == nil || !strings.Contains(err.Error(), "dropped") {
		t.Fatalf("Health = %v", err)
	}
	h.FailSendsTo(cloudModule, nil)
	// The forwarder goes on with the next message.
	tc.publish("$hw/events/upload/next", []byte("y"))
	waitSend(t, h, cloudModule, "$hw/events/upload/next")
}

func TestLoopbackOnlyHook(t *testing.T) {
	h := new(loopbackOnly)
	for remote, want := range map[string]bool{
		"127.0.0.1:5000": true, "[::1]:5000": true, "10.0.0.1:5000": false, "192.168.1.2:1": false, "garbage": false,
	} {
		cl := &mqtt.Client{Net: mqtt.ClientConnection{Remote: remote}}
		if got := h.OnConnectAuthenticate(cl, packets.Packet{}); got != want {
			t.Errorf("%s: allowed %v, want %v", remote, got, want)
		}
	}
}

func TestSecondInstanceSharesThePort(t *testing.T) {
	b, h := startBus(t, "", internalConfig(""))
	// A live upgrade starts the new instance on the same address.
	b2, h2 := startBus(t, "", fmt.Sprintf(`{"listen":%q}`, b.BrokerAddr()))
	if b2.BrokerAddr() != b.BrokerAddr() {
		t.Fatalf("addresses %s and %s", b.BrokerAddr(), b2.BrokerAddr())
	}
	waitHealthy(t, h)
	waitHealthy(t, h2)
}

func TestMatchTopic(t *testing.T) {
	tests := []struct {
		filter, topic string
		want          bool
	}{
		{"$hw/events/upload/#", "$hw/events/upload/a/b", true},
		{"$hw/events/upload/#", "$hw/events/upload", true},
		{"$hw/events/device/+/+/twin/+", "$hw/events/device/default/t1/twin/update", true},
		{"$hw/events/device/+/+/twin/+", "$hw/events/device/default/t1/twin/update/result", false},
		{"$hw/events/device/+/+/state/update", "$hw/events/device/default/t1/state/update", true},
		{"+/user/#", "default/user/x", true},
		{"+/user/#", "$hw/user/x", false},
		{"#", "$SYS/x", false},
		{"SYS/dis/upload_records", "SYS/dis/upload_records", true},
		{"SYS/dis/upload_records", "SYS/dis/upload_records/x", false},
		{"default/test", "default/test", true},
		{"a/+", "a", false},
		{"a/+", "a/", true},
		{"a/#", "a", true},
		{"a/b", "a/b/c", false},
		{"a/b/c", "a/b", false},
		{"+/+", "a/b", true},
		{"#", "a/b", true},
		{"a/+/c", "a/x/c", true},
		{"a/+/c", "a/x/d", false},
		{"", "", true},
	}
	for _, tt := range tests {
		if got := matchTopic(tt.filter, tt.topic); got != tt.want {
			t.Errorf("matchTopic(%q, %q) = %v, want %v", tt.filter, tt.topic, got, tt.want)
		}
	}
}

func contextFor() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), waitFor)
}
