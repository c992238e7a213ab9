package tunnel

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"
)

const (
	// peerDialTimeout bounds reaching the holder replica: an unreachable
	// holder gets the API server a 503 quickly.
	peerDialTimeout = 3 * time.Second
	// ForwardedHeader names the replica that forwarded a CONNECT (for logs;
	// the peer listener never forwards, whatever it says).
	ForwardedHeader = "Edgehive-Tunnel-Forwarded-By"
)

var _ sessionView = (*Server)(nil)

// replicaSubject is the subject a replica's certificate must carry: that of
// this replica's own server certificate (cloudhive's, from
// cloudcoresecret). The certificate service only signs CN system:node:...,
// so no node can get one; egress client certificates come from another CA.
func replicaSubject(server tls.Certificate) (pkix.Name, error) {
	leaf := server.Leaf
	if leaf == nil {
		if len(server.Certificate) == 0 {
			return pkix.Name{}, errors.New("no server certificate")
		}
		var err error
		if leaf, err = x509.ParseCertificate(server.Certificate[0]); err != nil {
			return pkix.Name{}, fmt.Errorf("server certificate: %w", err)
		}
	}
	if leaf.Subject.CommonName == "" || strings.HasPrefix(leaf.Subject.CommonName, nodeCommonPrefix) {
		return pkix.Name{}, fmt.Errorf("server certificate CN %q cannot tell replicas from nodes", leaf.Subject.CommonName)
	}
	return leaf.Subject, nil
}

// checkReplicaLeaf: the certificate is a cloudhive server certificate
// (the subject of want, serverAuth).
func checkReplicaLeaf(leaf *x509.Certificate, want pkix.Name) error {
	if leaf.Subject.CommonName != want.CommonName || !slices.Equal(leaf.Subject.Organization, want.Organization) {
		return fmt.Errorf("certificate %q (O %v) is not a cloudhive replica's", leaf.Subject.CommonName, leaf.Subject.Organization)
	}
	if !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageServerAuth) {
		return errors.New("certificate is not a server certificate")
	}
	return nil
}

// PeerServerTLS is the peer listener's TLS: the client must present a
// cloudhive server certificate from the cloud CA (the one every replica
// loads from cloudcoresecret). Node and egress client certificates are
// refused.
func PeerServerTLS(server tls.Certificate, caPool *x509.CertPool) (*tls.Config, error) {
	want, err := replicaSubject(server)
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{server},
		// The client's certificate is a server certificate (serverAuth
		// only), which the standard client check refuses; it is verified
		// below instead.
		ClientAuth: tls.RequireAnyClientCert,
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			if len(raw) == 0 {
				return errors.New("no client certificate")
			}
			certs := make([]*x509.Certificate, len(raw))
			for i, der := range raw {
				c, err := x509.ParseCertificate(der)
				if err != nil {
					return fmt.Errorf("client certificate: %w", err)
				}
				certs[i] = c
			}
			inter := x509.NewCertPool()
			for _, c := range certs[1:] {
				inter.AddCert(c)
			}
			if _, err := certs[0].Verify(x509.VerifyOptions{Roots: caPool, Intermediates: inter,
				KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
				return fmt.Errorf("client certificate: %w", err)
			}
			return checkReplicaLeaf(certs[0], want)
		},
		NextProtos: []string{"http/1.1"},
	}, nil
}

// PeerClientTLS is the TLS for dialling another replica's peer endpoint:
// this replica presents its server certificate and checks that the other
// side presents a cloudhive server certificate for the address it dials
// (set ServerName per dial).
func PeerClientTLS(server tls.Certificate, caPool *x509.CertPool) (*tls.Config, error) {
	want, err := replicaSubject(server)
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{server},
		RootCAs:      caPool,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("no server certificate")
			}
			return checkReplicaLeaf(cs.PeerCertificates[0], want)
		},
		NextProtos: []string{"http/1.1"},
	}, nil
}

// UseReplicas turns on forwarding: CONNECTs for nodes whose session another
// replica holds go to that replica's peer endpoint, dialled with dialTLS
// (PeerClientTLS). Call it before serving.
func (s *Server) UseReplicas(r *Replicas, dialTLS *tls.Config) error {
	if r == nil || dialTLS == nil || len(dialTLS.Certificates) == 0 {
		return errors.New("tunnel: replicas need a Replicas and the peer client TLS")
	}
	r.mu.Lock()
	r.sessions = s
	r.mu.Unlock()
	s.mu.Lock()
	s.replicas, s.peerTLS = r, dialTLS
	s.mu.Unlock()
	return nil
}

func (s *Server) replicaSet() (*Replicas, *tls.Config) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.replicas, s.peerTLS
}

// nodes are the nodes with a session here.
func (s *Server) nodes() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, 0, len(s.sessions))
	for n := range s.sessions {
		out = append(out, n)
	}
	return out
}

// ServePeers serves CONNECTs forwarded by other replicas on ln until ctx
// ends. tlsCfg must be PeerServerTLS's. A CONNECT here is served only from
// this replica's own sessions: it is never forwarded again.
func (s *Server) ServePeers(ctx context.Context, ln net.Listener, tlsCfg *tls.Config) error {
	if tlsCfg == nil || tlsCfg.ClientAuth != tls.RequireAnyClientCert || tlsCfg.VerifyPeerCertificate == nil {
		return errors.New("tunnel: the peer listener needs PeerServerTLS")
	}
	return s.serveHTTP(ctx, tls.NewListener(ln, tlsCfg), "peer endpoint", true)
}

// forward carries a CONNECT for target (node:port, or a pod's ip:port on
// node) to the replica that holds node's session: a CONNECT over mTLS to its
// peer endpoint, whose answer is relayed; after a 200 the bytes are spliced.
func (s *Server) forward(ctx context.Context, w http.ResponseWriter, r *http.Request, node, target string, h holder, self string, dialTLS *tls.Config) {
	host, _, err := net.SplitHostPort(h.PeerAddress)
	if err != nil {
		s.refuse(w, r, http.StatusServiceUnavailable, "peer_unreachable", "node %s: replica %s has a bad peer address %q", node, h.Identity, h.PeerAddress)
		return
	}
	cfg := dialTLS.Clone()
	cfg.ServerName = host
	dctx, cancel := context.WithTimeout(ctx, peerDialTimeout)
	d := tls.Dialer{Config: cfg}
	c, err := d.DialContext(dctx, "tcp", h.PeerAddress)
	cancel()
	if err != nil {
		s.refuse(w, r, http.StatusServiceUnavailable, "peer_unreachable", "node %s: its replica %s at %s: %v", node, h.Identity, h.PeerAddress, err)
		return
	}
	peer := c.(*tls.Conn)
	// The holder answers once the node answered its stream, within
	// streamSetupTimeout.
	_ = peer.SetDeadline(time.Now().Add(streamSetupTimeout + peerDialTimeout))
	_, err = fmt.Fprintf(peer, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n%s: %s\r\n\r\n", target, target, ForwardedHeader, self)
	var resp *http.Response
	br := bufio.NewReader(peer)
	if err == nil {
		resp, err = http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	}
	if err != nil {
		_ = peer.Close()
		s.refuse(w, r, http.StatusServiceUnavailable, "peer_unreachable", "node %s: its replica %s: %v", node, h.Identity, err)
		return
	}
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		_ = peer.Close()
		s.refuse(w, r, resp.StatusCode, "peer_refused", "node %s via replica %s: %s", node, h.Identity, strings.TrimSpace(string(msg)))
		return
	}
	_ = peer.SetDeadline(time.Time{})
	conn, clientSrc, ok := s.established(w, r, peer)
	if !ok {
		return
	}
	s.metrics.connects.WithLabelValues("forwarded").Inc()
	s.logger.Debug("CONNECT forwarded", "node", node, "target", target, "replica", h.Identity, "peer", h.PeerAddress, "remote", r.RemoteAddr)
	up, down := pipe(ctx, conn, clientSrc, peer, br)
	s.logger.Debug("forwarded CONNECT closed", "node", node, "replica", h.Identity, "bytes_up", up, "bytes_down", down)
}
