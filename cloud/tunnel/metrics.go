package tunnel

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the tunnel's Prometheus series.
type Metrics struct {
	sessions        prometheus.Gauge
	sessionsRefused *prometheus.CounterVec
	streams         prometheus.Gauge
	connects        *prometheus.CounterVec
	bytes           *prometheus.CounterVec
}

// NewMetrics makes the series and registers them on reg (nil: unregistered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		sessions: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "tunnel", Name: "sessions",
			Help: "Node tunnel sessions on this replica."}),
		sessionsRefused: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "tunnel", Name: "sessions_refused_total",
			Help: "Node tunnel connections refused, by reason (handshake, identity, setup, shutdown)."}, []string{"reason"}),
		streams: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "tunnel", Name: "streams",
			Help: "Proxied connections open through node tunnels."}),
		connects: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "tunnel", Name: "connects_total",
			Help: "CONNECT requests, by result (established, direct, direct_failed, method, target, port, unknown_node, no_session, stream_limit, edge_refused, internal; with several replicas: forwarded, no_holder, peer_unreachable, peer_refused)."},
			[]string{"result"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "tunnel", Name: "bytes_total",
			Help: "Bytes carried through node tunnels, by direction (to_node, from_node)."}, []string{"direction"}),
	}
	if reg != nil {
		reg.MustRegister(m.sessions, m.sessionsRefused, m.streams, m.connects, m.bytes)
	}
	return m
}
