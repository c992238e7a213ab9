package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/edgehive/edgehive/cloud/cloudhub"
	"github.com/edgehive/edgehive/cloud/tunnel"
)

// kubeClient connects to the API server named by the config: a kubeconfig
// file, or the in-cluster service account when it is empty.
func kubeClient(cfg *Config) (kubernetes.Interface, *rest.Config, error) {
	var rc *rest.Config
	var err error
	if cfg.Kubeconfig != "" {
		rc, err = clientcmd.BuildConfigFromFlags("", cfg.Kubeconfig)
	} else {
		rc, err = rest.InClusterConfig()
	}
	if err != nil {
		return nil, nil, fmt.Errorf("kubernetes client config: %w", err)
	}
	rc.QPS, rc.Burst = cfg.KubeQPS, cfg.KubeBurst
	rc.UserAgent = "cloudhive/" + version
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, nil, fmt.Errorf("kubernetes client: %w", err)
	}
	return client, rc, nil
}

// clusterCA is the API server's CA (PEM), which nodes may ask for.
func clusterCA(rc *rest.Config) []byte {
	if len(rc.TLSClientConfig.CAData) > 0 {
		return rc.TLSClientConfig.CAData
	}
	if rc.TLSClientConfig.CAFile != "" {
		if b, err := os.ReadFile(rc.TLSClientConfig.CAFile); err == nil {
			return b
		}
	}
	return nil
}

// hostIPs are the addresses of this host, for the server certificate when
// advertise_addresses is empty.
func hostIPs() []net.IP {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return []net.IP{net.IPv4(127, 0, 0, 1)}
	}
	var ips []net.IP
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && !n.IP.IsLinkLocalUnicast() {
			ips = append(ips, n.IP)
		}
	}
	return ips
}

// credentials loads (or creates) the CA, the server certificate and the
// join token, retrying while the API server is not reachable.
func credentials(ctx context.Context, cfg *Config, secrets cloudhub.Secrets, logger hclog.Logger) (*cloudhub.CA, tlsPair, error) {
	ips := cfg.AdvertiseAddresses
	if len(ips) == 0 {
		ips = hostIPs()
	}
	delay := time.Second
	for {
		ca, pair, err := func() (*cloudhub.CA, tlsPair, error) {
			now := time.Now()
			ca, err := secrets.CA(ctx, now)
			if err != nil {
				return nil, tlsPair{}, err
			}
			cert, stored, err := secrets.ServerCert(ctx, ca, ips, cfg.DNSNames, now)
			if err != nil {
				return nil, tlsPair{}, err
			}
			if _, err := secrets.Token(ctx, ca, cfg.TokenTTL, now); err != nil {
				return nil, tlsPair{}, err
			}
			return ca, tlsPair{cert: cert, stored: stored}, nil
		}()
		if err == nil {
			return ca, pair, nil
		}
		logger.Warn("credentials not ready; retrying", "namespace", secrets.Namespace, "error", err, "retry_in", delay)
		select {
		case <-ctx.Done():
			return nil, tlsPair{}, fmt.Errorf("credentials: %w", errors.Join(err, ctx.Err()))
		case <-time.After(delay):
		}
		delay = min(delay*2, 30*time.Second)
	}
}

// serve runs cloudhub, the certificate service, the admin API and the
// controllers until ctx ends.
func serve(ctx context.Context, cfg *Config, ctrl controllerConfig, logger hclog.Logger) error {
	client, rc, err := kubeClient(cfg)
	if err != nil {
		return err
	}
	dyn, err := dynamic.NewForConfig(rc)
	if err != nil {
		return fmt.Errorf("kubernetes dynamic client: %w", err)
	}
	return serveWith(ctx, cfg, ctrl, client, dyn, clusterCA(rc), logger, nil)
}

// listening are the addresses cloudhive serves on, once it is ready.
type listening struct{ hub, bootstrap, admin, tunnel, connect, peer net.Addr }

// serveWith is serve with the API clients given (dyn: for custom resources);
// onReady (optional) learns the addresses once everything listens.
func serveWith(ctx context.Context, cfg *Config, ctrl controllerConfig, client kubernetes.Interface, dyn dynamic.Interface, clusterCAPEM []byte,
	logger hclog.Logger, onReady func(listening)) error {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics := cloudhub.NewMetrics(reg)
	var ready atomic.Bool

	// The admin API first, so health is visible while credentials load.
	adminLn, err := net.Listen("tcp", cfg.AdminAddr)
	if err != nil {
		return fmt.Errorf("admin: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return serveAdmin(gctx, adminLn, reg, &ready, logger.Named("admin")) })
	// An early error return still stops and waits for what was started.
	started := false
	defer func() {
		if !started {
			cancel()
			_ = g.Wait()
		}
	}()

	secrets := cloudhub.Secrets{Client: client, Namespace: cfg.Namespace}
	ca, pair, err := credentials(gctx, cfg, secrets, logger)
	if err != nil {
		return err
	}
	logger.Info("credentials ready", "namespace", cfg.Namespace, "ca_sha256", ca.CAHash(),
		"server_sans", fmt.Sprint(pair.cert.Leaf.IPAddresses, pair.cert.Leaf.DNSNames), "server_cert_stored", pair.stored)

	hubCfg := cfg.Hub
	hubCfg.ClusterCA = clusterCAPEM
	hub, err := cloudhub.New(hubCfg, cloudhub.ServerTLS(pair.cert, ca.Pool()), logger.Named("cloudhub"), metrics)
	if err != nil {
		return err
	}
	certs, err := cloudhub.NewCertServer(cloudhub.CertServerOptions{CA: ca, Server: pair.cert, Client: client,
		NodeCertValidity: cfg.NodeCertValidity, Logger: logger.Named("certs"), Metrics: metrics})
	if err != nil {
		return err
	}
	handler, runners, err := newControllers(client, dyn, hub, ctrl, logger)
	if err != nil {
		return fmt.Errorf("controllers: %w", err)
	}

	wsLn, err := cloudhub.Listen(gctx, cfg.Listen, cfg.ReusePort)
	if err != nil {
		return err
	}
	bsLn, err := cloudhub.Listen(gctx, cfg.BootstrapListen, cfg.ReusePort)
	if err != nil {
		_ = wsLn.Close()
		return err
	}
	var tunnelAddrs tunnelListening
	if cfg.Tunnel != nil {
		addrs, err := startTunnel(gctx, g, cfg, client, pair.cert, ca, logger.Named("tunnel"), tunnel.NewMetrics(reg))
		if err != nil {
			_ = wsLn.Close()
			_ = bsLn.Close()
			return err
		}
		tunnelAddrs = addrs
	}
	for _, r := range runners {
		g.Go(func() error { return r(gctx) })
	}
	g.Go(func() error { return hub.Serve(gctx, wsLn, handler) })
	g.Go(func() error { return certs.Serve(gctx, bsLn) })
	g.Go(func() error { return refreshToken(gctx, secrets, ca, cfg.TokenTTL, logger) })
	started = true
	defer cancel()
	ready.Store(true)
	logger.Info("cloudhive ready", "cloudhub", wsLn.Addr().String(), "bootstrap", bsLn.Addr().String(), "admin", adminLn.Addr().String())
	if onReady != nil {
		onReady(listening{hub: wsLn.Addr(), bootstrap: bsLn.Addr(), admin: adminLn.Addr(),
			tunnel: tunnelAddrs.node, connect: tunnelAddrs.connect, peer: tunnelAddrs.peer})
	}
	return g.Wait()
}

// tunnelListening are the tunnel's listeners' addresses (peer: nil without
// peer_listen).
type tunnelListening struct{ node, connect, peer net.Addr }

// startTunnel opens the tunnel's listeners and runs the server in g: node
// sessions with the cloud CA and server certificate cloudhub uses, CONNECTs
// from the API server verified against connect_client_ca (or a unix socket),
// the node address map from the Node objects, the pod address index, and with peer_listen the
// session Leases and the peer endpoint for the other replicas.
func startTunnel(ctx context.Context, g *errgroup.Group, cfg *Config, client kubernetes.Interface, server tls.Certificate, ca *cloudhub.CA,
	logger hclog.Logger, metrics *tunnel.Metrics) (tunnelListening, error) {
	tc := cfg.Tunnel
	var none tunnelListening
	srv, err := tunnel.New(tc.Server, logger, metrics)
	if err != nil {
		return none, err
	}
	var connectTLS *tls.Config
	if tc.ConnectClientCA != "" {
		pem, err := os.ReadFile(tc.ConnectClientCA)
		if err != nil {
			return none, fmt.Errorf("tunnel: connect_client_ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return none, fmt.Errorf("tunnel: connect_client_ca %s: no PEM certificate", tc.ConnectClientCA)
		}
		connectTLS = tunnel.ConnectTLS(server, pool)
	}
	var listeners []net.Listener
	closeAll := func() {
		for _, ln := range listeners {
			_ = ln.Close()
		}
	}
	var peerLn net.Listener
	var replicas *tunnel.Replicas
	var peerTLS *tls.Config
	if tc.PeerListen != "" {
		// Never reuse_port: each replica's peer endpoint must be its own.
		if peerLn, err = cloudhub.Listen(ctx, tc.PeerListen, false); err != nil {
			return none, fmt.Errorf("tunnel: peer_listen: %w", err)
		}
		listeners = append(listeners, peerLn)
		replicas, peerTLS, err = tunnelReplicas(cfg, client, server, ca, peerLn.Addr(), logger)
		if err != nil {
			closeAll()
			return none, err
		}
		if err := srv.UseReplicas(replicas, peerTLS); err != nil {
			closeAll()
			return none, err
		}
	}
	nodeLn, err := cloudhub.Listen(ctx, tc.Listen, cfg.ReusePort)
	if err != nil {
		closeAll()
		return none, fmt.Errorf("tunnel: %w", err)
	}
	listeners = append(listeners, nodeLn)
	var connLn net.Listener
	if path, ok := strings.CutPrefix(tc.ConnectListen, unixPrefix); ok {
		connectTLS = nil // the socket's file mode guards it
		connLn, err = listenUnixPrivate(path)
	} else {
		connLn, err = cloudhub.Listen(ctx, tc.ConnectListen, cfg.ReusePort)
	}
	if err != nil {
		closeAll()
		return none, fmt.Errorf("tunnel: connect_listen: %w", err)
	}
	g.Go(func() error { return srv.ServeNodes(ctx, nodeLn, tunnel.NodeTLS(server, ca.Pool())) })
	g.Go(func() error { return srv.ServeConnect(ctx, connLn, connectTLS) })
	// CONNECTs may name a node by its InternalIP or ExternalIP.
	g.Go(func() error { return srv.WatchNodeAddresses(ctx, client) })
	// CONNECTs may name a pod's address (pods/<p>/proxy, services/<s>/proxy).
	g.Go(func() error { return srv.WatchPods(ctx, client) })
	addrs := tunnelListening{node: nodeLn.Addr(), connect: connLn.Addr()}
	if peerLn != nil {
		serverTLS, err := tunnel.PeerServerTLS(server, ca.Pool())
		if err != nil {
			return none, err // not reached: tunnelReplicas checked the certificate
		}
		g.Go(func() error { return replicas.Run(ctx) })
		g.Go(func() error { return srv.ServePeers(ctx, peerLn, serverTLS) })
		addrs.peer = peerLn.Addr()
	}
	return addrs, nil
}

// tunnelReplicas sets up the session Leases for this replica, reachable at
// its advertised peer address, which the server certificate must cover
// (the other replicas verify it).
func tunnelReplicas(cfg *Config, client kubernetes.Interface, server tls.Certificate, ca *cloudhub.CA, bound net.Addr,
	logger hclog.Logger) (*tunnel.Replicas, *tls.Config, error) {
	advertise, err := cfg.Tunnel.peerAdvertise(cfg.AdvertiseAddresses, bound)
	if err != nil {
		return nil, nil, fmt.Errorf("tunnel: %w", err)
	}
	host, _, err := net.SplitHostPort(advertise)
	if err != nil {
		return nil, nil, fmt.Errorf("tunnel: advertise_address: %w", err)
	}
	if server.Leaf != nil {
		if err := server.Leaf.VerifyHostname(host); err != nil {
			return nil, nil, fmt.Errorf("tunnel: advertise_address %s is not in the server certificate (cloudhub.advertise_addresses, dns_names): %w", advertise, err)
		}
	}
	dialTLS, err := tunnel.PeerClientTLS(server, ca.Pool())
	if err != nil {
		return nil, nil, fmt.Errorf("tunnel: %w", err)
	}
	id := tunnel.NewReplicaID()
	replicas, err := tunnel.NewReplicas(tunnel.ReplicaConfig{Identity: id, PeerAddress: advertise, Namespace: cfg.Namespace, Client: client},
		logger.Named("replicas"))
	if err != nil {
		return nil, nil, err
	}
	logger.Info("tunnel replica", "id", id, "peer_address", advertise)
	return replicas, dialTLS, nil
}

// listenUnixPrivate listens on a unix socket at path that only this user can
// connect to: made under a temporary name, set to 0600, then renamed, so it
// is never reachable with looser permissions. A stale socket is replaced.
func listenUnixPrivate(path string) (net.Listener, error) {
	tmp := path + ".tmp"
	_ = os.Remove(tmp)
	ln, err := net.Listen("unix", tmp)
	if err != nil {
		return nil, err
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	if err := os.Chmod(tmp, 0o600); err != nil {
		_ = ln.Close()
		_ = os.Remove(tmp)
		return nil, err
	}
	if err := os.Rename(tmp, path); err != nil {
		_ = ln.Close()
		_ = os.Remove(tmp)
		return nil, err
	}
	return &unlinkListener{Listener: ln, path: path}, nil
}

// unlinkListener removes its socket file when closed.
type unlinkListener struct {
	net.Listener
	path string
}

func (l *unlinkListener) Close() error {
	err := l.Listener.Close()
	_ = os.Remove(l.path)
	return err
}

type tlsPair struct {
	cert   tls.Certificate
	stored bool
}

// refreshToken keeps the token secret valid: Token replaces it once less than
// half its lifetime is left.
func refreshToken(ctx context.Context, secrets cloudhub.Secrets, ca *cloudhub.CA, ttl time.Duration, logger hclog.Logger) error {
	every := min(ttl/4, time.Hour)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if _, err := secrets.Token(ctx, ca, ttl, time.Now()); err != nil && ctx.Err() == nil {
				logger.Warn("join token refresh failed", "error", err)
			}
		}
	}
}

func serveAdmin(ctx context.Context, ln net.Listener, reg *prometheus.Registry, ready *atomic.Bool, logger hclog.Logger) error {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !ready.Load() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, "ok\n")
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: logger.StandardLogger(&hclog.StandardLoggerOptions{ForceLevel: hclog.Debug})}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("admin: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = srv.Shutdown(sctx)
	<-errc
	return nil
}
