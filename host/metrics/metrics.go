// Package metrics holds the host's Prometheus metrics: the router's delivery
// counters and queue gauges, and the supervisor's plugin state.
//
// Everything is registered on a registry the caller owns, never the global
// default one, so that tests (and a host embedded in a test binary) can build
// as many independent hosts as they like without "duplicate metrics
// collector registration" panics. There is no package-level state.
//
// A nil *Metrics (and a nil *PluginMetrics) is a valid no-op, so unit tests
// of the router and supervisor can pass nil instead of building a registry.
package metrics

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

const namespace = "edgehive"

// Plugin states reported by SetPluginState. They match the states the
// supervisor walks through and admin.PluginStatus.State.
const (
	StateStarting   = "starting"
	StateRunning    = "running"
	StateRestarting = "restarting"
	StateUpgrading  = "upgrading"
	StateFailed     = "failed"
	StateStopped    = "stopped"
	StateDisabled   = "disabled"
)

// States returns every known plugin state, in lifecycle order. A fresh slice
// is returned so callers cannot change what the package uses.
func States() []string {
	return []string{StateStarting, StateRunning, StateRestarting, StateUpgrading, StateFailed, StateStopped, StateDisabled}
}

// Kinds of routed messages counted by Routed.
const (
	KindModule   = "module"
	KindGroup    = "group"
	KindResponse = "response"
)

// Metrics is the host's set of collectors. Build it once per host with New.
type Metrics struct {
	deliveries     *prometheus.CounterVec
	redeliveries   *prometheus.CounterVec
	acks           *prometheus.CounterVec
	messages       *prometheus.CounterVec
	sendErrors     *prometheus.CounterVec
	queueDepth     *prometheus.GaugeVec
	inFlight       *prometheus.GaugeVec
	restarts       *prometheus.CounterVec
	state          *prometheus.GaugeVec
	healthFailures *prometheus.CounterVec

	// routed caches the children for the well-known kinds: Routed is called
	// once per message, and WithLabelValues hashes the label values each time.
	routed map[string]prometheus.Counter

	mu      sync.RWMutex
	plugins map[string]*PluginMetrics
}

// New creates the host metrics and registers them on reg. It panics if reg
// already holds collectors with the same names, which is a programming error
// (the same registry given to two hosts), like prometheus.MustRegister.
// A nil reg creates working but unregistered metrics.
func New(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		deliveries: newCounterVec("router", "deliveries_total",
			"Messages delivered to a plugin for the first time.", "plugin"),
		redeliveries: newCounterVec("router", "redeliveries_total",
			"Messages delivered again to a plugin because they were not acknowledged (restart, upgrade, timeout).", "plugin"),
		acks: newCounterVec("router", "acks_total",
			"Deliveries acknowledged by a plugin.", "plugin"),
		messages: newCounterVec("router", "messages_total",
			"Messages routed by the host, by routing kind (module, group, response).", "kind"),
		sendErrors: newCounterVec("router", "send_errors_total",
			"Sends from a plugin the router refused or could not route, by reason.", "plugin", "reason"),
		queueDepth: newGaugeVec("router", "queue_depth",
			"Messages waiting in a plugin's inbound queue.", "plugin"),
		inFlight: newGaugeVec("router", "in_flight",
			"Messages delivered to a plugin and not yet acknowledged.", "plugin"),
		restarts: newCounterVec("plugin", "restarts_total",
			"Times the supervisor restarted a plugin process.", "plugin"),
		state: newGaugeVec("plugin", "state",
			"Current plugin state: 1 for the state the plugin is in, 0 for the others.", "plugin", "state"),
		healthFailures: newCounterVec("plugin", "health_failures_total",
			"Failed plugin health checks.", "plugin"),
		plugins: map[string]*PluginMetrics{},
	}
	m.routed = map[string]prometheus.Counter{}
	for _, kind := range []string{KindModule, KindGroup, KindResponse} {
		m.routed[kind] = m.messages.WithLabelValues(kind)
	}
	if reg != nil {
		reg.MustRegister(m.deliveries, m.redeliveries, m.acks, m.messages, m.sendErrors,
			m.queueDepth, m.inFlight, m.restarts, m.state, m.healthFailures)
	}
	return m
}

func newCounterVec(subsystem, name, help string, labels ...string) *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Subsystem: subsystem, Name: name, Help: help}, labels)
}

func newGaugeVec(subsystem, name, help string, labels ...string) *prometheus.GaugeVec {
	return prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: namespace, Subsystem: subsystem, Name: name, Help: help}, labels)
}

// PluginMetrics is the per-plugin handle: the label children resolved once, so
// the router's hot path is a pointer dereference and an atomic add. Get it
// with Metrics.ForPlugin and keep it for the plugin's lifetime. A nil
// *PluginMetrics is a no-op.
type PluginMetrics struct {
	deliveries     prometheus.Counter
	redeliveries   prometheus.Counter
	acks           prometheus.Counter
	queueDepth     prometheus.Gauge
	inFlight       prometheus.Gauge
	restarts       prometheus.Counter
	healthFailures prometheus.Counter

	parent *Metrics
	name   string

	// stateMu guards states, the state children this plugin has reported:
	// the known states plus any unknown one it was set to, so that a later
	// SetState can reset every one of them to 0.
	stateMu sync.Mutex
	states  map[string]prometheus.Gauge
}

// ForPlugin returns the handle for plugin, creating it (and its series, at
// zero) on first use. Safe for concurrent use; returns nil when m is nil.
func (m *Metrics) ForPlugin(plugin string) *PluginMetrics {
	if m == nil {
		return nil
	}
	m.mu.RLock()
	p := m.plugins[plugin]
	m.mu.RUnlock()
	if p != nil {
		return p
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if p = m.plugins[plugin]; p != nil {
		return p
	}
	p = &PluginMetrics{
		deliveries:     m.deliveries.WithLabelValues(plugin),
		redeliveries:   m.redeliveries.WithLabelValues(plugin),
		acks:           m.acks.WithLabelValues(plugin),
		queueDepth:     m.queueDepth.WithLabelValues(plugin),
		inFlight:       m.inFlight.WithLabelValues(plugin),
		restarts:       m.restarts.WithLabelValues(plugin),
		healthFailures: m.healthFailures.WithLabelValues(plugin),
		parent:         m,
		name:           plugin,
		states:         map[string]prometheus.Gauge{},
	}
	m.plugins[plugin] = p
	return p
}

// RemovePlugin deletes every series of plugin, for a plugin removed from the
// configuration: otherwise its last values would be exported forever. Handles
// obtained earlier keep working but are no longer exported.
func (m *Metrics) RemovePlugin(plugin string) {
	if m == nil {
		return
	}
	m.mu.Lock()
	delete(m.plugins, plugin)
	m.mu.Unlock()
	match := prometheus.Labels{"plugin": plugin}
	for _, vec := range []*prometheus.MetricVec{
		m.deliveries.MetricVec, m.redeliveries.MetricVec, m.acks.MetricVec, m.sendErrors.MetricVec,
		m.queueDepth.MetricVec, m.inFlight.MetricVec, m.restarts.MetricVec, m.state.MetricVec,
		m.healthFailures.MetricVec,
	} {
		vec.DeletePartialMatch(match)
	}
}

// Delivered counts n first deliveries to the plugin.
func (p *PluginMetrics) Delivered(n int) {
	if p == nil || n <= 0 {
		return
	}
	p.deliveries.Add(float64(n))
}

// Redelivered counts n redeliveries to the plugin.
func (p *PluginMetrics) Redelivered(n int) {
	if p == nil || n <= 0 {
		return
	}
	p.redeliveries.Add(float64(n))
}

// Acked counts n acknowledgements from the plugin.
func (p *PluginMetrics) Acked(n int) {
	if p == nil || n <= 0 {
		return
	}
	p.acks.Add(float64(n))
}

// SetQueueDepth sets the number of messages queued for the plugin.
func (p *PluginMetrics) SetQueueDepth(depth int) {
	if p == nil {
		return
	}
	p.queueDepth.Set(float64(depth))
}

// SetInFlight sets the number of unacknowledged deliveries to the plugin.
func (p *PluginMetrics) SetInFlight(n int) {
	if p == nil {
		return
	}
	p.inFlight.Set(float64(n))
}

// SendError counts a send from the plugin that failed, by reason. Reasons
// should come from a small fixed set (e.g. "unknown_target", "queue_full"),
// never from error text, to keep the number of series bounded.
func (p *PluginMetrics) SendError(reason string) {
	if p == nil {
		return
	}
	p.parent.sendErrors.WithLabelValues(p.name, reason).Inc()
}

// Restarted counts a restart of the plugin's process.
func (p *PluginMetrics) Restarted() {
	if p == nil {
		return
	}
	p.restarts.Inc()
}

// HealthCheckFailed counts a failed health check of the plugin.
func (p *PluginMetrics) HealthCheckFailed() {
	if p == nil {
		return
	}
	p.healthFailures.Inc()
}

// SetState sets the plugin's state gauge to 1 for state and 0 for every other
// state. All known states are always exported, so a query such as
// edgehive_plugin_state{state="failed"} == 1 sees every plugin. An unknown
// state is exported too (rather than dropped) so a supervisor bug shows up.
func (p *PluginMetrics) SetState(state string) {
	if p == nil {
		return
	}
	p.stateMu.Lock()
	defer p.stateMu.Unlock()
	if len(p.states) == 0 {
		for _, s := range States() {
			p.states[s] = p.parent.state.WithLabelValues(p.name, s)
		}
	}
	if _, ok := p.states[state]; !ok {
		p.states[state] = p.parent.state.WithLabelValues(p.name, state)
	}
	for s, g := range p.states {
		if s == state {
			g.Set(1)
		} else {
			g.Set(0)
		}
	}
}

// The per-plugin methods of Metrics below need no nil check of their own:
// ForPlugin returns nil for a nil *Metrics, and a nil handle is a no-op.

// Delivered counts n first deliveries to plugin
// (edgehive_router_deliveries_total).
func (m *Metrics) Delivered(plugin string, n int) {
	m.ForPlugin(plugin).Delivered(n)
}

// Redelivered counts n redeliveries to plugin
// (edgehive_router_redeliveries_total).
func (m *Metrics) Redelivered(plugin string, n int) {
	m.ForPlugin(plugin).Redelivered(n)
}

// Acked counts n acknowledgements from plugin (edgehive_router_acks_total).
func (m *Metrics) Acked(plugin string, n int) {
	m.ForPlugin(plugin).Acked(n)
}

// Routed counts one routed message of kind module, group or response
// (edgehive_router_messages_total).
func (m *Metrics) Routed(kind string) {
	if m == nil {
		return
	}
	if c, ok := m.routed[kind]; ok {
		c.Inc()
		return
	}
	m.messages.WithLabelValues(kind).Inc()
}

// SendError counts a failed send from plugin, by reason
// (edgehive_router_send_errors_total).
func (m *Metrics) SendError(plugin, reason string) {
	m.ForPlugin(plugin).SendError(reason)
}

// SetQueueDepth sets plugin's inbound queue depth (edgehive_router_queue_depth).
func (m *Metrics) SetQueueDepth(plugin string, depth int) {
	m.ForPlugin(plugin).SetQueueDepth(depth)
}

// SetInFlight sets plugin's unacknowledged deliveries
// (edgehive_router_in_flight).
func (m *Metrics) SetInFlight(plugin string, n int) {
	m.ForPlugin(plugin).SetInFlight(n)
}

// PluginRestarted counts a restart of plugin (edgehive_plugin_restarts_total).
func (m *Metrics) PluginRestarted(plugin string) {
	m.ForPlugin(plugin).Restarted()
}

// SetPluginState sets edgehive_plugin_state{plugin,state}: 1 for state, 0 for
// the other states.
func (m *Metrics) SetPluginState(plugin, state string) {
	m.ForPlugin(plugin).SetState(state)
}

// HealthCheckFailed counts a failed health check of plugin
// (edgehive_plugin_health_failures_total).
func (m *Metrics) HealthCheckFailed(plugin string) {
	m.ForPlugin(plugin).HealthCheckFailed()
}
