package cloudhub

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/edgehive/edgehive/internal/nodename"
)

// maxCSRBytes bounds the /edge.crt body (KubeEdge reads at most 1 MiB).
const maxCSRBytes = 1 << 20

// CertServer is the certificate bootstrap service (KubeEdge's :10002):
// GET /ca.crt, GET /edge.crt, GET /node/{name}.
type CertServer struct {
	ca       *CA
	server   tls.Certificate
	client   kubernetes.Interface // for /node/{name}; may be nil
	validity time.Duration
	logger   hclog.Logger
	metrics  *Metrics
	now      func() time.Time
}

// CertServerOptions configure NewCertServer.
type CertServerOptions struct {
	CA     *CA
	Server tls.Certificate
	// Client answers /node/{name}; nil answers 404 for every node.
	Client kubernetes.Interface
	// NodeCertValidity defaults to DefaultNodeCertTTL.
	NodeCertValidity time.Duration
	Logger           hclog.Logger
	Metrics          *Metrics
	Now              func() time.Time
}

// NewCertServer builds the service; it does not listen.
func NewCertServer(o CertServerOptions) (*CertServer, error) {
	if o.CA == nil || len(o.Server.Certificate) == 0 {
		return nil, errors.New("cert server: CA and server certificate are required")
	}
	if o.NodeCertValidity <= 0 {
		o.NodeCertValidity = DefaultNodeCertTTL
	}
	if o.Logger == nil {
		o.Logger = hclog.NewNullLogger()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Metrics == nil {
		o.Metrics = NewMetrics(nil)
	}
	return &CertServer{ca: o.CA, server: o.Server, client: o.Client, validity: o.NodeCertValidity,
		logger: o.Logger, metrics: o.Metrics, now: o.Now}, nil
}

// TLSConfig is the bootstrap listener's TLS: client certificates are asked
// for (rotation presents the current one) but not required.
func (c *CertServer) TLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{c.server},
		ClientAuth:   tls.VerifyClientCertIfGiven,
		ClientCAs:    c.ca.Pool(),
	}
}

// Handler serves the three routes.
func (c *CertServer) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ca.crt", c.serveCA)
	mux.HandleFunc("GET /edge.crt", c.serveEdgeCert)
	mux.HandleFunc("POST /edge.crt", c.serveEdgeCert) // same request from clients that will not send a GET body
	mux.HandleFunc("GET /node/{name}", c.serveNode)
	return mux
}

// Serve serves on ln (a plain TCP listener; TLS is added here) until ctx ends.
func (c *CertServer) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           c.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          c.logger.StandardLogger(&hclog.StandardLoggerOptions{ForceLevel: hclog.Debug}),
	}
	return serveUntil(ctx, srv, tls.NewListener(ln, c.TLSConfig()))
}

func (c *CertServer) serveCA(w http.ResponseWriter, _ *http.Request) {
	// Raw DER, as KubeEdge serves it: the edge hashes exactly these bytes.
	w.Header().Set("Content-Type", "application/octet-stream")
	_, _ = w.Write(c.ca.Cert.Raw)
}

func (c *CertServer) serveEdgeCert(w http.ResponseWriter, r *http.Request) {
	node := r.Header.Get("NodeName")
	refuse := func(code int, reason, format string, args ...any) {
		msg := fmt.Sprintf(format, args...)
		c.metrics.certRequests.WithLabelValues(reason).Inc()
		c.logger.Warn("node certificate refused", "node", node, "remote", r.RemoteAddr, "status", code, "reason", msg)
		http.Error(w, msg, code)
	}
	now := c.now()
	if err := c.authorize(r, node, now); err != nil {
		refuse(http.StatusUnauthorized, "unauthorized", "%v", err)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxCSRBytes+1))
	if err != nil {
		refuse(http.StatusBadRequest, "bad_request", "read CSR: %v", err)
		return
	}
	if len(body) > maxCSRBytes {
		refuse(http.StatusRequestEntityTooLarge, "too_large", "CSR larger than %d bytes", maxCSRBytes)
		return
	}
	csr, err := x509.ParseCertificateRequest(body)
	if err != nil {
		refuse(http.StatusBadRequest, "bad_csr", "CSR is not DER: %v", err)
		return
	}
	if err := csr.CheckSignature(); err != nil {
		refuse(http.StatusBadRequest, "bad_csr", "CSR signature: %v", err)
		return
	}
	if err := checkNodeSubject(csr, node); err != nil {
		refuse(http.StatusBadRequest, "bad_csr", "%v", err)
		return
	}
	usages, err := parseUsages(r.Header.Get("ExtKeyUsages"))
	if err != nil {
		refuse(http.StatusBadRequest, "bad_request", "%v", err)
		return
	}
	der, err := c.ca.SignNode(csr, usages, c.validity, now)
	if err != nil {
		refuse(http.StatusInternalServerError, "sign_failed", "%v", err)
		return
	}
	c.metrics.certRequests.WithLabelValues("issued").Inc()
	c.logger.Info("node certificate issued", "node", node, "remote", r.RemoteAddr)
	w.Header().Set("Content-Type", "application/octet-stream")
	_, _ = w.Write(der)
}

// authorize accepts a valid bearer token, or (rotation) a verified client
// certificate of the same node.
func (c *CertServer) authorize(r *http.Request, node string, now time.Time) error {
	if auth := r.Header.Get("Authorization"); auth != "" {
		jwt, ok := strings.CutPrefix(auth, "Bearer ")
		if !ok {
			return errors.New("authorization is not a bearer token")
		}
		_, err := c.ca.VerifyJWT(strings.TrimSpace(jwt), now)
		return err
	}
	if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 {
		return errors.New("no token and no client certificate from this CA")
	}
	leaf := r.TLS.VerifiedChains[0][0]
	if len(leaf.Subject.Organization) == 0 || leaf.Subject.Organization[0] != nodeOrganization {
		return fmt.Errorf("client certificate organization is not %s", nodeOrganization)
	}
	if leaf.Subject.CommonName != nodeCommonPrefix+node {
		return fmt.Errorf("client certificate %q is not for node %q", leaf.Subject.CommonName, node)
	}
	return nil
}

// checkNodeSubject requires CN system:node:<node> and O system:nodes.
func checkNodeSubject(csr *x509.CertificateRequest, node string) error {
	cn := csr.Subject.CommonName
	name, ok := strings.CutPrefix(cn, nodeCommonPrefix)
	if !ok || !nodename.Valid(name) {
		return fmt.Errorf("CSR common name %q is not %s<node>", cn, nodeCommonPrefix)
	}
	if node != "" && name != node {
		return fmt.Errorf("CSR common name %q does not match NodeName %q", cn, node)
	}
	if len(csr.Subject.Organization) != 1 || csr.Subject.Organization[0] != nodeOrganization {
		return fmt.Errorf("CSR organization %v is not [%s]", csr.Subject.Organization, nodeOrganization)
	}
	return nil
}

// parseUsages reads KubeEdge's optional ExtKeyUsages header: a JSON array of
// Go x509.ExtKeyUsage values, of which serverAuth and clientAuth are allowed.
func parseUsages(h string) ([]x509.ExtKeyUsage, error) {
	if strings.TrimSpace(h) == "" {
		return nil, nil
	}
	var ints []int
	if err := json.Unmarshal([]byte(h), &ints); err != nil {
		return nil, fmt.Errorf("ExtKeyUsages is not a JSON integer array: %w", err)
	}
	out := make([]x509.ExtKeyUsage, 0, len(ints))
	for _, u := range ints {
		switch x509.ExtKeyUsage(u) {
		case x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth:
			out = append(out, x509.ExtKeyUsage(u))
		default:
			return nil, fmt.Errorf("ExtKeyUsages: usage %d not allowed", u)
		}
	}
	return out, nil
}

func (c *CertServer) serveNode(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if c.client == nil || !nodename.Valid(name) {
		http.Error(w, "Node not found", http.StatusNotFound)
		return
	}
	_, err := c.client.CoreV1().Nodes().Get(r.Context(), name, metav1.GetOptions{})
	switch {
	case err == nil:
		_, _ = io.WriteString(w, "Node found")
	case apierrors.IsNotFound(err):
		http.Error(w, "Node not found", http.StatusNotFound)
	default:
		http.Error(w, "node lookup failed", http.StatusInternalServerError)
	}
}

// serveUntil serves srv on ln until ctx ends, then shuts it down briefly.
func serveUntil(ctx context.Context, srv *http.Server, ln net.Listener) error {
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = srv.Shutdown(sctx)
	<-errc
	return nil
}
