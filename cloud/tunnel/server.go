// Package tunnel gives kube-apiserver a path to every edge node's kubelet API
// and to the pods on it through cloudhive: nodes keep an mTLS tunnel session
// to cloudhive, and the API server's egress selector sends HTTP CONNECT
// requests for <node>:<port> or <pod ip>:<port> that are carried as streams
// over that node's session. See README.md.
package tunnel

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/yamux"

	"github.com/edgehive/edgehive/internal/nodename"
	"github.com/edgehive/edgehive/internal/tunnelwire"
)

// Defaults of the tunnel block.
const (
	DefaultListen            = "0.0.0.0:10004"
	DefaultConnectListen     = "127.0.0.1:10005"
	DefaultMaxStreamsPerNode = 64
	DefaultKubeletPort       = 10250
)

const (
	nodeCommonPrefix = "system:node:"
	handshakeTimeout = 30 * time.Second
	// streamSetupTimeout bounds opening a stream and the edge's answer.
	streamSetupTimeout = 15 * time.Second
)

// Config tunes the server.
type Config struct {
	// MaxStreamsPerNode bounds the CONNECTs in flight to one node.
	MaxStreamsPerNode int
	// AllowedPorts are the ports a CONNECT to a node may name; each reaches
	// the node's local kubelet address. A CONNECT to a pod address may name
	// any port.
	AllowedPorts []int
	// DirectDial: a CONNECT to an IP address that is neither a node's nor a
	// pod's on a node with a tunnel session is dialled by cloudhive itself
	// (any port) instead of refused with 502.
	DirectDial bool
}

// DefaultConfig is the kubelet port and 64 streams per node.
func DefaultConfig() Config {
	return Config{MaxStreamsPerNode: DefaultMaxStreamsPerNode, AllowedPorts: []int{DefaultKubeletPort}}
}

// Validate reports every bad value.
func (c Config) Validate() error {
	var errs []error
	if c.MaxStreamsPerNode <= 0 {
		errs = append(errs, fmt.Errorf("max_streams_per_node must be positive, not %d", c.MaxStreamsPerNode))
	}
	if len(c.AllowedPorts) == 0 {
		errs = append(errs, errors.New("allowed_ports is empty"))
	}
	for _, p := range c.AllowedPorts {
		if p < 1 || p > 65535 {
			errs = append(errs, fmt.Errorf("allowed_ports: %d is not a port", p))
		}
	}
	return errors.Join(errs...)
}

// NodeTLS is the node listener's TLS: a client certificate from the cloud CA
// (the one cloudhub trusts) and the tunnel's ALPN name are required; older
// edges' ProtocolV1 is still accepted (their streams reach the kubelet
// only).
func NodeTLS(server tls.Certificate, caPool *x509.CertPool) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{server},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    caPool,
		NextProtos:   []string{tunnelwire.Protocol, tunnelwire.ProtocolV1},
	}
}

// ConnectTLS is the CONNECT listener's TLS: the API server presents a client
// certificate signed by clientCAs.
func ConnectTLS(server tls.Certificate, clientCAs *x509.CertPool) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{server},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    clientCAs,
		// CONNECT is HTTP/1.1 only here.
		NextProtos: []string{"http/1.1"},
	}
}

// Server is the node session registry and the CONNECT proxy.
type Server struct {
	cfg     Config
	logger  hclog.Logger
	metrics *Metrics

	mu         sync.Mutex
	sessions   map[string]*nodeSession        // under mu: the live session per node
	addrOwners map[string]map[string]struct{} // under mu: IP address → the nodes that list it
	nodeAddrs  map[string][]string            // under mu: node → the IP addresses it lists
	pods       podLookup                      // under mu: set by WatchPods; nil: no pod targets
	closed     bool                           // under mu: ServeNodes ended
	replicas   *Replicas                      // under mu: set by UseReplicas; nil: one replica, no forwarding
	peerTLS    *tls.Config                    // under mu: for dialling other replicas' peer endpoints
	running    sync.WaitGroup                 // session goroutines
}

// nodeSession is one node's tunnel session; slots counts its open streams.
type nodeSession struct {
	node   string
	sess   *yamux.Session
	slots  chan struct{}
	remote string
	// v1: the node speaks tunnelwire.ProtocolV1, whose streams carry no
	// target (they all reach the kubelet).
	v1 bool
}

// New builds a server; it does not listen yet. logger and metrics may be nil.
func New(cfg Config, logger hclog.Logger, metrics *Metrics) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("tunnel: %w", err)
	}
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	if metrics == nil {
		metrics = NewMetrics(nil)
	}
	return &Server{cfg: cfg, logger: logger, metrics: metrics, sessions: map[string]*nodeSession{},
		addrOwners: map[string]map[string]struct{}{}, nodeAddrs: map[string][]string{}}, nil
}

// Connected reports whether node has a live tunnel session.
func (s *Server) Connected(node string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.sessions[node]
	return ok
}

// Streams is the number of streams open to node.
func (s *Server) Streams(node string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ns := s.sessions[node]; ns != nil {
		return len(ns.slots)
	}
	return 0
}

// SetNodeAddresses records the IP addresses (InternalIP, ExternalIP, from
// the Node object) under which the API server may name node in a CONNECT;
// nil forgets them. An address that two nodes claim maps to neither, so a
// node cannot draw another node's traffic by claiming its address.
func (s *Server) SetNodeAddresses(node string, addrs []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, a := range s.nodeAddrs[node] {
		delete(s.addrOwners[a], node)
		if len(s.addrOwners[a]) == 0 {
			delete(s.addrOwners, a)
		}
	}
	delete(s.nodeAddrs, node)
	var kept []string
	for _, a := range addrs {
		ip := net.ParseIP(a)
		if ip == nil || slices.Contains(kept, ip.String()) {
			continue
		}
		a = ip.String()
		kept = append(kept, a)
		if s.addrOwners[a] == nil {
			s.addrOwners[a] = map[string]struct{}{}
		}
		s.addrOwners[a][node] = struct{}{}
	}
	if len(kept) > 0 {
		s.nodeAddrs[node] = kept
	}
}

// resolve maps a CONNECT host to a node name: an IP address through the
// address map (one owner only), anything else as the node's name.
func (s *Server) resolve(host string) (node string, session *nodeSession) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ip := net.ParseIP(host); ip != nil {
		owners := s.addrOwners[ip.String()]
		if len(owners) != 1 {
			return "", nil
		}
		for n := range owners {
			node = n
		}
		return node, s.sessions[node]
	}
	if !nodename.Valid(host) {
		return "", nil
	}
	return host, s.sessions[host]
}

// resolvePod maps a CONNECT host that is a pod's address (WatchPods) to the
// pod's node.
func (s *Server) resolvePod(host string) (ip netip.Addr, node string, session *nodeSession) {
	ip, err := netip.ParseAddr(host)
	if err != nil || ip.Zone() != "" {
		return netip.Addr{}, "", nil
	}
	ip = ip.Unmap()
	s.mu.Lock()
	pods := s.pods
	s.mu.Unlock()
	if pods == nil {
		return netip.Addr{}, "", nil
	}
	node, ok := pods.nodeOfPod(ip)
	if !ok || !nodename.Valid(node) {
		return netip.Addr{}, "", nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return ip, node, s.sessions[node]
}

// unclaimed: host is an IP address that no Node object lists.
func (s *Server) unclaimed(host string) bool {
	ip := net.ParseIP(host)
	if ip == nil {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.addrOwners[ip.String()]) == 0
}

// ServeNodes accepts node tunnel sessions on ln (plain TCP; tlsCfg, usually
// NodeTLS, is added here) until ctx ends; then it closes every session and
// waits for them.
func (s *Server) ServeNodes(ctx context.Context, ln net.Listener, tlsCfg *tls.Config) error {
	if tlsCfg == nil || tlsCfg.ClientAuth != tls.RequireAndVerifyClientCert {
		return errors.New("tunnel: the node listener needs TLS with verified client certificates")
	}
	s.logger.Info("tunnel listening for nodes", "address", ln.Addr().String())
	stop := context.AfterFunc(ctx, func() { _ = ln.Close() })
	defer stop()
	var err error
	for {
		var c net.Conn
		c, err = ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				err = nil
			} else {
				err = fmt.Errorf("tunnel: accept: %w", err)
			}
			break
		}
		s.running.Add(1)
		go func() {
			defer s.running.Done()
			s.serveNode(ctx, tls.Server(c, tlsCfg))
		}()
	}
	s.mu.Lock()
	s.closed = true
	for _, ns := range s.sessions {
		_ = ns.sess.Close()
	}
	s.mu.Unlock()
	s.running.Wait()
	return err
}

// serveNode authenticates one connection and serves its session until it
// ends.
func (s *Server) serveNode(ctx context.Context, conn *tls.Conn) {
	remote := conn.RemoteAddr().String()
	hctx, cancel := context.WithTimeout(ctx, handshakeTimeout)
	err := conn.HandshakeContext(hctx)
	cancel()
	if err != nil {
		s.metrics.sessionsRefused.WithLabelValues("handshake").Inc()
		s.logger.Warn("tunnel handshake failed", "remote", remote, "error", err)
		_ = conn.Close()
		return
	}
	st := conn.ConnectionState()
	node, v1, err := nodeIdentity(st)
	if err != nil {
		s.metrics.sessionsRefused.WithLabelValues("identity").Inc()
		s.logger.Warn("tunnel session refused", "remote", remote, "error", err)
		_ = conn.Close()
		return
	}
	logger := s.logger.With("node", node, "remote", remote)
	// The cloud opens the streams: it is the yamux client.
	sess, err := yamux.Client(conn, tunnelwire.YamuxConfig(logger.Named("yamux")))
	if err != nil {
		s.metrics.sessionsRefused.WithLabelValues("setup").Inc()
		logger.Error("tunnel session setup failed", "error", err)
		_ = conn.Close()
		return
	}
	ns := &nodeSession{node: node, sess: sess, slots: make(chan struct{}, s.cfg.MaxStreamsPerNode), remote: remote, v1: v1}
	prev, err := s.attach(ns)
	if err != nil {
		s.metrics.sessionsRefused.WithLabelValues("shutdown").Inc()
		logger.Warn("tunnel session refused", "error", err)
		_ = sess.Close()
		return
	}
	if prev != nil {
		logger.Info("tunnel session replaces the previous one", "previous_remote", prev.remote)
		_ = prev.sess.Close()
	}
	logger.Info("tunnel session up", "protocol", st.NegotiatedProtocol)
	// A node does not open streams; any it tries are reset.
	go func() {
		for {
			st, err := sess.AcceptStream()
			if err != nil {
				return
			}
			_ = st.Close()
		}
	}()
	select {
	case <-sess.CloseChan():
	case <-ctx.Done():
		_ = sess.Close()
	}
	s.detach(ns)
	logger.Info("tunnel session down")
}

// nodeIdentity is the node a verified client certificate speaks for, and
// whether it speaks the older ProtocolV1.
func nodeIdentity(st tls.ConnectionState) (string, bool, error) {
	if st.NegotiatedProtocol != tunnelwire.Protocol && st.NegotiatedProtocol != tunnelwire.ProtocolV1 {
		return "", false, fmt.Errorf("ALPN %q, want %q", st.NegotiatedProtocol, tunnelwire.Protocol)
	}
	if len(st.VerifiedChains) == 0 || len(st.PeerCertificates) == 0 {
		return "", false, errors.New("no verified client certificate")
	}
	cn := st.PeerCertificates[0].Subject.CommonName
	node, ok := strings.CutPrefix(cn, nodeCommonPrefix)
	if !ok || !nodename.Valid(node) {
		return "", false, fmt.Errorf("client certificate %q is not a node's (CN %s<name>)", cn, nodeCommonPrefix)
	}
	return node, st.NegotiatedProtocol == tunnelwire.ProtocolV1, nil
}

var errShutdown = errors.New("tunnel server shutting down")

func (s *Server) attach(ns *nodeSession) (*nodeSession, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, errShutdown
	}
	prev := s.sessions[ns.node]
	s.sessions[ns.node] = ns
	if prev == nil {
		s.metrics.sessions.Inc()
	}
	if s.replicas != nil {
		s.replicas.mark(ns.node, intentClaim)
	}
	return prev, nil
}

func (s *Server) detach(ns *nodeSession) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sessions[ns.node] == ns {
		delete(s.sessions, ns.node)
		s.metrics.sessions.Dec()
		if s.replicas != nil {
			s.replicas.mark(ns.node, intentCheck)
		}
	}
}

// ServeConnect serves the CONNECT proxy on ln until ctx ends. With tlsCfg
// (usually ConnectTLS) clients must present a verified certificate; without
// it (a unix socket, guarded by its file mode) any client is served.
func (s *Server) ServeConnect(ctx context.Context, ln net.Listener, tlsCfg *tls.Config) error {
	if tlsCfg != nil {
		if tlsCfg.ClientAuth != tls.RequireAndVerifyClientCert {
			return errors.New("tunnel: the CONNECT listener's TLS must require verified client certificates")
		}
		ln = tls.NewListener(ln, tlsCfg)
	} else if ln.Addr().Network() != "unix" {
		return errors.New("tunnel: a TCP CONNECT listener needs TLS with client certificates")
	}
	return s.serveHTTP(ctx, ln, "CONNECT proxy", false)
}

// serveHTTP serves CONNECTs on ln until ctx ends; forwarded marks the peer
// listener, whose CONNECTs come from other replicas.
func (s *Server) serveHTTP(ctx context.Context, ln net.Listener, name string, forwarded bool) error {
	var conns sync.WaitGroup // hijacked connections
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			conns.Add(1)
			defer conns.Done()
			s.serveConnect(ctx, w, r, forwarded)
		}),
		ReadHeaderTimeout: 30 * time.Second,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          s.logger.StandardLogger(&hclog.StandardLoggerOptions{ForceLevel: hclog.Debug}),
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	s.logger.Info("tunnel "+name+" listening", "address", ln.Addr().String())
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	var err error
	select {
	case err = <-errc:
		err = fmt.Errorf("tunnel: %s: %w", name, err)
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_ = srv.Shutdown(sctx)
		cancel()
		<-errc
	}
	conns.Wait() // each ends with ctx
	return err
}

func (s *Server) refuse(w http.ResponseWriter, r *http.Request, code int, result, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	s.metrics.connects.WithLabelValues(result).Inc()
	s.logger.Warn("CONNECT refused", "remote", r.RemoteAddr, "target", r.URL.Host, "status", code, "reason", msg)
	http.Error(w, msg, code)
}

func (s *Server) serveConnect(ctx context.Context, w http.ResponseWriter, r *http.Request, forwarded bool) {
	if r.Method != http.MethodConnect {
		w.Header().Set("Allow", http.MethodConnect)
		s.refuse(w, r, http.StatusMethodNotAllowed, "method", "only CONNECT is served here")
		return
	}
	// The target is the request's authority; kube-apiserver sends
	// "Host: 127.0.0.1" beside it, which says nothing.
	target := r.URL.Host
	if target == "" {
		target = r.Host
	}
	host, portStr, err := net.SplitHostPort(target)
	if err != nil {
		s.refuse(w, r, http.StatusBadRequest, "target", "CONNECT target %q is not host:port", target)
		return
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 1 || port > 65535 {
		s.refuse(w, r, http.StatusBadRequest, "target", "CONNECT target %q has no port number", target)
		return
	}
	// A node by name or address reaches its kubelet, on an allowed port; an
	// address of a pod on a node reaches that pod, on any port.
	dest := tunnelwire.KubeletTarget()
	node, ns := s.resolve(host)
	if node != "" {
		if !slices.Contains(s.cfg.AllowedPorts, port) {
			s.refuse(w, r, http.StatusForbidden, "port", "port %d is not served through the tunnel (allowed: %v)", port, s.cfg.AllowedPorts)
			return
		}
	} else if ip, podNode, podSession := s.resolvePod(host); podNode != "" {
		dest, node, ns = tunnelwire.PodTarget(netip.AddrPortFrom(ip, uint16(port))), podNode, podSession
	}
	if node == "" {
		if s.cfg.DirectDial && !forwarded && s.unclaimed(host) {
			s.direct(ctx, w, r, target)
			return
		}
		s.refuse(w, r, http.StatusBadGateway, "unknown_node", "%q is neither a node name nor a known node or pod address", host)
		return
	}
	if ns == nil {
		replicas, dialTLS := s.replicaSet()
		var h holder
		self := ""
		if replicas != nil && !forwarded {
			h, self = replicas.lookup(node, time.Now()), replicas.Identity()
		}
		rt, why := decideRoute(false, forwarded, replicas != nil, h, self)
		switch {
		case rt == routeForward:
			// The holder resolves the same target again (from its own
			// caches) and is never asked to forward it further.
			fwd := net.JoinHostPort(node, strconv.Itoa(port))
			if !dest.IsKubelet() {
				fwd = dest.String()
			}
			s.forward(ctx, w, r, node, fwd, h, self, dialTLS)
		case !dest.IsKubelet() && s.cfg.DirectDial && !forwarded:
			// A pod on a node without a tunnel session anywhere (one the
			// cloud reaches directly), as before pod targets existed.
			s.direct(ctx, w, r, target)
		default:
			result := "no_session"
			if replicas != nil && !forwarded {
				result = "no_holder"
			}
			s.refuse(w, r, http.StatusServiceUnavailable, result, "node %s: %s", node, why)
		}
		return
	}
	if ns.v1 && !dest.IsKubelet() {
		s.refuse(w, r, http.StatusBadGateway, "edge_refused", "node %s: its tunnel speaks %s, which reaches only the kubelet (pod %s); upgrade edgehive",
			node, tunnelwire.ProtocolV1, dest)
		return
	}
	select {
	case ns.slots <- struct{}{}:
	default:
		s.refuse(w, r, http.StatusTooManyRequests, "stream_limit", "node %s has %d tunnel streams open, the limit", node, cap(ns.slots))
		return
	}
	defer func() { <-ns.slots }()

	stream, err := ns.sess.OpenStream()
	if err != nil {
		s.refuse(w, r, http.StatusServiceUnavailable, "no_session", "node %s: open stream: %v", node, err)
		return
	}
	if !ns.v1 {
		_ = stream.SetWriteDeadline(time.Now().Add(streamSetupTimeout))
		err = tunnelwire.WriteTarget(stream, dest)
		_ = stream.SetWriteDeadline(time.Time{})
		if err != nil {
			_ = stream.Close()
			s.refuse(w, r, http.StatusServiceUnavailable, "no_session", "node %s: %v", node, err)
			return
		}
	}
	br, err := tunnelwire.ReadStatus(stream, time.Now().Add(streamSetupTimeout))
	if errors.Is(err, tunnelwire.ErrDenied) {
		_ = stream.Close()
		s.refuse(w, r, http.StatusForbidden, "edge_denied", "node %s: %s: %v", node, dest, err)
		return
	}
	if err != nil {
		_ = stream.Close()
		s.refuse(w, r, http.StatusBadGateway, "edge_refused", "node %s: %s: %v", node, dest, err)
		return
	}
	conn, clientSrc, ok := s.established(w, r, stream)
	if !ok {
		return
	}
	s.metrics.connects.WithLabelValues("established").Inc()
	s.metrics.streams.Inc()
	defer s.metrics.streams.Dec()
	s.logger.Debug("CONNECT established", "node", node, "target", dest.String(), "port", port, "remote", r.RemoteAddr, "stream", stream.StreamID(),
		"forwarded_by", r.Header.Get(ForwardedHeader))
	// Bytes the client sent right behind the request sit in clientSrc;
	// what the edge sent behind its status line sits in br.
	up, down := pipe(ctx, conn, clientSrc, stream, br)
	s.metrics.bytes.WithLabelValues("to_node").Add(float64(up))
	s.metrics.bytes.WithLabelValues("from_node").Add(float64(down))
	s.logger.Debug("CONNECT closed", "node", node, "target", dest.String(), "stream", stream.StreamID(), "bytes_up", up, "bytes_down", down)
}

// direct serves a CONNECT to an address that is no node's by dialling it
// from cloudhive (direct_dial): kube-apiserver sends its webhook and
// aggregated-API calls through the same egress selection as its kubelet
// calls.
func (s *Server) direct(ctx context.Context, w http.ResponseWriter, r *http.Request, target string) {
	dctx, cancel := context.WithTimeout(ctx, streamSetupTimeout)
	var d net.Dialer
	upstream, err := d.DialContext(dctx, "tcp", target)
	cancel()
	if err != nil {
		s.refuse(w, r, http.StatusBadGateway, "direct_failed", "dial %s: %v", target, err)
		return
	}
	conn, clientSrc, ok := s.established(w, r, upstream)
	if !ok {
		return
	}
	s.metrics.connects.WithLabelValues("direct").Inc()
	s.logger.Debug("CONNECT dialled directly", "target", target, "remote", r.RemoteAddr)
	tunnelwire.Pipe(ctx, conn, clientSrc, upstream)
}

// established takes the client's connection over and answers 200; it
// returns the connection and the reader holding what the client sent behind
// its request. When that fails, upstream and the client are closed.
func (s *Server) established(w http.ResponseWriter, r *http.Request, upstream io.Closer) (net.Conn, io.Reader, bool) {
	conn, bufrw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		_ = upstream.Close()
		s.refuse(w, r, http.StatusInternalServerError, "internal", "hijack: %v", err)
		return nil, nil, false
	}
	if _, err := bufrw.WriteString("HTTP/1.1 200 Connection established\r\n\r\n"); err == nil {
		err = bufrw.Flush()
	}
	if err != nil {
		_ = upstream.Close()
		_ = conn.Close()
		return nil, nil, false
	}
	return conn, bufrw.Reader, true
}

// pipe is tunnelwire.Pipe with buffered readers on both sides.
func pipe(ctx context.Context, client net.Conn, clientSrc io.Reader, stream net.Conn, streamSrc io.Reader) (int64, int64) {
	return tunnelwire.Pipe(ctx, client, clientSrc, &readerConn{Conn: stream, r: streamSrc})
}

// readerConn reads through r (a buffer in front of Conn).
type readerConn struct {
	net.Conn
	r io.Reader
}

func (c *readerConn) Read(p []byte) (int, error) { return c.r.Read(p) }
