package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgehive/edgehive/sdk"
	pluginv1 "github.com/edgehive/edgehive/sdk/proto/plugin/v1"
)

// TwinOptions shape the twin benchmark.
type TwinOptions struct {
	Mappers  int           // simulated mappers, one device each
	Duration time.Duration // how long they publish
	InFlight int           // updates each mapper has outstanding (waiting for its result)
	// GoMaxProcs of the two plugins; the default config (configs/edgehive.hcl) uses 1.
	GoMaxProcs int
}

// TwinResult is printed as JSON.
type TwinResult struct {
	Mappers     int     `json:"mappers"`
	Sent        int64   `json:"sent"`
	Answered    int64   `json:"answered"`
	UpdatesPerS float64 `json:"updates_per_s"`
	P50Ms       float64 `json:"p50_ms"`
	P99Ms       float64 `json:"p99_ms"`
	Lost        int64   `json:"lost"`
	SyncedToHub int64   `json:"synced_to_cloud_link"`
	// CPU time per answered update while the mappers published: the two
	// plugins, and the bench process (host router plus the simulated
	// mappers). Unlike updates_per_s it hardly depends on other load.
	CPUUsPerUpdate float64 `json:"cpu_us_per_update"`
	PluginCPUUs    float64 `json:"plugins_cpu_us_per_update"`
	BrokerEmbedd   bool    `json:"embedded_broker"`
}

// Twin pushes MQTT twin updates from simulated mappers through eventbus (its
// embedded broker) and devicetwin (SQLite) and out to the cloud link, which
// the benchmark stands in for; latency is from publish to update/result.
func Twin(opts TwinOptions, out, logOut io.Writer) error {
	if opts.Mappers <= 0 {
		opts.Mappers = 10
	}
	if opts.Duration <= 0 {
		opts.Duration = 5 * time.Second
	}
	if opts.InFlight <= 0 {
		opts.InFlight = 8
	}
	if opts.GoMaxProcs <= 0 {
		opts.GoMaxProcs = 1
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	port, err := freePort()
	if err != nil {
		return err
	}
	blocks := fmt.Sprintf(`
plugin "eventbus" {
  path = %q
  args = ["__serve", "eventbus"]
  gomaxprocs = %d
  config {
    listen = "127.0.0.1:%d"
  }
}
plugin "devicetwin" {
  path = %q
  args = ["__serve", "devicetwin"]
  gomaxprocs = %d
}
`, exe, opts.GoMaxProcs, port, exe, opts.GoMaxProcs)
	var synced atomic.Int64
	var local func(pluginv1.Send_Kind, string, int64, *pluginv1.Message) error
	r, err := newRigWith(blocks, logOut, "edgehub", "hub", func(d *pluginv1.Delivery) {
		m := d.GetMessage()
		if strings.HasSuffix(m.GetResource(), "/twin/edge_updated") {
			synced.Add(1)
			ack := &pluginv1.Message{Id: "ack-" + m.GetId(), ParentId: m.GetId(), Source: "devicecontroller",
				Group: sdk.WireGroupTwin, Operation: sdk.OpResponse, Resource: "twin", Content: []byte(`"OK"`)}
			_ = local(pluginv1.Send_KIND_MODULE, "devicetwin", 0, ack)
		}
	})
	if err != nil {
		return err
	}
	defer r.close()
	local = r.local.Send
	if err := r.waitRunning(30*time.Second, "eventbus", "devicetwin"); err != nil {
		return err
	}
	devices := make([]map[string]string, opts.Mappers)
	for i := range devices {
		devices[i] = map[string]string{"id": fmt.Sprintf("default/bench-%d", i), "name": fmt.Sprintf("bench-%d", i)}
	}
	membership := sdk.NewMessage("")
	membership.BuildRouter("devicecontroller", sdk.WireGroupTwin, "membership", sdk.OpUpdate)
	_ = membership.FillBody(map[string]any{"event_id": "bench", "timestamp": time.Now().UnixMilli(), "added_devices": devices, "removed_devices": nil})
	if err := r.local.Send(pluginv1.Send_KIND_MODULE, "devicetwin", 0, membership.ToProto()); err != nil {
		return err
	}
	time.Sleep(500 * time.Millisecond)

	var sent, answered atomic.Int64
	var mu sync.Mutex
	var lat []float64
	var wg sync.WaitGroup
	errs := make(chan error, opts.Mappers)
	pids := []int{os.Getpid()}
	for _, n := range []string{"eventbus", "devicetwin"} {
		pids = append(pids, r.h.Supervisor(n).Status().PID)
	}
	cpuBefore := cpuTimes(pids)
	deadline := time.Now().Add(opts.Duration)
	start := time.Now()
	for i := 0; i < opts.Mappers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := runMapper(i, port, opts.InFlight, deadline, &sent, &answered, func(ms float64) {
				mu.Lock()
				lat = append(lat, ms)
				mu.Unlock()
			}); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	cpuAfter := cpuTimes(pids)
	select {
	case err := <-errs:
		return err
	default:
	}
	res := TwinResult{Mappers: opts.Mappers, Sent: sent.Load(), Answered: answered.Load(), SyncedToHub: synced.Load(), BrokerEmbedd: true}
	res.Lost = res.Sent - res.Answered
	res.UpdatesPerS = round2(float64(res.Answered) / elapsed.Seconds())
	if res.Answered > 0 {
		var all, plugins time.Duration
		for i := range pids {
			d := cpuAfter[i] - cpuBefore[i]
			all += d
			if i > 0 {
				plugins += d
			}
		}
		res.CPUUsPerUpdate = round2(float64(all.Microseconds()) / float64(res.Answered))
		res.PluginCPUUs = round2(float64(plugins.Microseconds()) / float64(res.Answered))
	}
	slices.Sort(lat)
	if len(lat) > 0 {
		res.P50Ms = round2(lat[len(lat)/2])
		res.P99Ms = round2(lat[int(0.99*float64(len(lat)-1))])
	}
	return printJSON(out, res)
}

// runMapper publishes twin updates for one device, keeping inFlight of them
// outstanding, until the deadline, then waits for the remaining results.
func runMapper(i, port, inFlight int, deadline time.Time, sent, answered *atomic.Int64, observe func(float64)) error {
	topic := fmt.Sprintf("$hw/events/device/default/bench-%d/twin/update", i)
	var mu sync.Mutex
	pending := map[string]time.Time{}
	slots := make(chan struct{}, inFlight)
	opts := mqtt.NewClientOptions().AddBroker(fmt.Sprintf("tcp://127.0.0.1:%d", port)).SetClientID(fmt.Sprintf("bench-mapper-%d", i))
	c := mqtt.NewClient(opts)
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		return fmt.Errorf("mapper %d: connect: %v", i, tok.Error())
	}
	defer c.Disconnect(100)
	if tok := c.Subscribe(topic+"/result", 1, func(_ mqtt.Client, m mqtt.Message) {
		var r struct {
			EventID string `json:"event_id"`
		}
		if json.Unmarshal(m.Payload(), &r) != nil {
			return
		}
		mu.Lock()
		at, ok := pending[r.EventID]
		delete(pending, r.EventID)
		mu.Unlock()
		if ok {
			observe(float64(time.Since(at).Microseconds()) / 1000)
			answered.Add(1)
			<-slots
		}
	}); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		return fmt.Errorf("mapper %d: subscribe: %v", i, tok.Error())
	}
	for n := 0; time.Now().Before(deadline); n++ {
		slots <- struct{}{}
		id := fmt.Sprintf("m%d-%d", i, n)
		payload := fmt.Sprintf(`{"event_id":%q,"timestamp":%d,"twin":{"temperature":{"actual":{"value":"%d.5"},"metadata":{"type":"float"}}}}`,
			id, time.Now().UnixMilli(), n%100)
		mu.Lock()
		pending[id] = time.Now()
		mu.Unlock()
		if tok := c.Publish(topic, 1, false, payload); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			return fmt.Errorf("mapper %d: publish: %v", i, tok.Error())
		}
		sent.Add(1)
	}
	for wait := time.Now().Add(10 * time.Second); time.Now().Before(wait); time.Sleep(10 * time.Millisecond) {
		mu.Lock()
		left := len(pending)
		mu.Unlock()
		if left == 0 {
			break
		}
	}
	return nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// cpuTimes returns each process's user+system CPU time from /proc (0 when
// it cannot be read).
func cpuTimes(pids []int) []time.Duration {
	out := make([]time.Duration, len(pids))
	for i, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		// Fields after the command name, which is in parentheses and may hold spaces.
		f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
		if len(f) < 13 {
			continue
		}
		utime, _ := strconv.ParseInt(f[11], 10, 64)
		stime, _ := strconv.ParseInt(f[12], 10, 64)
		out[i] = time.Duration(utime+stime) * time.Second / clockTicks
	}
	return out
}

// clockTicks is USER_HZ, 100 on every Linux this runs on.
const clockTicks = 100
