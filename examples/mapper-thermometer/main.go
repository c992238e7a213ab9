// Command mapper-thermometer is a small KubeEdge-style device mapper: a
// simulated thermometer with a heater that reports its temperature to the
// device twin over MQTT and follows the set-point the cloud desires.
//
// It speaks only MQTT, on KubeEdge's topics, so it works against edgehive's
// eventbus and devicetwin as it would against KubeEdge's edgecore.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// twinValue is one side (expected or actual) of a twin property.
type twinValue struct {
	Value string `json:"value"`
}

// twinProperty is a property in a twin message.
type twinProperty struct {
	Actual   *twinValue        `json:"actual,omitempty"`
	Expected *twinValue        `json:"expected,omitempty"`
	Metadata map[string]string `json:"metadata,omitempty"`
}

type twinUpdate struct {
	EventID   string                  `json:"event_id"`
	Timestamp int64                   `json:"timestamp"`
	Twin      map[string]twinProperty `json:"twin"`
}

type deltaMessage struct {
	Delta map[string]string `json:"delta"`
}

// thermometer is the simulated device: the temperature drifts toward the
// set-point by a tenth of the gap each tick.
type thermometer struct {
	mu          sync.Mutex
	temperature float64
	target      float64
	targetText  string // as the cloud wrote it: twins compare values as text
}

func (th *thermometer) tick() (temperature float64, target string) {
	th.mu.Lock()
	defer th.mu.Unlock()
	th.temperature += (th.target - th.temperature) / 10
	return th.temperature, th.targetText
}

func (th *thermometer) setTarget(v float64, text string) {
	th.mu.Lock()
	th.target, th.targetText = v, text
	th.mu.Unlock()
}

func main() {
	broker := flag.String("broker", "tcp://127.0.0.1:1883", "MQTT broker (edgehive's embedded broker or mosquitto)")
	device := flag.String("device", "default/thermo-1", "device id <namespace>/<name>")
	interval := flag.Duration("interval", time.Second, "report interval")
	start := flag.Float64("temperature", 20, "starting temperature and set-point")
	flag.Parse()
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, logger, *broker, *device, *interval, *start); err != nil {
		logger.Error("mapper stopped", "error", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, logger *slog.Logger, broker, device string, interval time.Duration, start float64) error {
	ns, name, ok := strings.Cut(device, "/")
	if !ok || ns == "" || name == "" {
		return fmt.Errorf("device %q: want <namespace>/<name>", device)
	}
	base := "$hw/events/device/" + ns + "/" + name
	th := &thermometer{temperature: start, target: start, targetText: strconv.FormatFloat(start, 'f', -1, 64)}

	opts := mqtt.NewClientOptions().AddBroker(broker).SetClientID("mapper-thermometer-" + name).
		SetAutoReconnect(true).SetConnectRetry(true).SetCleanSession(false)
	// Resubscribe on every connect: the delta tells the device what the cloud wants.
	opts.SetOnConnectHandler(func(c mqtt.Client) {
		c.Subscribe(base+"/twin/update/delta", 1, func(_ mqtt.Client, m mqtt.Message) {
			var d deltaMessage
			if err := json.Unmarshal(m.Payload(), &d); err != nil {
				logger.Warn("malformed delta", "error", err)
				return
			}
			v, ok := d.Delta["target"]
			if !ok {
				return
			}
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				logger.Warn("set-point is not a number", "value", v)
				return
			}
			th.setTarget(f, v)
			logger.Info("new set-point from the cloud", "target", f)
		})
		c.Subscribe(base+"/twin/update/result", 1, func(_ mqtt.Client, m mqtt.Message) {
			logger.Debug("twin update result", "payload", string(m.Payload()))
		})
	})
	client := mqtt.NewClient(opts)
	if tok := client.Connect(); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
		return fmt.Errorf("connect %s: %v", broker, tok.Error())
	}
	defer client.Disconnect(250)
	logger.Info("thermometer reporting", "device", device, "broker", broker, "interval", interval)

	t := time.NewTicker(interval)
	defer t.Stop()
	n := 0
	for {
		temperature, target := th.tick()
		n++
		update := twinUpdate{
			EventID:   fmt.Sprintf("%s-%d", name, n),
			Timestamp: time.Now().UnixMilli(),
			Twin: map[string]twinProperty{
				"temperature": {Actual: &twinValue{Value: strconv.FormatFloat(temperature, 'f', 2, 64)}, Metadata: map[string]string{"type": "float"}},
				// Reporting the set-point as actual tells the cloud the desired value was applied.
				"target": {Actual: &twinValue{Value: target}, Metadata: map[string]string{"type": "float"}},
			},
		}
		payload, _ := json.Marshal(update)
		if tok := client.Publish(base+"/twin/update", 1, false, payload); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			logger.Warn("report not accepted by the broker", "error", tok.Error())
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}
