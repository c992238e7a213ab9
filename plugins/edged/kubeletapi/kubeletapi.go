// Package kubeletapi is the node's kubelet HTTPS API (port 10250) as the API
// server and kubectl use it: container logs, exec, attach and port-forward
// (proxied to the CRI streaming server), resource stats and metrics, the pod
// list and a health check. Every request must carry a client certificate
// signed by the configured client CA (the API server's kubelet-client CA).
package kubeletapi

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	v1 "k8s.io/api/core/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/edgehive/edgehive/plugins/edged/container"
)

// Runtime is the part of CRI the API needs.
type Runtime interface {
	ListPodSandbox(ctx context.Context, filter *runtimeapi.PodSandboxFilter) ([]*runtimeapi.PodSandbox, error)
	ListContainers(ctx context.Context, filter *runtimeapi.ContainerFilter) ([]*runtimeapi.Container, error)
	Exec(ctx context.Context, req *runtimeapi.ExecRequest) (*runtimeapi.ExecResponse, error)
	Attach(ctx context.Context, req *runtimeapi.AttachRequest) (*runtimeapi.AttachResponse, error)
	PortForward(ctx context.Context, req *runtimeapi.PortForwardRequest) (*runtimeapi.PortForwardResponse, error)
	ListContainerStats(ctx context.Context, filter *runtimeapi.ContainerStatsFilter) ([]*runtimeapi.ContainerStats, error)
}

// Source is what the API serves from: edged's pods with their current
// status, where their logs are, and the runtime once it is connected.
type Source interface {
	Pods() []*v1.Pod
	LogDir(pod *v1.Pod) string
	// Runtime is nil while the container runtime is not connected.
	Runtime() Runtime
}

// Config is how the server listens and whom it lets in.
type Config struct {
	Listen string
	// CertFile and KeyFile are the serving certificate; both empty means a
	// self-signed one generated (once) under CertDir.
	CertFile, KeyFile string
	CertDir           string
	// ClientCAFile verifies client certificates (required).
	ClientCAFile string
	// AuthorizedUsers are the client certificate common names allowed in;
	// empty allows any certificate the client CA signed.
	AuthorizedUsers []string
	// NodeName and NodeIPs go into a generated serving certificate.
	NodeName string
	NodeIPs  []net.IP
	// ProcRoot is where /proc is read for node stats ("" is /proc).
	ProcRoot string
}

// Server is the running API.
type Server struct {
	cfg  Config
	src  Source
	log  hclog.Logger
	http *http.Server
	ln   net.Listener
	done chan struct{}
	// stop ends the requests' contexts at Shutdown, so followed logs end
	// instead of holding the shutdown until its deadline.
	baseCtx context.Context
	stop    context.CancelFunc

	// nodeCPU is the last node CPU sample, for usageNanoCores.
	cpuMu   sync.Mutex
	lastCPU cpuSample
}

// New loads (or generates) the certificates and returns a server that is not
// listening yet.
func New(cfg Config, src Source, log hclog.Logger) (*Server, error) {
	if cfg.ClientCAFile == "" {
		return nil, errors.New("kubeletapi: client_ca_file is required")
	}
	caPEM, err := os.ReadFile(cfg.ClientCAFile)
	if err != nil {
		return nil, fmt.Errorf("kubeletapi: client CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("kubeletapi: client CA %s: no PEM certificate in it", cfg.ClientCAFile)
	}
	certFile, keyFile := cfg.CertFile, cfg.KeyFile
	if certFile == "" && keyFile == "" {
		certFile, keyFile, err = selfSigned(cfg.CertDir, cfg.NodeName, cfg.NodeIPs, time.Now())
		if err != nil {
			return nil, err
		}
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("kubeletapi: serving certificate: %w", err)
	}
	s := &Server{cfg: cfg, src: src, log: log, done: make(chan struct{})}
	s.baseCtx, s.stop = context.WithCancel(context.Background())
	s.http = &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       90 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return s.baseCtx },
		TLSConfig: &tls.Config{
			MinVersion:   tls.VersionTLS12,
			Certificates: []tls.Certificate{cert},
			// Verified when given; a request without one is answered 401
			// (not a handshake failure) as the kubelet does.
			ClientAuth: tls.VerifyClientCertIfGiven,
			ClientCAs:  pool,
		},
		ErrorLog: log.StandardLogger(&hclog.StandardLoggerOptions{ForceLevel: hclog.Debug}),
	}
	return s, nil
}

// Start listens on cfg.Listen and serves in the background.
func (s *Server) Start() error {
	ln, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("kubeletapi: listen %s: %w", s.cfg.Listen, err)
	}
	s.ln = ln
	go func() {
		defer close(s.done)
		if err := s.http.ServeTLS(ln, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Warn("kubelet API stopped", "error", err)
		}
	}()
	return nil
}

// Addr is the address listened on (nil before Start).
func (s *Server) Addr() net.Addr {
	if s.ln == nil {
		return nil
	}
	return s.ln.Addr()
}

// Shutdown stops accepting, waits for requests within ctx, then closes the
// rest (hijacked streams are closed by their own ends).
func (s *Server) Shutdown(ctx context.Context) error {
	s.stop()
	if s.ln == nil {
		return nil
	}
	err := s.http.Shutdown(ctx)
	if err != nil {
		_ = s.http.Close()
	}
	<-s.done
	if err != nil {
		return fmt.Errorf("kubeletapi: shutdown: %w", err)
	}
	return nil
}

// Handler is the API with authentication in front.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		if s.src.Runtime() == nil {
			http.Error(w, "container runtime not connected", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok"))
	})
	mux.HandleFunc("GET /pods", s.servePods)
	mux.HandleFunc("GET /containerLogs/{namespace}/{pod}/{container}", s.serveLogs)
	for _, m := range []string{"GET", "POST"} {
		mux.HandleFunc(m+" /exec/{namespace}/{pod}/{container}", s.serveExec)
		mux.HandleFunc(m+" /exec/{namespace}/{pod}/{uid}/{container}", s.serveExec)
		mux.HandleFunc(m+" /attach/{namespace}/{pod}/{container}", s.serveAttach)
		mux.HandleFunc(m+" /attach/{namespace}/{pod}/{uid}/{container}", s.serveAttach)
		mux.HandleFunc(m+" /portForward/{namespace}/{pod}", s.servePortForward)
		mux.HandleFunc(m+" /portForward/{namespace}/{pod}/{uid}", s.servePortForward)
	}
	mux.HandleFunc("GET /stats/summary", s.serveSummary)
	mux.HandleFunc("GET /metrics/resource", s.serveResourceMetrics)
	return s.authenticate(mux)
}

// authenticate lets in only requests with a verified client certificate
// (401 otherwise) whose common name is authorized (403 otherwise).
func (s *Server) authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 || len(r.TLS.VerifiedChains[0]) == 0 {
			http.Error(w, "Unauthorized", http.StatusUnauthorized)
			return
		}
		user := r.TLS.VerifiedChains[0][0].Subject.CommonName
		if len(s.cfg.AuthorizedUsers) > 0 && !slices.Contains(s.cfg.AuthorizedUsers, user) {
			s.log.Debug("refused kubelet API client", "user", user, "path", r.URL.Path)
			http.Error(w, fmt.Sprintf("Forbidden (user=%s, path=%s)", user, r.URL.Path), http.StatusForbidden)
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (s *Server) servePods(w http.ResponseWriter, _ *http.Request) {
	list := v1.PodList{}
	list.APIVersion, list.Kind = "v1", "PodList"
	for _, p := range s.src.Pods() {
		list.Items = append(list.Items, *p)
	}
	writeJSON(w, list)
}

// httpError is an error with the status code to answer it with.
type httpError struct {
	code int
	err  error
}

func (e *httpError) Error() string { return e.err.Error() }
func (e *httpError) Unwrap() error { return e.err }

func errorf(code int, format string, args ...any) error {
	return &httpError{code: code, err: fmt.Errorf(format, args...)}
}

func writeError(w http.ResponseWriter, err error) {
	code := http.StatusInternalServerError
	var he *httpError
	if errors.As(err, &he) {
		code = he.code
	}
	http.Error(w, err.Error(), code)
}

// findPod is the pod ns/name (with uid when the path gives one).
func (s *Server) findPod(r *http.Request) (*v1.Pod, error) {
	ns, name, uid := r.PathValue("namespace"), r.PathValue("pod"), r.PathValue("uid")
	for _, p := range s.src.Pods() {
		if p.Namespace == ns && p.Name == name && (uid == "" || string(p.UID) == uid) {
			return p, nil
		}
	}
	return nil, errorf(http.StatusNotFound, "pod %s/%s not found", ns, name)
}

func (s *Server) runtime() (Runtime, error) {
	rt := s.src.Runtime()
	if rt == nil {
		return nil, errorf(http.StatusServiceUnavailable, "container runtime not connected")
	}
	return rt, nil
}

// runningContainer is the ID of the newest running instance of a pod's container.
func (s *Server) runningContainer(ctx context.Context, pod *v1.Pod, name string) (string, error) {
	rt, err := s.runtime()
	if err != nil {
		return "", err
	}
	cs, err := rt.ListContainers(ctx, &runtimeapi.ContainerFilter{
		State: &runtimeapi.ContainerStateValue{State: runtimeapi.ContainerState_CONTAINER_RUNNING},
		LabelSelector: map[string]string{
			container.LabelPodUID: string(pod.UID), container.LabelContainerName: name,
		}})
	if err != nil {
		return "", fmt.Errorf("list containers: %w", err)
	}
	if len(cs) == 0 {
		return "", errorf(http.StatusNotFound, "container %q of pod %s/%s is not running", name, pod.Namespace, pod.Name)
	}
	sort.Slice(cs, func(i, j int) bool { return cs[i].CreatedAt > cs[j].CreatedAt })
	return cs[0].Id, nil
}

// readySandbox is the ID of the pod's newest ready sandbox.
func (s *Server) readySandbox(ctx context.Context, pod *v1.Pod) (string, error) {
	rt, err := s.runtime()
	if err != nil {
		return "", err
	}
	sbs, err := rt.ListPodSandbox(ctx, &runtimeapi.PodSandboxFilter{
		State:         &runtimeapi.PodSandboxStateValue{State: runtimeapi.PodSandboxState_SANDBOX_READY},
		LabelSelector: map[string]string{container.LabelPodUID: string(pod.UID)}})
	if err != nil {
		return "", fmt.Errorf("list sandboxes: %w", err)
	}
	if len(sbs) == 0 {
		return "", errorf(http.StatusNotFound, "pod %s/%s has no ready sandbox", pod.Namespace, pod.Name)
	}
	sort.Slice(sbs, func(i, j int) bool { return sbs[i].CreatedAt > sbs[j].CreatedAt })
	return sbs[0].Id, nil
}
