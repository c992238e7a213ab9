package metrics

import (
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestNilMetricsIsNoOp(t *testing.T) {
	var m *Metrics
	m.Delivered("a", 1)
	m.Redelivered("a", 1)
	m.Acked("a", 1)
	m.Routed(KindModule)
	m.SendError("a", "queue_full")
	m.SetQueueDepth("a", 3)
	m.SetInFlight("a", 2)
	m.PluginRestarted("a")
	m.SetPluginState("a", StateRunning)
	m.HealthCheckFailed("a")
	m.RemovePlugin("a")
	p := m.ForPlugin("a")
	if p != nil {
		t.Fatalf("ForPlugin on nil Metrics = %v, want nil", p)
	}
	p.Delivered(1)
	p.Redelivered(1)
	p.Acked(1)
	p.SendError("x")
	p.SetQueueDepth(1)
	p.SetInFlight(1)
	p.Restarted()
	p.HealthCheckFailed()
	p.SetState(StateFailed)
}

func TestNewWithNilRegistererWorks(t *testing.T) {
	m := New(nil)
	m.Delivered("a", 2)
	if got := testutil.ToFloat64(m.deliveries.WithLabelValues("a")); got != 2 {
		t.Fatalf("deliveries = %v, want 2", got)
	}
}

func TestExposition(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := New(reg)

	m.Delivered("edged", 3)
	m.Delivered("edged", 2)
	m.Delivered("edged", 0) // ignored
	m.Redelivered("edged", 1)
	m.Acked("edged", 4)
	m.Routed(KindModule)
	m.Routed(KindModule)
	m.Routed(KindGroup)
	m.Routed("other")
	m.SendError("metamanager", "unknown_target")
	m.SetQueueDepth("edged", 7)
	m.SetInFlight("edged", 2)
	m.PluginRestarted("metamanager")
	m.HealthCheckFailed("metamanager")
	m.SetPluginState("edged", StateStarting)
	m.SetPluginState("edged", StateRunning)

	const want = `
# HELP edgehive_router_deliveries_total Messages delivered to a plugin for the first time.
# TYPE edgehive_router_deliveries_total counter
edgehive_router_deliveries_total{plugin="edged"} 5
edgehive_router_deliveries_total{plugin="metamanager"} 0
# HELP edgehive_router_redeliveries_total Messages delivered again to a plugin because they were not acknowledged (restart, upgrade, timeout).
# TYPE edgehive_router_redeliveries_total counter
edgehive_router_redeliveries_total{plugin="edged"} 1
edgehive_router_redeliveries_total{plugin="metamanager"} 0
# HELP edgehive_router_acks_total Deliveries acknowledged by a plugin.
# TYPE edgehive_router_acks_total counter
edgehive_router_acks_total{plugin="edged"} 4
edgehive_router_acks_total{plugin="metamanager"} 0
# HELP edgehive_router_messages_total Messages routed by the host, by routing kind (module, group, response).
# TYPE edgehive_router_messages_total counter
edgehive_router_messages_total{kind="group"} 1
edgehive_router_messages_total{kind="module"} 2
edgehive_router_messages_total{kind="other"} 1
edgehive_router_messages_total{kind="response"} 0
# HELP edgehive_router_send_errors_total Sends from a plugin the router refused or could not route, by reason.
# TYPE edgehive_router_send_errors_total counter
edgehive_router_send_errors_total{plugin="metamanager",reason="unknown_target"} 1
# HELP edgehive_router_queue_depth Messages waiting in a plugin's inbound queue.
# TYPE edgehive_router_queue_depth gauge
edgehive_router_queue_depth{plugin="edged"} 7
edgehive_router_queue_depth{plugin="metamanager"} 0
# HELP edgehive_router_in_flight Messages delivered to a plugin and not yet acknowledged.
# TYPE edgehive_router_in_flight gauge
edgehive_router_in_flight{plugin="edged"} 2
edgehive_router_in_flight{plugin="metamanager"} 0
# HELP edgehive_plugin_restarts_total Times the supervisor restarted a plugin process.
# TYPE edgehive_plugin_restarts_total counter
edgehive_plugin_restarts_total{plugin="edged"} 0
edgehive_plugin_restarts_total{plugin="metamanager"} 1
# HELP edgehive_plugin_health_failures_total Failed plugin health checks.
# TYPE edgehive_plugin_health_failures_total counter
edgehive_plugin_health_failures_total{plugin="edged"} 0
edgehive_plugin_health_failures_total{plugin="metamanager"} 1
# HELP edgehive_plugin_state Current plugin state: 1 for the state the plugin is in, 0 for the others.
# TYPE edgehive_plugin_state gauge
edgehive_plugin_state{plugin="edged",state="disabled"} 0
edgehive_plugin_state{plugin="edged",state="failed"} 0
edgehive_plugin_state{plugin="edged",state="restarting"} 0
edgehive_plugin_state{plugin="edged",state="running"} 1
edgehive_plugin_state{plugin="edged",state="starting"} 0
edgehive_plugin_state{plugin="edged",state="stopped"} 0
edgehive_plugin_state{plugin="edged",state="upgrading"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want)); err != nil {
		t.Fatal(err)
	}
}

func TestSetPluginStateUnknownIsResetLater(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := New(reg)
	m.SetPluginState("a", "weird")
	if got := testutil.ToFloat64(m.state.WithLabelValues("a", "weird")); got != 1 {
		t.Fatalf("weird = %v, want 1", got)
	}
	m.SetPluginState("a", StateFailed)
	for _, tc := range []struct {
		state string
		want  float64
	}{
		{"weird", 0},
		{StateFailed, 1},
		{StateRunning, 0},
	} {
		if got := testutil.ToFloat64(m.state.WithLabelValues("a", tc.state)); got != tc.want {
			t.Errorf("state %q = %v, want %v", tc.state, got, tc.want)
		}
	}
}

func TestForPluginReturnsSameHandle(t *testing.T) {
	m := New(prometheus.NewRegistry())
	var wg sync.WaitGroup
	handles := make([]*PluginMetrics, 16)
	for i := range handles {
		wg.Add(1)
		go func() {
			defer wg.Done()
			handles[i] = m.ForPlugin("edged")
			handles[i].Delivered(1)
			handles[i].SetState(StateRunning)
		}()
	}
	wg.Wait()
	for i, h := range handles {
		if h != handles[0] {
			t.Fatalf("handle %d differs from handle 0", i)
		}
	}
	if got := testutil.ToFloat64(m.deliveries.WithLabelValues("edged")); got != 16 {
		t.Fatalf("deliveries = %v, want 16", got)
	}
}

func TestRemovePlugin(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := New(reg)
	m.Delivered("gone", 1)
	m.SendError("gone", "queue_full")
	m.SetPluginState("gone", StateRunning)
	m.Delivered("kept", 1)
	m.RemovePlugin("gone")

	n, err := testutil.GatherAndCount(reg, "edgehive_router_deliveries_total", "edgehive_plugin_state", "edgehive_router_send_errors_total")
	if err != nil {
		t.Fatal(err)
	}
	if n != 1 { // only deliveries{plugin="kept"}
		t.Fatalf("series left = %d, want 1", n)
	}
}

func TestDuplicateRegistrationPanics(t *testing.T) {
	reg := prometheus.NewRegistry()
	New(reg)
	defer func() {
		if recover() == nil {
			t.Fatal("second New on the same registry did not panic")
		}
	}()
	New(reg)
}

func BenchmarkPluginHandleDelivered(b *testing.B) {
	p := New(prometheus.NewRegistry()).ForPlugin("edged")
	b.ReportAllocs()
	for b.Loop() {
		p.Delivered(1)
	}
}

func BenchmarkMetricsDelivered(b *testing.B) {
	m := New(prometheus.NewRegistry())
	b.ReportAllocs()
	for b.Loop() {
		m.Delivered("edged", 1)
	}
}
