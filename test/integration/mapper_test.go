package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgehive/edgehive/internal/testenv"
	"github.com/edgehive/edgehive/sdk"
	pluginv1 "github.com/edgehive/edgehive/sdk/proto/plugin/v1"
)

// The example mapper against mosquitto, eventbus and devicetwin, the test
// standing in for the cloud: a desired set-point goes down as a delta, the
// mapper applies it and reports it, and the report reaches the cloud even
// though the cloud link was down when it was made.
func TestMapperFollowsDesiredValueAcrossCloudOutage(t *testing.T) {
	broker := testenv.Mosquitto(t)
	mapperBin := filepath.Join(t.TempDir(), "mapper-thermometer")
	build := exec.Command("go", "build", "-o", mapperBin, "./examples/mapper-thermometer")
	build.Dir, build.Stderr = "../..", os.Stderr
	if err := build.Run(); err != nil {
		t.Fatalf("build the mapper: %v", err)
	}
	th := startHostAs(t, fmt.Sprintf(`
plugin "eventbus" {
  path = %q
  args = ["__serve", "eventbus"]
  config {
    mode       = "external"
    broker_url = "tcp://%s"
    qos        = 1
  }
}
plugin "devicetwin" {
  path = %q
  args = ["__serve", "devicetwin"]
  config {
    sync_retry_interval = "200ms"
  }
}
`, edgehiveBin(), broker, edgehiveBin()), "edgehub", "hub")
	th.waitRunning("eventbus", "devicetwin")
	cloud := func(resource, op string, content any) {
		t.Helper()
		m := sdk.NewMessage("")
		m.BuildRouter("devicecontroller", sdk.WireGroupTwin, resource, op)
		if err := m.FillBody(content); err != nil {
			t.Fatal(err)
		}
		if err := th.driver.Send(pluginv1.Send_KIND_MODULE, "devicetwin", 0, m.ToProto()); err != nil {
			t.Fatal(err)
		}
	}
	link := func(state string) {
		t.Helper()
		m := sdk.NewMessage("")
		m.BuildRouter("edgehub", sdk.GroupTwin, "node/connection", "connect")
		_ = m.FillBody(state)
		if err := th.driver.Send(pluginv1.Send_KIND_MODULE, "devicetwin", 0, m.ToProto()); err != nil {
			t.Fatal(err)
		}
	}
	cloud("membership", sdk.OpUpdate, map[string]any{"event_id": "m1", "timestamp": time.Now().UnixMilli(),
		"added_devices": []map[string]string{{"id": "default/thermo-1", "name": "thermo-1"}}, "removed_devices": nil})

	mapper := exec.Command(mapperBin, "-broker", "tcp://"+broker, "-device", "default/thermo-1", "-interval", "100ms", "-temperature", "20")
	mapper.Stderr = testWriter{t}
	if err := mapper.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = mapper.Process.Kill(); _ = mapper.Wait() })

	// reported waits for an edge_updated sync whose twin prop has actual value
	// want, after the first `from` messages, and confirms it as the cloud does.
	reported := func(from int, prop, want string, timeout time.Duration) int {
		t.Helper()
		deadline := time.Now().Add(timeout)
		for time.Now().Before(deadline) {
			th.mu.Lock()
			msgs := append([]*pluginv1.Delivery(nil), th.received[from:]...)
			th.mu.Unlock()
			for i, d := range msgs {
				m := d.GetMessage()
				if !strings.HasSuffix(m.GetResource(), "/twin/edge_updated") {
					continue
				}
				ack := &pluginv1.Message{Id: fmt.Sprintf("ack-%s", m.GetId()), ParentId: m.GetId(), Source: "devicecontroller",
					Group: sdk.WireGroupTwin, Operation: sdk.OpResponse, Resource: "twin", Content: []byte(`"OK"`)}
				_ = th.driver.Send(pluginv1.Send_KIND_MODULE, "devicetwin", 0, ack)
				if v, ok := actualOf(m, prop); ok && v == want {
					return from + i + 1
				}
			}
			time.Sleep(50 * time.Millisecond)
		}
		t.Fatalf("no edge_updated with %s = %s within %s", prop, want, timeout)
		return 0
	}
	next := reported(0, "target", "20", 20*time.Second)

	// The cloud wants 30, then the link goes down.
	cloud("device/default/thermo-1/twin/cloud_updated", sdk.OpUpdate, map[string]any{"event_id": "c1", "timestamp": time.Now().UnixMilli(),
		"twin": map[string]any{"target": map[string]any{"expected": map[string]string{"value": "30"}, "metadata": map[string]string{"type": "float"}}}})
	link("cloud_disconnected")
	time.Sleep(time.Second) // the mapper applies 30 and reports it ten times, all held back
	th.mu.Lock()
	held := len(th.received)
	during := append([]*pluginv1.Delivery(nil), th.received[next:]...)
	th.mu.Unlock()
	for _, d := range during {
		if v, ok := actualOf(d.GetMessage(), "target"); ok && v == "30" && strings.HasSuffix(d.GetMessage().GetResource(), "/twin/edge_updated") {
			t.Fatalf("a sync went out while the cloud link was down: %s", d.GetMessage().GetContent())
		}
	}
	link("cloud_connected")
	reported(held, "target", "30", 20*time.Second)
}

// actualOf reads twin.<prop>.actual.value of an edge_updated content.
func actualOf(m *pluginv1.Message, prop string) (string, bool) {
	var content struct {
		Twin map[string]struct {
			Actual *struct {
				Value string `json:"value"`
			} `json:"actual"`
		} `json:"twin"`
	}
	raw := m.GetContent()
	var s string
	if json.Unmarshal(raw, &s) == nil {
		raw = []byte(s)
	}
	if json.Unmarshal(raw, &content) != nil {
		return "", false
	}
	p, ok := content.Twin[prop]
	if !ok || p.Actual == nil {
		return "", false
	}
	return p.Actual.Value, true
}
