package cloudhub

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are cloudhub's Prometheus series. One set serves a hub and its
// certificate server.
type Metrics struct {
	sessions        prometheus.Gauge
	sessionsRefused *prometheus.CounterVec
	framesRefused   *prometheus.CounterVec
	upstream        prometheus.Counter
	downstream      prometheus.Counter
	resends         prometheus.Counter
	acks            prometheus.Counter
	ackTimeouts     prometheus.Counter
	certRequests    *prometheus.CounterVec
	queueDepth      atomic.Pointer[func() int]
}

// NewMetrics makes the series and registers them on reg (nil: unregistered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		sessions: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "cloudhub", Name: "sessions",
			Help: "Edge node sessions on this replica."}),
		sessionsRefused: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "cloudhub", Name: "sessions_refused_total",
			Help: "Websocket connections refused, by reason."}, []string{"reason"}),
		framesRefused: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "cloudhub", Name: "frames_refused_total",
			Help: "Upstream frames refused or dropped, by reason (oversized, malformed, cloud_source)."}, []string{"reason"}),
		upstream: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "cloudhub", Name: "upstream_messages_total",
			Help: "Upstream messages read from nodes (keepalives included)."}),
		downstream: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "cloudhub", Name: "downstream_messages_total",
			Help: "Downstream messages written to nodes (first writes, not resends)."}),
		resends: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "cloudhub", Name: "resends_total",
			Help: "Downstream messages written again because no ACK came in time."}),
		acks: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "cloudhub", Name: "acks_total",
			Help: "Downstream messages acknowledged by their node."}),
		ackTimeouts: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "cloudhub", Name: "ack_timeouts_total",
			Help: "Messages never acknowledged after every resend (the session is closed; reconnect resyncs)."}),
		certRequests: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "cloudhub", Name: "cert_requests_total",
			Help: "Node certificate requests, by result."}, []string{"result"}),
	}
	if reg != nil {
		depth := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "cloudhub", Name: "queue_depth",
			Help: "Downstream messages queued for all nodes of this replica."}, func() float64 {
			if f := m.queueDepth.Load(); f != nil {
				return float64((*f)())
			}
			return 0
		})
		reg.MustRegister(m.sessions, m.sessionsRefused, m.framesRefused, m.upstream, m.downstream,
			m.resends, m.acks, m.ackTimeouts, m.certRequests, depth)
	}
	return m
}
