package edgehub

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/yamux"

	"github.com/edgehive/edgehive/internal/tunnelwire"
)

// Tunnel timeouts: the dial and TLS handshake to cloudhive's tunnel
// listener, and each dial of the local kubelet (shorter than the 15 s
// cloudhive waits for the node's answer, so the API server hears why).
const (
	tunnelDialTimeout  = 30 * time.Second
	kubeletDialTimeout = 10 * time.Second
)

// tunnelLoop keeps the tunnel session to cloudhive up until ctx ends: dial
// with the node certificate, serve the streams cloudhive opens (each piped to
// local_kubelet or to a pod address in pod_cidrs), and after a failure wait
// with the link's back-off.
func (e *EdgeHub) tunnelLoop(ctx context.Context) {
	logger := e.logger.Named("tunnel").With("server", e.cfg.Tunnel.Server, "local_kubelet", e.cfg.Tunnel.LocalKubelet)
	backoff := e.minBackoff
	for ctx.Err() == nil {
		sess, err := e.dialTunnel(ctx, logger)
		if err == nil {
			backoff = e.minBackoff
			logger.Info("tunnel session up")
			err = tunnelwire.ServeNode(ctx, sess, tunnelwire.NodeOptions{
				Dial:        e.dialTarget,
				MaxStreams:  e.cfg.Tunnel.MaxStreams,
				DialTimeout: kubeletDialTimeout,
				Logger:      logger,
			})
			if ctx.Err() != nil {
				return
			}
			logger.Warn("tunnel session lost", "error", err)
		} else {
			logger.Warn("tunnel dial failed", "error", err, "retry_in", backoff)
		}
		// Full jitter in [backoff/2, backoff], as the link does.
		if !sleep(ctx, backoff/2+time.Duration(rand.Int64N(int64(backoff/2)+1))) {
			return
		}
		backoff = min(backoff*2, e.maxBackoff)
	}
}

// dialTunnel opens an authenticated session: TLS with the node certificate
// (read at every dial, so a renewed one is used; the link loop bootstraps
// it), the cloud CA, and the tunnel's ALPN name.
func (e *EdgeHub) dialTunnel(ctx context.Context, logger hclog.Logger) (*yamux.Session, error) {
	cert, err := e.loadNodeCert()
	if err != nil {
		return nil, fmt.Errorf("node certificate: %w", err)
	}
	caPEM, err := os.ReadFile(e.cfg.TLSCAFile)
	if err != nil {
		return nil, fmt.Errorf("cloud CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("cloud CA %s: no PEM certificate", e.cfg.TLSCAFile)
	}
	d := tls.Dialer{
		NetDialer: &net.Dialer{Timeout: tunnelDialTimeout, KeepAlive: 30 * time.Second},
		Config: &tls.Config{
			MinVersion:   tls.VersionTLS12,
			RootCAs:      pool,
			Certificates: []tls.Certificate{cert},
			NextProtos:   []string{tunnelwire.Protocol},
		},
	}
	dctx, cancel := context.WithTimeout(ctx, tunnelDialTimeout)
	defer cancel()
	conn, err := d.DialContext(dctx, "tcp", e.cfg.Tunnel.Server)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", e.cfg.Tunnel.Server, err)
	}
	if p := conn.(*tls.Conn).ConnectionState().NegotiatedProtocol; p != tunnelwire.Protocol {
		_ = conn.Close()
		return nil, fmt.Errorf("%s does not speak %s (ALPN %q)", e.cfg.Tunnel.Server, tunnelwire.Protocol, p)
	}
	// The cloud opens the streams: the edge is the yamux server.
	sess, err := yamux.Server(conn, tunnelwire.YamuxConfig(logger.Named("yamux")))
	if err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("tunnel session: %w", err)
	}
	e.mu.Lock()
	e.tunnel = sess
	e.mu.Unlock()
	return sess, nil
}

// dialTarget connects one stream to its target: the kubelet API at
// local_kubelet, or a pod address that podTargetAllowed lets through.
func (e *EdgeHub) dialTarget(ctx context.Context, target tunnelwire.Target) (net.Conn, error) {
	var d net.Dialer
	if target.IsKubelet() {
		return d.DialContext(ctx, "tcp", e.cfg.Tunnel.LocalKubelet)
	}
	local, err := net.InterfaceAddrs()
	if err != nil {
		return nil, fmt.Errorf("%w: cannot list this host's addresses: %v", tunnelwire.ErrDenied, err)
	}
	if err := podTargetAllowed(target.Pod().Addr(), e.cfg.Tunnel.podPrefixes, local); err != nil {
		return nil, err
	}
	return d.DialContext(ctx, "tcp", target.Pod().String())
}

// podTargetAllowed: ip may be dialled as a pod on this node only if it is
// in one of the node's pod ranges and is none of the host's own addresses
// (a pod bridge's gateway address reaches the host's services), nor
// loopback, link-local, multicast or unspecified. The refusal wraps
// tunnelwire.ErrDenied.
func podTargetAllowed(ip netip.Addr, podRanges []netip.Prefix, hostAddrs []net.Addr) error {
	ip = ip.Unmap()
	if len(podRanges) == 0 {
		return fmt.Errorf("%w: pod targets are off on this node (tunnel.pod_cidrs is empty)", tunnelwire.ErrDenied)
	}
	// Global unicast (private ranges included) leaves out loopback,
	// link-local, multicast, broadcast and unspecified.
	if !ip.IsGlobalUnicast() {
		return fmt.Errorf("%w: %s is not a pod address", tunnelwire.ErrDenied, ip)
	}
	inRange := false
	for _, p := range podRanges {
		if p.Contains(ip) {
			inRange = true
			break
		}
	}
	if !inRange {
		return fmt.Errorf("%w: %s is outside this node's pod ranges (tunnel.pod_cidrs)", tunnelwire.ErrDenied, ip)
	}
	for _, a := range hostAddrs {
		var hostIP net.IP
		switch v := a.(type) {
		case *net.IPNet:
			hostIP = v.IP
		case *net.IPAddr:
			hostIP = v.IP
		}
		if h, ok := netip.AddrFromSlice(hostIP); ok && h.Unmap() == ip {
			return fmt.Errorf("%w: %s is an address of this host, not a pod's", tunnelwire.ErrDenied, ip)
		}
	}
	return nil
}

// closeTunnel ends the live tunnel session (after a certificate renewal, so
// the next one presents the new certificate).
func (e *EdgeHub) closeTunnel() {
	e.mu.Lock()
	sess := e.tunnel
	e.tunnel = nil
	e.mu.Unlock()
	if sess != nil {
		_ = sess.Close()
	}
}
