package admin

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/edgehive/edgehive/host/metrics"
)

const (
	// MaxBodyBytes bounds a request body: the only body is a small JSON
	// object, and an unbounded read would let any local caller make the
	// host allocate without limit.
	MaxBodyBytes = 64 << 10

	// DefaultShutdownTimeout bounds the graceful shutdown in Serve. A
	// running upgrade can take longer than that; it is then cut off rather
	// than holding up the host's exit.
	DefaultShutdownTimeout = 5 * time.Second
)

// Server is the admin HTTP server. Build it with New and run it with Serve.
type Server struct {
	backend Backend
	logger  hclog.Logger
	handler http.Handler

	// ShutdownTimeout bounds the graceful shutdown once Serve's context is
	// done. Set it before Serve; zero means DefaultShutdownTimeout.
	ShutdownTimeout time.Duration
}

// New returns a server for backend that exposes gatherer at /metrics. A nil
// gatherer serves an empty registry; a nil logger discards logs. New has no
// side effects: nothing listens until Serve.
func New(backend Backend, gatherer prometheus.Gatherer, logger hclog.Logger) *Server {
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	if gatherer == nil {
		gatherer = prometheus.NewRegistry()
	}
	s := &Server{backend: backend, logger: logger.Named("admin")}
	s.handler = s.routes(gatherer)
	return s
}

// Handler returns the server's HTTP handler, for tests and for callers that
// run their own http.Server.
func (s *Server) Handler() http.Handler { return s.handler }

func (s *Server) routes(gatherer prometheus.Gatherer) http.Handler {
	mux := http.NewServeMux()
	metrics := promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{
		ErrorLog:      s.logger.StandardLogger(&hclog.StandardLoggerOptions{ForceLevel: hclog.Warn}),
		ErrorHandling: promhttp.ContinueOnError, // a broken collector must not hide the others
	})

	// Each path is registered twice: with its method, and without one as a
	// JSON 405. Without the second, the catch-all "/" (our JSON 404) would
	// take the request, since the mux only answers 405 itself when no
	// pattern matches the path with another method.
	route := func(method, path string, h http.HandlerFunc) {
		mux.Handle(method+" "+path, h)
		allow := method
		if method == http.MethodGet {
			allow = "GET, HEAD"
		}
		mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Allow", allow)
			s.writeError(w, r, http.StatusMethodNotAllowed, fmt.Sprintf("method %s not allowed on %s", r.Method, r.URL.Path))
		})
	}
	route(http.MethodGet, "/healthz", s.healthz)
	route(http.MethodGet, "/readyz", s.readyz)
	route(http.MethodGet, "/metrics", metrics.ServeHTTP)
	route(http.MethodGet, "/v1/plugins", s.listPlugins)
	route(http.MethodGet, "/v1/plugins/{name}", s.getPlugin)
	route(http.MethodPost, "/v1/plugins/{name}/restart", s.restart)
	route(http.MethodPost, "/v1/plugins/{name}/upgrade", s.upgrade)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		s.writeError(w, r, http.StatusNotFound, fmt.Sprintf("no such endpoint: %s", r.URL.Path))
	})
	return s.recoverPanics(mux)
}

// recoverPanics turns a panic in the backend into a 500 for that request
// and a log line, instead of net/http's silent connection reset.
func (s *Server) recoverPanics(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				s.logger.Error("panic serving request", "method", r.Method, "path", r.URL.Path, "panic", v)
				s.writeError(w, r, http.StatusInternalServerError, "internal error")
			}
		}()
		next.ServeHTTP(w, r)
	})
}

// Serve answers on l until ctx is done, then shuts down gracefully within
// ShutdownTimeout and closes l. It returns nil after a shutdown caused by
// ctx, or the error that stopped the server otherwise.
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	srv := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: 10 * time.Second, // a stuck client must not hold a goroutine forever
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          s.logger.StandardLogger(&hclog.StandardLoggerOptions{ForceLevel: hclog.Debug}),
	}
	s.logger.Info("serving admin API", "network", l.Addr().Network(), "address", l.Addr().String())

	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }()

	select {
	case err := <-errc:
		return fmt.Errorf("admin: serve on %s: %w", l.Addr(), err)
	case <-ctx.Done():
	}

	timeout := s.ShutdownTimeout
	if timeout <= 0 {
		timeout = DefaultShutdownTimeout
	}
	sctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	err := srv.Shutdown(sctx)
	if err != nil {
		s.logger.Warn("graceful shutdown did not finish; closing connections", "timeout", timeout, "error", err)
		srv.Close()
	}
	if serr := <-errc; serr != nil && !errors.Is(serr, http.ErrServerClosed) {
		return fmt.Errorf("admin: serve on %s: %w", l.Addr(), serr)
	}
	s.logger.Debug("admin API stopped")
	return nil
}

func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	writeText(w, http.StatusOK, "ok")
}

func (s *Server) readyz(w http.ResponseWriter, _ *http.Request) {
	if s.backend.Ready() {
		writeText(w, http.StatusOK, "ok")
		return
	}
	var notRunning []string
	for _, p := range s.backend.Plugins() {
		if p.State != metrics.StateRunning && p.State != metrics.StateDisabled {
			notRunning = append(notRunning, p.Name+" ("+p.State+")")
		}
	}
	sort.Strings(notRunning)
	msg := "not ready"
	if len(notRunning) > 0 {
		msg += ": plugins not running: " + strings.Join(notRunning, ", ")
	}
	writeText(w, http.StatusServiceUnavailable, msg)
}

func (s *Server) listPlugins(w http.ResponseWriter, r *http.Request) {
	plugins := s.backend.Plugins()
	if plugins == nil {
		plugins = []PluginStatus{} // "[]", not "null"
	}
	s.writeJSON(w, r, http.StatusOK, plugins)
}

func (s *Server) getPlugin(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	p, ok := s.lookup(name)
	if !ok {
		s.writeError(w, r, http.StatusNotFound, unknownPlugin(name).Error())
		return
	}
	s.writeJSON(w, r, http.StatusOK, p)
}

func (s *Server) restart(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	// Restart takes no body, but a client may send one; reading at most
	// MaxBodyBytes keeps keep-alive connections reusable without letting a
	// client stream forever.
	r.Body = http.MaxBytesReader(w, r.Body, MaxBodyBytes)
	s.logger.Info("restart requested", "plugin", name)
	if err := s.backend.Restart(r.Context(), name); err != nil {
		s.backendError(w, r, "restart", name, err)
		return
	}
	s.writeStatusAfter(w, r, name)
}

func (s *Server) upgrade(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	req, err := decodeUpgradeRequest(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	if err != nil {
		code := http.StatusBadRequest
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			code = http.StatusRequestEntityTooLarge
		}
		s.writeError(w, r, code, err.Error())
		return
	}
	s.logger.Info("upgrade requested", "plugin", name, "path", req.Path, "sha256", req.SHA256)
	if err := s.backend.Upgrade(r.Context(), name, req.Path, req.SHA256); err != nil {
		s.backendError(w, r, "upgrade", name, err)
		return
	}
	s.writeStatusAfter(w, r, name)
}

// decodeUpgradeRequest parses and validates an upgrade body strictly:
// unknown fields and trailing data are errors, so a misspelt "sha256" is
// not silently an upgrade without a checksum.
func decodeUpgradeRequest(body io.Reader) (UpgradeRequest, error) {
	var req UpgradeRequest
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		if errors.Is(err, io.EOF) {
			return req, errors.New("bad request body: empty, want a JSON object with \"path\"")
		}
		return req, fmt.Errorf("bad request body: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return req, fmt.Errorf("bad request body: %w", err)
		}
		return req, errors.New("bad request body: data after the JSON object")
	}
	if req.Path == "" {
		return req, errors.New("bad request body: \"path\" is empty")
	}
	if !filepath.IsAbs(req.Path) {
		return req, fmt.Errorf("bad request body: \"path\" %q is not absolute", req.Path)
	}
	if req.SHA256 != "" {
		if b, err := hex.DecodeString(req.SHA256); err != nil || len(b) != 32 {
			return req, fmt.Errorf("bad request body: \"sha256\" %q is not 64 hex digits", req.SHA256)
		}
	}
	return req, nil
}

// writeStatusAfter answers a successful restart or upgrade with the
// plugin's status as it is now.
func (s *Server) writeStatusAfter(w http.ResponseWriter, r *http.Request, name string) {
	p, ok := s.lookup(name)
	if !ok { // removed while we acted on it
		s.writeError(w, r, http.StatusNotFound, unknownPlugin(name).Error())
		return
	}
	s.writeJSON(w, r, http.StatusOK, p)
}

func (s *Server) backendError(w http.ResponseWriter, r *http.Request, op, name string, err error) {
	code := http.StatusInternalServerError
	switch {
	case errors.Is(err, ErrUnknownPlugin):
		code = http.StatusNotFound
	case errors.Is(err, ErrBusy):
		code = http.StatusConflict
	case errors.Is(err, context.Canceled) && r.Context().Err() != nil:
		// The client went away; nobody reads the answer, but log it as such.
		s.logger.Debug(op+" abandoned by client", "plugin", name, "error", err)
	}
	if code == http.StatusInternalServerError {
		s.logger.Error(op+" failed", "plugin", name, "error", err)
	}
	s.writeError(w, r, code, fmt.Sprintf("%s %s: %v", op, name, err))
}

func (s *Server) lookup(name string) (PluginStatus, bool) {
	for _, p := range s.backend.Plugins() {
		if p.Name == name {
			return p, true
		}
	}
	return PluginStatus{}, false
}

func unknownPlugin(name string) error {
	return fmt.Errorf("%w %q", ErrUnknownPlugin, name)
}

func (s *Server) writeJSON(w http.ResponseWriter, r *http.Request, code int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		s.logger.Error("encode response", "path", r.URL.Path, "error", err)
		code, b = http.StatusInternalServerError, []byte(`{"error":"encode response"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	w.Write(append(b, '\n'))
}

func (s *Server) writeError(w http.ResponseWriter, r *http.Request, code int, msg string) {
	if code < 500 {
		s.logger.Debug("request refused", "method", r.Method, "path", r.URL.Path, "status", code, "error", msg)
	}
	s.writeJSON(w, r, code, errorBody{Error: msg})
}

func writeText(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	io.WriteString(w, msg)
}
