package devicecontroller

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynamicfake "k8s.io/client-go/dynamic/fake"

	"github.com/edgehive/edgehive/cloud/nodelink"
	"github.com/edgehive/edgehive/internal/twinwire"
	"github.com/edgehive/edgehive/sdk"
)

// fakeSender records what is sent to connected nodes and refuses the others.
type fakeSender struct {
	mu        sync.Mutex
	connected map[string]bool
	sent      map[string][]*sdk.Message
}

var _ nodelink.Sender = (*fakeSender)(nil)

func newFakeSender(nodes ...string) *fakeSender {
	s := &fakeSender{connected: map[string]bool{}, sent: map[string][]*sdk.Message{}}
	for _, n := range nodes {
		s.connected[n] = true
	}
	return s
}

func (s *fakeSender) Send(_ context.Context, node string, msg *sdk.Message) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.connected[node] {
		return nodelink.ErrNotConnected
	}
	s.sent[node] = append(s.sent[node], msg.Clone())
	return nil
}

func (s *fakeSender) Connected(node string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.connected[node]
}

func (s *fakeSender) setConnected(node string, up bool) {
	s.mu.Lock()
	s.connected[node] = up
	s.mu.Unlock()
}

// take returns and forgets what node was sent.
func (s *fakeSender) take(node string) []*sdk.Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := s.sent[node]
	delete(s.sent, node)
	return out
}

// waitFor waits until node was sent n messages and returns them (forgotten).
func (s *fakeSender) waitFor(t *testing.T, node string, n int) []*sdk.Message {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		s.mu.Lock()
		got := len(s.sent[node])
		s.mu.Unlock()
		if got >= n {
			time.Sleep(50 * time.Millisecond) // anything more would show now
			msgs := s.take(node)
			if len(msgs) != n {
				t.Fatalf("%s was sent %d messages, want %d: %v", node, len(msgs), n, describe(msgs))
			}
			return msgs
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s was sent %d messages, want %d: %v", node, got, n, describe(s.take(node)))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func describe(msgs []*sdk.Message) []string {
	var out []string
	for _, m := range msgs {
		out = append(out, m.Router.Operation+" "+m.Router.Resource+" "+string(m.Content))
	}
	return out
}

func thermometerModel() *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "devices.kubeedge.io/v1beta1", "kind": "DeviceModel",
		"metadata": map[string]any{"name": "thermometer", "namespace": "default"},
		"spec": map[string]any{"properties": []any{
			map[string]any{"name": "temperature", "type": "FLOAT", "accessMode": "ReadOnly"},
			map[string]any{"name": "setpoint", "type": "INT", "accessMode": "ReadWrite"},
		}},
	}}
}

func thermometer(name, node, setpoint string) *unstructured.Unstructured {
	props := []any{map[string]any{"name": "temperature"}}
	if setpoint != "" {
		props = append(props, map[string]any{"name": "setpoint", "desired": map[string]any{"value": setpoint}})
	} else {
		props = append(props, map[string]any{"name": "setpoint"})
	}
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "devices.kubeedge.io/v1beta1", "kind": "Device",
		"metadata": map[string]any{"name": name, "namespace": "default"},
		"spec": map[string]any{
			"deviceModelRef": map[string]any{"name": "thermometer"},
			"nodeName":       node,
			"properties":     props,
		},
	}}
}

type rig struct {
	t      *testing.T
	client *dynamicfake.FakeDynamicClient
	sender *fakeSender
	dc     *Controller
	ctx    context.Context
}

func newRig(t *testing.T, sender *fakeSender, cfg Config, objs ...runtime.Object) *rig {
	t.Helper()
	client := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(),
		map[schema.GroupVersionResource]string{DeviceGVR: "DeviceList", DeviceModelGVR: "DeviceModelList"}, objs...)
	dc, err := New(client, sender, hclog.New(&hclog.LoggerOptions{Level: hclog.Debug, Output: testWriter{t}}), cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- dc.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return &rig{t: t, client: client, sender: sender, dc: dc, ctx: ctx}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func (r *rig) devices() interface {
	Create(context.Context, *unstructured.Unstructured, metav1.CreateOptions, ...string) (*unstructured.Unstructured, error)
	Update(context.Context, *unstructured.Unstructured, metav1.UpdateOptions, ...string) (*unstructured.Unstructured, error)
	Delete(context.Context, string, metav1.DeleteOptions, ...string) error
	Get(context.Context, string, metav1.GetOptions, ...string) (*unstructured.Unstructured, error)
} {
	return r.client.Resource(DeviceGVR).Namespace("default")
}

// content decodes a message's content as JSON into v.
func content(t *testing.T, m *sdk.Message, v any) {
	t.Helper()
	if err := m.DecodeContent(v); err != nil {
		t.Fatalf("content of %s: %v: %s", m.Router.Resource, err, m.Content)
	}
}

func checkRoute(t *testing.T, m *sdk.Message, op, resource string) {
	t.Helper()
	if m.Router.Source != "devicecontroller" || m.Router.Group != "twin" || m.Router.Operation != op || m.Router.Resource != resource {
		t.Fatalf("route %+v, want devicecontroller/twin/%s/%s", m.Router, op, resource)
	}
}

func TestDeviceReachesItsNode(t *testing.T) {
	r := newRig(t, newFakeSender("edge-1", "edge-2"), Config{}, thermometerModel(), thermometer("thermo-1", "edge-1", "21"))

	// Membership with the model's types, then the desired value.
	msgs := r.sender.waitFor(t, "edge-1", 2)
	checkRoute(t, msgs[0], "update", "membership")
	var mu twinwire.MembershipUpdate
	content(t, msgs[0], &mu)
	if len(mu.AddDevices) != 1 || mu.RemoveDevices != nil || mu.EventID == "" || mu.Timestamp == 0 {
		t.Fatalf("membership %s", msgs[0].Content)
	}
	add := mu.AddDevices[0]
	if add.ID != "default/thermo-1" || add.Name != "thermo-1" {
		t.Errorf("added device %+v", add)
	}
	if tw := add.Twin["temperature"]; tw == nil || tw.Metadata.Type != "float" || tw.Expected != nil {
		t.Errorf("temperature twin %+v", tw)
	}
	if tw := add.Twin["setpoint"]; tw == nil || tw.Metadata.Type != "int" || *tw.Expected.Value != "21" || *tw.Optional {
		t.Errorf("setpoint twin %s", msgs[0].Content)
	}
	checkRoute(t, msgs[1], "update", "device/default/thermo-1/twin/cloud_updated")
	var cu twinwire.TwinUpdate
	content(t, msgs[1], &cu)
	if len(cu.Twin) != 1 || *cu.Twin["setpoint"].Expected.Value != "21" || cu.Twin["setpoint"].Metadata.Type != "int" || cu.Twin["setpoint"].ExpectedVersion != nil {
		t.Fatalf("cloud_updated %s", msgs[1].Content)
	}

	// A new desired value: only cloud_updated, only the changed property.
	d, _ := r.devices().Get(r.ctx, "thermo-1", metav1.GetOptions{})
	props, _, _ := unstructured.NestedSlice(d.Object, "spec", "properties")
	props[1].(map[string]any)["desired"] = map[string]any{"value": "23"}
	_ = unstructured.SetNestedSlice(d.Object, props, "spec", "properties")
	if _, err := r.devices().Update(r.ctx, d, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	msgs = r.sender.waitFor(t, "edge-1", 1)
	checkRoute(t, msgs[0], "update", "device/default/thermo-1/twin/cloud_updated")
	content(t, msgs[0], &cu)
	if len(cu.Twin) != 1 || *cu.Twin["setpoint"].Expected.Value != "23" {
		t.Fatalf("cloud_updated %s", msgs[0].Content)
	}

	// Moved to another node: removed from the first, added to the second.
	d, _ = r.devices().Get(r.ctx, "thermo-1", metav1.GetOptions{})
	_ = unstructured.SetNestedField(d.Object, "edge-2", "spec", "nodeName")
	if _, err := r.devices().Update(r.ctx, d, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	msgs = r.sender.waitFor(t, "edge-1", 1)
	content(t, msgs[0], &mu)
	if len(mu.AddDevices) != 0 || len(mu.RemoveDevices) != 1 || mu.RemoveDevices[0].ID != "default/thermo-1" {
		t.Fatalf("removal %s", msgs[0].Content)
	}
	r.sender.waitFor(t, "edge-2", 2)

	// Deleted: removed from the node.
	if err := r.devices().Delete(r.ctx, "thermo-1", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	msgs = r.sender.waitFor(t, "edge-2", 1)
	content(t, msgs[0], &mu)
	if len(mu.RemoveDevices) != 1 || mu.RemoveDevices[0].Name != "thermo-1" {
		t.Fatalf("removal %s", msgs[0].Content)
	}
}

// A node that is away is sent nothing; when it connects it gets its devices
// and their desired values, and the removals it missed.
func TestNodeResyncOnConnect(t *testing.T) {
	sender := newFakeSender()
	r := newRig(t, sender, Config{}, thermometerModel(), thermometer("thermo-1", "edge-1", "21"), thermometer("gone", "edge-1", ""))
	time.Sleep(200 * time.Millisecond)
	if err := r.devices().Delete(r.ctx, "gone", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond) // the informer sees the deletion
	sender.setConnected("edge-1", true)
	r.dc.NodeConnected(r.ctx, "edge-1")
	msgs := sender.waitFor(t, "edge-1", 2)
	got := describe(msgs)
	if !strings.Contains(got[0], `"added_devices":[{"id":"default/thermo-1"`) || !strings.Contains(got[1], "thermo-1/twin/cloud_updated") {
		t.Fatalf("resync sent %v", got)
	}

	// A device deleted while the node is away is removed when it returns.
	sender.setConnected("edge-1", false)
	if err := r.devices().Delete(r.ctx, "thermo-1", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	sender.setConnected("edge-1", true)
	r.dc.HandleUpstream(r.ctx, "edge-1", sdk.NewMessage("").BuildRouter("twin", "resource", "membership/detail", "get"))
	msgs = sender.waitFor(t, "edge-1", 1)
	if !strings.Contains(describe(msgs)[0], `"removed_devices":[{"id":"default/thermo-1"`) {
		t.Fatalf("after reconnect: %v", describe(msgs))
	}
}

func edgeReport(t *testing.T, device string, twins string) *sdk.Message {
	t.Helper()
	m := sdk.NewMessage("").BuildRouter("twin", "resource", "device/default/"+device+"/twin/edge_updated", "update")
	m.Content = json.RawMessage(fmt.Sprintf(`{"event_id":"e1","timestamp":5,"twin":%s}`, twins))
	return m
}

func TestReportedValuesInStatus(t *testing.T) {
	r := newRig(t, newFakeSender("edge-1"), Config{}, thermometerModel(), thermometer("thermo-1", "edge-1", "21"))
	r.sender.waitFor(t, "edge-1", 2)

	up := edgeReport(t, "thermo-1", `{
		"temperature":{"actual":{"value":"23.5","metadata":{"timestamp":1722950500012}},"optional":true,"metadata":{"type":"float"},"actual_version":{"cloud":0,"edge":3}},
		"setpoint":{"expected":{"value":"21","metadata":{"timestamp":1722950500000}},"actual":{"value":"20"},"metadata":{"type":"int"}},
		"unknown":{"actual":{"value":"x"}}}`)
	r.dc.HandleUpstream(r.ctx, "edge-1", up)
	msgs := r.sender.waitFor(t, "edge-1", 1)
	checkRoute(t, msgs[0], "response", "twin")
	if msgs[0].Header.ParentID != up.Header.ID || msgs[0].ContentString() != "OK" {
		t.Fatalf("confirmation %+v %s", msgs[0].Header, msgs[0].Content)
	}
	d, err := r.devices().Get(r.ctx, "thermo-1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	twins, _, _ := unstructured.NestedSlice(d.Object, "status", "twins")
	got, _ := json.Marshal(twins)
	want := `[{"propertyName":"temperature","reported":{"metadata":{"timestamp":"1722950500012","type":"float"},"value":"23.5"}},` +
		`{"observedDesired":{"metadata":{"timestamp":"1722950500000","type":"int"},"value":"21"},"propertyName":"setpoint","reported":{"metadata":{"type":"int"},"value":"20"}}]`
	if string(got) != want {
		t.Fatalf("status.twins\n got %s\nwant %s", got, want)
	}

	// A later report of one property keeps the others.
	r.dc.HandleUpstream(r.ctx, "edge-1", edgeReport(t, "thermo-1", `{"setpoint":{"actual":{"value":"21"},"metadata":{"type":"int"}}}`))
	r.sender.waitFor(t, "edge-1", 1)
	d, _ = r.devices().Get(r.ctx, "thermo-1", metav1.GetOptions{})
	twins, _, _ = unstructured.NestedSlice(d.Object, "status", "twins")
	got, _ = json.Marshal(twins)
	if !strings.Contains(string(got), `"value":"23.5"`) || !strings.Contains(string(got), `"reported":{"metadata":{"type":"int"},"value":"21"}`) {
		t.Fatalf("status.twins after a second report: %s", got)
	}

	// State.
	st := sdk.NewMessage("").BuildRouter("twin", "resource", "device/default/thermo-1/state/update", "update")
	_ = st.FillBody(`{"event_id":"s","timestamp":1,"device":{"name":"thermo-1","state":"online","lastOnlineTime":"2026-11-24T10:00:00Z"}}`)
	r.dc.HandleUpstream(r.ctx, "edge-1", st)
	r.sender.waitFor(t, "edge-1", 1)
	d, _ = r.devices().Get(r.ctx, "thermo-1", metav1.GetOptions{})
	if s, _, _ := unstructured.NestedString(d.Object, "status", "state"); s != "online" {
		t.Errorf("status.state %q", s)
	}

	// From a node the device is not bound to: confirmed, not written.
	r.dc.HandleUpstream(r.ctx, "edge-1", edgeReport(t, "nosuch", `{"temperature":{"actual":{"value":"1"}}}`))
	r.sender.waitFor(t, "edge-1", 1)
}

func TestUpstreamQueueFullDrops(t *testing.T) {
	client := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(),
		map[schema.GroupVersionResource]string{DeviceGVR: "DeviceList", DeviceModelGVR: "DeviceModelList"})
	dc, err := New(client, newFakeSender("edge-1"), nil, Config{UpstreamQueue: 2})
	if err != nil {
		t.Fatal(err)
	}
	for range 5 { // not running: nothing drains the queue
		dc.HandleUpstream(context.Background(), "edge-1", edgeReport(t, "thermo-1", `{}`))
	}
	if n := len(dc.upstream); n != 2 {
		t.Fatalf("queued %d, want 2 (the rest dropped)", n)
	}
	dc.HandleUpstream(context.Background(), "edge-1", sdk.NewMessage("").BuildRouter("twin", "resource", "something/else", "update"))
	if n := len(dc.upstream); n != 2 {
		t.Fatalf("an unknown resource was queued")
	}
}

func TestNewChecks(t *testing.T) {
	client := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(),
		map[schema.GroupVersionResource]string{DeviceGVR: "DeviceList", DeviceModelGVR: "DeviceModelList"})
	tests := []struct {
		name   string
		cfg    Config
		sender nodelink.Sender
		ok     bool
	}{
		{"defaults", Config{}, newFakeSender(), true},
		{"one namespace", Config{Namespace: "default", ResyncPeriod: -1}, newFakeSender(), true},
		{"negative send timeout", Config{SendTimeout: -time.Second}, newFakeSender(), false},
		{"negative queue", Config{UpstreamQueue: -1}, newFakeSender(), false},
		{"no sender", Config{}, nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(client, tt.sender, nil, tt.cfg)
			if (err == nil) != tt.ok {
				t.Fatalf("New: %v, want ok=%v", err, tt.ok)
			}
		})
	}
}

func TestDeviceResource(t *testing.T) {
	tests := []struct {
		res, ns, name string
		ok            bool
	}{
		{"device/default/t1/twin/edge_updated", "default", "t1", true},
		{"device/default/twin/edge_updated", "", "", false},
		{"device//t1/twin/edge_updated", "", "", false},
		{"device/a/b/c/twin/edge_updated", "", "", false},
		{"node/x/twin/edge_updated", "", "", false},
	}
	for _, tt := range tests {
		ns, name, ok := deviceResource(tt.res, edgeUpdated)
		if ns != tt.ns || name != tt.name || ok != tt.ok {
			t.Errorf("%s: %q %q %v", tt.res, ns, name, ok)
		}
	}
}
