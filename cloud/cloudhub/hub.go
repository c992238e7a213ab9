// Package cloudhub is cloudhive's end of the edge link, wire-compatible with
// KubeEdge's cloudhub: a websocket server with mutual TLS where every edge
// node holds one session, per-node ordered send queues with stop-and-wait
// delivery of messages that carry a resourceVersion, keepalive timeouts, and
// the certificate bootstrap service with join tokens. Its credentials live in
// Kubernetes Secrets only, so replicas share nothing else.
package cloudhub

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/hashicorp/go-hclog"

	"github.com/edgehive/edgehive/cloud/nodelink"
	"github.com/edgehive/edgehive/internal/nodename"
	"github.com/edgehive/edgehive/sdk"
)

// Defaults, from KubeEdge's cloudhub where it has one.
const (
	DefaultListen           = "0.0.0.0:10000"
	DefaultBootstrapListen  = "0.0.0.0:10002"
	DefaultKeepaliveTimeout = 30 * time.Second
	DefaultNodeLimit        = 1000
	DefaultMaxFrameBytes    = 8 << 20
	DefaultWriteTimeout     = 30 * time.Second
	DefaultAckTimeout       = 5 * time.Second
	DefaultAckRetries       = 4
	DefaultQueueSize        = 256
)

// Config tunes the websocket side of the hub.
type Config struct {
	// KeepaliveTimeout closes a session that sent no keepalive for this long.
	KeepaliveTimeout time.Duration
	// NodeLimit is the most sessions this replica holds.
	NodeLimit int
	// MaxFrameBytes is the largest upstream frame read; a larger one closes
	// its connection (close code 1009) without being read whole.
	MaxFrameBytes int64
	// WriteTimeout bounds one frame write.
	WriteTimeout time.Duration
	// AckTimeout is how long a message with a resourceVersion waits for its
	// ACK before it is written again (same msg_id); after AckRetries resends
	// without an ACK the session is closed and the node, on reconnect, is
	// resynced from the API.
	AckTimeout time.Duration
	AckRetries int
	// QueueSize bounds each node's send queue; Send blocks while it is full.
	QueueSize int
	// ClusterCA (PEM) answers the edge's "k8s/ca.crt" query; empty answers "".
	ClusterCA []byte
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{
		KeepaliveTimeout: DefaultKeepaliveTimeout,
		NodeLimit:        DefaultNodeLimit,
		MaxFrameBytes:    DefaultMaxFrameBytes,
		WriteTimeout:     DefaultWriteTimeout,
		AckTimeout:       DefaultAckTimeout,
		AckRetries:       DefaultAckRetries,
		QueueSize:        DefaultQueueSize,
	}
}

// Validate reports every bad value at once.
func (c Config) Validate() error {
	var errs []error
	if c.KeepaliveTimeout <= 0 {
		errs = append(errs, errors.New("keepalive timeout must be positive"))
	}
	if c.NodeLimit <= 0 {
		errs = append(errs, errors.New("node limit must be positive"))
	}
	if c.MaxFrameBytes < 1024 {
		errs = append(errs, errors.New("max frame bytes must be at least 1024"))
	}
	if c.WriteTimeout <= 0 {
		errs = append(errs, errors.New("write timeout must be positive"))
	}
	if c.AckTimeout <= 0 {
		errs = append(errs, errors.New("ack timeout must be positive"))
	}
	if c.AckRetries < 0 {
		errs = append(errs, errors.New("ack retries must not be negative"))
	}
	if c.QueueSize <= 0 {
		errs = append(errs, errors.New("queue size must be positive"))
	}
	return errors.Join(errs...)
}

// ServerTLS is the websocket listener's TLS (wire reference §3): TLS 1.2 with
// KubeEdge's ECDHE-ECDSA AEAD suites, or 1.3; a client certificate from the
// cloud CA with clientAuth is required.
func ServerTLS(server tls.Certificate, caPool *x509.CertPool) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{server},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    caPool,
		CipherSuites: []uint16{
			tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
			tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
		},
		// Gorilla speaks HTTP/1.1 only.
		NextProtos: []string{"http/1.1"},
	}
}

// Session end causes.
var (
	errReplaced         = errors.New("replaced by a newer session of the node")
	errKeepaliveTimeout = errors.New("keepalive timeout")
	errShutdown         = errors.New("cloudhub shutting down")
	errAckTimeout       = errors.New("message not acknowledged")
	errNodeLimit        = errors.New("node limit reached")
)

// Hub is the websocket server and the nodelink.Sender.
type Hub struct {
	cfg      Config
	tls      *tls.Config
	handler  nodelink.Handler
	logger   hclog.Logger
	metrics  *Metrics
	upgrader websocket.Upgrader

	mu       sync.Mutex
	sessions map[string]*session // owned under mu: the live session per node
	closed   bool                // under mu: Serve has ended, attach refuses
	running  sync.WaitGroup      // every session goroutine
}

var _ nodelink.Sender = (*Hub)(nil)

// New builds a hub; tlsCfg is usually ServerTLS(...). It neither listens
// nor has a handler yet, so controllers can be built with the hub as their
// Sender before Serve.
func New(cfg Config, tlsCfg *tls.Config, logger hclog.Logger, metrics *Metrics) (*Hub, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("cloudhub: %w", err)
	}
	if tlsCfg == nil {
		return nil, errors.New("cloudhub: TLS config is required")
	}
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	if metrics == nil {
		metrics = NewMetrics(nil)
	}
	h := &Hub{
		cfg: cfg, tls: tlsCfg, logger: logger, metrics: metrics,
		sessions: map[string]*session{},
		upgrader: websocket.Upgrader{
			HandshakeTimeout: 30 * time.Second,
			ReadBufferSize:   4096,
			WriteBufferSize:  4096,
			// Shared write buffers keep idle sessions small.
			WriteBufferPool: &sync.Pool{},
		},
	}
	depth := h.queueDepth
	metrics.queueDepth.Store(&depth)
	return h, nil
}

// Serve serves websocket sessions on ln (plain TCP; TLS is added here) until
// ctx ends, delivering what nodes send to handler; then it closes every
// session and waits for them. Call it once.
func (h *Hub) Serve(ctx context.Context, ln net.Listener, handler nodelink.Handler) error {
	if handler == nil {
		return errors.New("cloudhub: a handler is required")
	}
	// Set before the server starts: every session goroutine sees it.
	h.handler = handler
	srv := &http.Server{
		Handler:           http.HandlerFunc(h.serveHTTP),
		ReadHeaderTimeout: 30 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          h.logger.StandardLogger(&hclog.StandardLoggerOptions{ForceLevel: hclog.Debug}),
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	h.logger.Info("cloudhub listening", "address", ln.Addr().String())
	err := serveUntil(ctx, srv, tls.NewListener(ln, h.tls))
	h.mu.Lock()
	h.closed = true
	for _, s := range h.sessions {
		s.cancel(errShutdown)
	}
	h.mu.Unlock()
	h.running.Wait()
	return err
}

// Connected implements nodelink.Sender.
func (h *Hub) Connected(node string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	_, ok := h.sessions[node]
	return ok
}

// Sessions returns the number of live sessions.
func (h *Hub) Sessions() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.sessions)
}

// Send implements nodelink.Sender. The message is copied; the queue keeps
// Send's order; a full queue blocks until ctx ends.
func (h *Hub) Send(ctx context.Context, node string, msg *sdk.Message) error {
	if msg == nil {
		return errors.New("cloudhub: nil message")
	}
	h.mu.Lock()
	s := h.sessions[node]
	h.mu.Unlock()
	if s == nil {
		return fmt.Errorf("send to %s: %w", node, nodelink.ErrNotConnected)
	}
	cp := *msg
	select {
	case s.queue <- &cp:
		return nil
	case <-s.ctx.Done():
		return fmt.Errorf("send to %s: %w", node, nodelink.ErrNotConnected)
	case <-ctx.Done():
		return fmt.Errorf("send to %s: queue full: %w", node, ctx.Err())
	}
}

func (h *Hub) queueDepth() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, s := range h.sessions {
		n += len(s.queue)
	}
	return n
}

// refuse answers a connection that gets no session.
func (h *Hub) refuse(w http.ResponseWriter, r *http.Request, code int, reason, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	h.metrics.sessionsRefused.WithLabelValues(reason).Inc()
	h.logger.Warn("connection refused", "remote", r.RemoteAddr, "node", r.Header.Get("node_id"), "status", code, "reason", msg)
	http.Error(w, msg, code)
}

func (h *Hub) serveHTTP(w http.ResponseWriter, r *http.Request) {
	node := r.Header.Get("node_id")
	switch {
	case !nodename.Valid(node):
		h.refuse(w, r, http.StatusBadRequest, "bad_headers", "node_id header %q is not a node name", node)
		return
	case !strings.EqualFold(r.Header.Get("ConnectionUse"), "msg"):
		h.refuse(w, r, http.StatusBadRequest, "bad_headers", "ConnectionUse header must be msg")
		return
	case r.TLS == nil || len(r.TLS.PeerCertificates) == 0:
		h.refuse(w, r, http.StatusForbidden, "no_certificate", "a client certificate is required")
		return
	}
	if cn := r.TLS.PeerCertificates[0].Subject.CommonName; cn != nodeCommonPrefix+node {
		h.refuse(w, r, http.StatusForbidden, "cn_mismatch", "client certificate %q is not for node %q", cn, node)
		return
	}
	if !h.hasRoom(node) {
		h.refuse(w, r, http.StatusServiceUnavailable, "node_limit", "%v (%d)", errNodeLimit, h.cfg.NodeLimit)
		return
	}
	conn, err := h.upgrader.Upgrade(w, r, nil)
	if err != nil {
		h.metrics.sessionsRefused.WithLabelValues("upgrade").Inc()
		h.logger.Warn("websocket upgrade failed", "node", node, "remote", r.RemoteAddr, "error", err)
		return
	}
	// The session ends by its own cancel (with a cause), not the request's.
	s := newSession(context.WithoutCancel(r.Context()), node, conn, h.cfg.QueueSize, h.logger.With("node", node, "remote", r.RemoteAddr))
	prev, err := h.attach(s)
	if err != nil {
		code := websocket.CloseTryAgainLater
		if errors.Is(err, errShutdown) {
			code = websocket.CloseGoingAway
		} else {
			h.metrics.sessionsRefused.WithLabelValues("node_limit").Inc()
		}
		_ = conn.WriteControl(websocket.CloseMessage,
			websocket.FormatCloseMessage(code, err.Error()), time.Now().Add(time.Second))
		_ = conn.Close()
		return
	}
	defer h.running.Done() // added by attach
	h.run(s, prev)
}

func (h *Hub) hasRoom(node string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	_, replaces := h.sessions[node]
	return replaces || len(h.sessions) < h.cfg.NodeLimit
}

// attach makes s the node's session and returns the one it replaces.
func (h *Hub) attach(s *session) (*session, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, errShutdown
	}
	prev := h.sessions[s.node]
	if prev == nil && len(h.sessions) >= h.cfg.NodeLimit {
		return nil, errNodeLimit
	}
	h.sessions[s.node] = s
	h.running.Add(1) // under mu, before Serve can see closed and Wait
	if prev == nil {
		h.metrics.sessions.Inc()
	}
	return prev, nil
}

// detach removes s unless a newer session replaced it.
func (h *Hub) detach(s *session) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.sessions[s.node] == s {
		delete(h.sessions, s.node)
		h.metrics.sessions.Dec()
	}
}
