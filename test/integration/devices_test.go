package integration

import (
	"encoding/json"
	"fmt"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgehive/edgehive/internal/testenv"
	"github.com/edgehive/edgehive/sdk"
	pluginv1 "github.com/edgehive/edgehive/sdk/proto/plugin/v1"
)

// A mapper streams twin updates through the broker, eventbus and devicetwin
// while first devicetwin and then eventbus are killed with SIGKILL: every
// update the broker acknowledged is answered with its update/result in the
// end. With the embedded broker, killing eventbus kills the broker too: the
// mapper reconnects to the new one and never subscribes again, so its
// results arriving proves its session (subscription, messages in flight) was
// kept.
func TestTwinUpdatesSurviveKilledPlugins(t *testing.T) {
	for _, broker := range []string{"mosquitto", "embedded"} {
		t.Run(broker, func(t *testing.T) { testTwinUpdatesSurviveKills(t, broker) })
	}
}

func testTwinUpdatesSurviveKills(t *testing.T, brokerKind string) {
	var broker, busConfig string
	if brokerKind == "mosquitto" {
		broker = testenv.Mosquitto(t)
		busConfig = fmt.Sprintf(`mode = "external"
    broker_url = "tcp://%s"`, broker)
	} else {
		broker = fmt.Sprintf("127.0.0.1:%d", freeTCPPort(t))
		busConfig = fmt.Sprintf(`listen = %q`, broker)
	}
	body := fmt.Sprintf(`
plugin "eventbus" {
  path = %q
  args = ["__serve", "eventbus"]
  restart {
    delay = "50ms"
  }
  config {
    %s
    qos        = 1
  }
}
plugin "devicetwin" {
  path = %q
  args = ["__serve", "devicetwin"]
  restart {
    delay = "50ms"
  }
}
`, edgehiveBin(), busConfig, edgehiveBin())
	// The test is the cloud: a module named edgehub.
	th := startHostAs(t, body, "edgehub", "hub")
	th.waitRunning("eventbus", "devicetwin")

	membership := sdk.NewMessage("")
	membership.BuildRouter("devicecontroller", sdk.WireGroupTwin, "membership", sdk.OpUpdate)
	_ = membership.FillBody(map[string]any{
		"event_id": "m1", "timestamp": time.Now().UnixMilli(),
		"added_devices": []map[string]string{{"id": "default/thermo-1", "name": "thermo-1"}}, "removed_devices": nil,
	})
	if err := th.driver.Send(pluginv1.Send_KIND_MODULE, "devicetwin", 0, membership.ToProto()); err != nil {
		t.Fatal(err)
	}

	const topic = "$hw/events/device/default/thermo-1/twin/update"
	var mu sync.Mutex
	results := map[string]int{}
	// The mapper keeps its session and reconnects, but never subscribes again.
	opts := mqtt.NewClientOptions().AddBroker("tcp://" + broker).SetClientID("mapper-it").SetCleanSession(false).
		SetAutoReconnect(true).SetConnectRetry(true).SetConnectRetryInterval(100 * time.Millisecond).
		SetMaxReconnectInterval(200 * time.Millisecond)
	mapper := mqtt.NewClient(opts)
	if tok := mapper.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("mapper connect: %v", tok.Error())
	}
	defer mapper.Disconnect(100)
	if tok := mapper.Subscribe(topic+"/result", 1, func(_ mqtt.Client, m mqtt.Message) {
		var r struct {
			EventID string `json:"event_id"`
			Code    int    `json:"code"`
		}
		if json.Unmarshal(m.Payload(), &r) == nil && r.Code == 0 {
			mu.Lock()
			results[r.EventID]++
			mu.Unlock()
		}
	}); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("mapper subscribe: %v", tok.Error())
	}
	// The device must exist before updates count: wait for its first result.
	deadline := time.Now().Add(20 * time.Second)
	for {
		payload := fmt.Sprintf(`{"event_id":"warmup","timestamp":%d,"twin":{"temperature":{"actual":{"value":"20"},"metadata":{"type":"float"}}}}`, time.Now().UnixMilli())
		mapper.Publish(topic, 1, false, payload).WaitTimeout(5 * time.Second)
		mu.Lock()
		ok := results["warmup"] > 0
		mu.Unlock()
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("devicetwin never answered the mapper")
		}
		time.Sleep(200 * time.Millisecond)
	}

	const total = 300
	kills := map[int]string{100: "devicetwin", 200: "eventbus"}
	oldPIDs := map[string]int{}
	for i := 0; i < total; i++ {
		if name, ok := kills[i]; ok {
			pid := th.h.Supervisor(name).Status().PID
			oldPIDs[name] = pid
			if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
		}
		payload := fmt.Sprintf(`{"event_id":"e%d","timestamp":%d,"twin":{"temperature":{"actual":{"value":"%d.5"},"metadata":{"type":"float"}}}}`, i, time.Now().UnixMilli(), i)
		if tok := mapper.Publish(topic, 1, false, payload); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
			t.Fatalf("publish %d not acknowledged: %v", i, tok.Error())
		}
		time.Sleep(5 * time.Millisecond)
	}
	deadline = time.Now().Add(60 * time.Second)
	for {
		mu.Lock()
		var missing []string
		for i := 0; i < total; i++ {
			if results[fmt.Sprintf("e%d", i)] == 0 {
				missing = append(missing, fmt.Sprintf("e%d", i))
			}
		}
		mu.Unlock()
		if len(missing) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d accepted updates never answered, e.g. %v", len(missing), total, missing[:min(5, len(missing))])
		}
		time.Sleep(100 * time.Millisecond)
	}
	for name, old := range oldPIDs {
		st := th.h.Supervisor(name).Status()
		if st.State != "running" || st.PID == old || st.Restarts != 1 {
			t.Fatalf("%s after its kill: %+v", name, st)
		}
	}
}

func freeTCPPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
