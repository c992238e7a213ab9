// Package metaserver is metamanager's MetaServer: a loopback-only, read-only
// Kubernetes API (get, list, watch) over the objects metamanager stores in
// SQLite — pods, configmaps, secrets (opt-in), services, endpoints and nodes
// — in the JSON shapes of the Kubernetes API, so that an application on the
// node can use client-go against it. See ../README.md.
package metaserver

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/edgehive/edgehive/plugins/metamanager/store"
)

// Reader is the part of metamanager's store the server reads.
type Reader interface {
	Get(ctx context.Context, key string) (store.Object, error)
	List(ctx context.Context, typ, namespace string) ([]store.Object, error)
}

var _ Reader = (*store.Store)(nil)

// Server limits.
const (
	// DefaultMaxWatches bounds concurrent watches; more are answered 429.
	DefaultMaxWatches = 256
	// DefaultWatchTimeout ends a watch that asked for no timeoutSeconds
	// (the API server picks 30-60 min); the client simply re-watches.
	DefaultWatchTimeout = 30 * time.Minute
	// writeTimeout bounds one write to a client that stopped reading.
	writeTimeout = 10 * time.Second
)

// Options configure a Server.
type Options struct {
	Secrets      bool          // serve secrets
	MaxWatches   int           // 0: DefaultMaxWatches
	WatchTimeout time.Duration // 0: DefaultWatchTimeout
	Logger       hclog.Logger
	// Decorate, when set, gives the value to serve for a stored object
	// (metamanager puts edged's reported status into pods). Changes reach
	// the hub already decorated.
	Decorate func(ctx context.Context, obj store.Object) json.RawMessage
}

// Server is the MetaServer.
type Server struct {
	store   Reader
	hub     *Hub
	opts    Options
	logger  hclog.Logger
	watches chan struct{} // semaphore of concurrent watches

	mu      sync.Mutex // guards http, ln and served: Start may be retried from another goroutine
	http    *http.Server
	ln      net.Listener
	served  chan struct{} // closed when Serve returns
	closing chan struct{} // closed by Stop: watches end
}

var _ http.Handler = (*Server)(nil)

// New returns a server reading st, with changes from hub.
func New(st Reader, hub *Hub, opts Options) *Server {
	if opts.MaxWatches <= 0 {
		opts.MaxWatches = DefaultMaxWatches
	}
	if opts.WatchTimeout <= 0 {
		opts.WatchTimeout = DefaultWatchTimeout
	}
	if opts.Logger == nil {
		opts.Logger = hclog.NewNullLogger()
	}
	return &Server{store: st, hub: hub, opts: opts, logger: opts.Logger,
		watches: make(chan struct{}, opts.MaxWatches), closing: make(chan struct{})}
}

// Start listens on addr, which must resolve to a loopback address, and
// serves in the background until Stop.
func (s *Server) Start(ctx context.Context, addr string) error {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("metaserver: listen %s: %w", addr, err)
	}
	if ta, ok := ln.Addr().(*net.TCPAddr); !ok || !ta.IP.IsLoopback() {
		_ = ln.Close()
		return fmt.Errorf("metaserver: %s is not a loopback address", ln.Addr())
	}
	srv := &http.Server{
		Handler:           s,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          s.logger.StandardLogger(&hclog.StandardLoggerOptions{ForceLevel: hclog.Debug}),
	}
	served := make(chan struct{})
	s.mu.Lock()
	s.ln, s.http, s.served = ln, srv, served
	s.mu.Unlock()
	go func() {
		defer close(served)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.logger.Error("metaserver stopped", "error", err)
		}
	}()
	s.logger.Info("metaserver listening", "address", ln.Addr().String(), "secrets", s.opts.Secrets)
	return nil
}

// Addr is the address listened on ("" before Start).
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln == nil {
		return ""
	}
	return s.ln.Addr().String()
}

// Stop ends the watches and shuts the server down within ctx.
func (s *Server) Stop(ctx context.Context) error {
	select {
	case <-s.closing:
	default:
		close(s.closing)
	}
	s.mu.Lock()
	srv, served := s.http, s.served
	s.mu.Unlock()
	if srv == nil {
		return nil
	}
	err := srv.Shutdown(ctx)
	if err != nil {
		_ = srv.Close()
	}
	<-served
	if err != nil {
		return fmt.Errorf("metaserver: shutdown: %w", err)
	}
	return nil
}

// request is a parsed API request.
type request struct {
	res       *resource
	namespace string // "" = all namespaces (or cluster-scoped)
	name      string // "" = a collection
	watch     bool
}

// ServeHTTP answers one request.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	path := strings.TrimSuffix(r.URL.Path, "/")
	switch path {
	case "/healthz", "/livez", "/readyz":
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok"))
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		verb := map[string]string{http.MethodPost: "create", http.MethodPut: "update", http.MethodPatch: "patch",
			http.MethodDelete: "delete"}[r.Method]
		if verb == "" {
			verb = r.Method
		}
		gr := schema.GroupResource{}
		if req, err := s.parse(path, r); err == nil {
			gr.Resource = req.res.plural
		}
		st := apierrors.NewMethodNotSupported(gr, verb)
		st.ErrStatus.Message = fmt.Sprintf("the MetaServer is read-only: %s is not supported", verb)
		writeStatus(w, st)
		return
	}
	switch path {
	case "/api":
		writeJSON(w, http.StatusOK, metav1.APIVersions{
			TypeMeta: metav1.TypeMeta{Kind: "APIVersions"}, Versions: []string{"v1"},
			ServerAddressByClientCIDRs: []metav1.ServerAddressByClientCIDR{{ClientCIDR: "0.0.0.0/0", ServerAddress: r.Host}},
		})
		return
	case "/api/v1":
		writeJSON(w, http.StatusOK, s.resourceList())
		return
	}
	req, err := s.parse(path, r)
	if err != nil {
		writeStatus(w, err)
		return
	}
	q := r.URL.Query()
	f, ferr := parseFilter(req, q)
	if ferr != nil {
		writeStatus(w, ferr)
		return
	}
	switch {
	case req.watch:
		s.serveWatch(w, r, req, f, q)
	case req.name != "":
		s.serveGet(w, r, req)
	default:
		s.serveList(w, r, req, f)
	}
}

// parse splits /api/v1/[watch/][namespaces/<ns>/]<plural>[/<name>].
func (s *Server) parse(path string, r *http.Request) (*request, *apierrors.StatusError) {
	notFound := apierrors.NewNotFound(schema.GroupResource{}, "")
	notFound.ErrStatus.Message = "the server could not find the requested resource"
	rest, ok := strings.CutPrefix(path, "/api/v1/")
	if !ok {
		return nil, notFound
	}
	seg := strings.Split(rest, "/")
	req := &request{}
	if seg[0] == "watch" { // the old watch paths
		req.watch = true
		seg = seg[1:]
	}
	if len(seg) >= 3 && seg[0] == "namespaces" {
		req.namespace = seg[1]
		seg = seg[2:]
		if req.namespace == "" {
			return nil, notFound
		}
	}
	if len(seg) == 0 || len(seg) > 2 {
		return nil, notFound
	}
	res, ok := byPlural[seg[0]]
	if !ok || (!res.namespaced && req.namespace != "") {
		return nil, notFound
	}
	if len(seg) == 2 {
		req.name = seg[1]
		if req.name == "" || (res.namespaced && req.namespace == "") {
			return nil, notFound
		}
	}
	req.res = res
	if res.secret && !s.opts.Secrets {
		return nil, apierrors.NewForbidden(schema.GroupResource{Resource: res.plural}, req.name,
			errors.New("the MetaServer does not serve secrets (metaserver.secrets = false)"))
	}
	if r != nil {
		switch v := r.URL.Query().Get("watch"); v {
		case "", "false", "0":
		case "true", "1":
			req.watch = true
		default:
			return nil, apierrors.NewBadRequest(fmt.Sprintf("watch=%q: want true or false", v))
		}
	}
	return req, nil
}

func parseFilter(req *request, q map[string][]string) (filter, *apierrors.StatusError) {
	get := func(k string) string {
		if v := q[k]; len(v) > 0 {
			return v[0]
		}
		return ""
	}
	ls, err := labels.Parse(get("labelSelector"))
	if err != nil {
		return filter{}, apierrors.NewBadRequest(fmt.Sprintf("unable to parse labelSelector: %v", err))
	}
	fs, err := fields.ParseSelector(get("fieldSelector"))
	if err != nil {
		return filter{}, apierrors.NewBadRequest(fmt.Sprintf("unable to parse fieldSelector: %v", err))
	}
	for _, r := range fs.Requirements() {
		if !req.res.supportedField(r.Field) {
			return filter{}, apierrors.NewBadRequest(fmt.Sprintf("field label not supported: %s", r.Field))
		}
	}
	if req.name != "" { // a watch of one object
		fs = fields.AndSelectors(fs, fields.OneTermEqualSelector("metadata.name", req.name))
	}
	for _, k := range []string{"resourceVersion"} {
		if v := get(k); v != "" {
			if _, err := strconv.ParseUint(v, 10, 64); err != nil {
				return filter{}, apierrors.NewBadRequest(fmt.Sprintf("%s=%q is not a resource version this server issued", k, v))
			}
		}
	}
	if v := get("timeoutSeconds"); v != "" {
		if n, err := strconv.ParseInt(v, 10, 64); err != nil || n < 0 {
			return filter{}, apierrors.NewBadRequest(fmt.Sprintf("timeoutSeconds=%q: want a non-negative number", v))
		}
	}
	for _, k := range []string{"sendInitialEvents", "allowWatchBookmarks"} {
		if v := get(k); v != "" {
			if _, err := strconv.ParseBool(v); err != nil {
				return filter{}, apierrors.NewBadRequest(fmt.Sprintf("%s=%q: want true or false", k, v))
			}
		}
	}
	return filter{labels: ls, fields: fs}, nil
}

func (s *Server) serveGet(w http.ResponseWriter, r *http.Request, req *request) {
	key := req.res.storeNamespace(req.namespace) + "/" + req.res.storeType + "/" + req.name
	obj, err := s.store.Get(r.Context(), key)
	switch {
	case errors.Is(err, store.ErrNotFound):
		writeStatus(w, apierrors.NewNotFound(schema.GroupResource{Resource: req.res.plural}, req.name))
		return
	case err != nil:
		s.internal(w, "get", key, err)
		return
	}
	body, err := req.res.render(s.value(r.Context(), obj), s.hub.Revision(obj.Key))
	if err != nil {
		s.internal(w, "render", key, err)
		return
	}
	writeRaw(w, http.StatusOK, body)
}

func (s *Server) serveList(w http.ResponseWriter, r *http.Request, req *request, f filter) {
	// The revision is read before the store: every change after it is in
	// the store or still to come on a watch from it.
	rev := s.hub.Current()
	objs, err := s.store.List(r.Context(), req.res.storeType, req.res.storeNamespace(req.namespace))
	if err != nil {
		s.internal(w, "list", req.res.plural, err)
		return
	}
	var buf bytes.Buffer
	fmt.Fprintf(&buf, `{"kind":%q,"apiVersion":"v1","metadata":{"resourceVersion":"%d"},"items":[`, req.res.kind+"List", rev)
	n := 0
	for _, o := range objs {
		if !f.matches(req.res, o) {
			continue
		}
		item, err := req.res.render(s.value(r.Context(), o), s.hub.Revision(o.Key))
		if err != nil {
			s.logger.Warn("skipping a stored object that is not JSON", "key", o.Key, "error", err)
			continue
		}
		if n > 0 {
			buf.WriteByte(',')
		}
		buf.Write(item)
		n++
	}
	buf.WriteString("]}")
	writeRaw(w, http.StatusOK, buf.Bytes())
}

func (s *Server) serveWatch(w http.ResponseWriter, r *http.Request, req *request, f filter, q map[string][]string) {
	select {
	case s.watches <- struct{}{}:
		defer func() { <-s.watches }()
	default:
		writeStatus(w, apierrors.NewTooManyRequests("too many watches on the MetaServer", 1))
		return
	}
	get := func(k string) string {
		if v := q[k]; len(v) > 0 {
			return v[0]
		}
		return ""
	}
	rv := get("resourceVersion")
	initial := rv == "" || rv == "0" // the API's default for these versions
	asked := false                   // sendInitialEvents=true: end the initial events with a bookmark
	if v := get("sendInitialEvents"); v != "" {
		initial, _ = strconv.ParseBool(v)
		asked = initial
	}
	bookmarks, _ := strconv.ParseBool(get("allowWatchBookmarks"))
	timeout := s.opts.WatchTimeout
	if v := get("timeoutSeconds"); v != "" {
		if n, _ := strconv.ParseInt(v, 10, 64); n > 0 {
			timeout = min(timeout, time.Duration(n)*time.Second)
		}
	}
	ns := req.res.storeNamespace(req.namespace)
	if !req.res.namespaced {
		ns = ""
	}

	var (
		watcher  *Watcher
		startRev uint64
		snapshot []store.Object
	)
	if initial {
		// NotOlderThan rv: our state is always at least as new as a
		// version we issued; a future one is refused below.
		if rv != "" && rv != "0" {
			from, _ := strconv.ParseUint(rv, 10, 64)
			if cur := s.hub.Current(); from > cur {
				writeStatus(w, tooLarge(from, cur))
				return
			}
		}
		watcher, startRev = s.hub.WatchNow(req.res.storeType, ns)
		objs, err := s.store.List(r.Context(), req.res.storeType, req.res.storeNamespace(req.namespace))
		if err != nil {
			watcher.Stop()
			s.internal(w, "watch list", req.res.plural, err)
			return
		}
		snapshot = objs
	} else {
		from, _ := strconv.ParseUint(rv, 10, 64)
		var err error
		watcher, err = s.hub.Watch(req.res.storeType, ns, from)
		switch {
		case errors.Is(err, ErrExpired):
			writeStatus(w, apierrors.NewResourceExpired(fmt.Sprintf("too old resource version: %d (%v)", from, err)))
			return
		case errors.Is(err, ErrTooLarge):
			writeStatus(w, tooLarge(from, s.hub.Current()))
			return
		case err != nil:
			s.internal(w, "watch", req.res.plural, err)
			return
		}
	}
	defer watcher.Stop()

	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-cache, private")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	send := func(typ string, obj json.RawMessage) bool {
		_ = rc.SetWriteDeadline(time.Now().Add(writeTimeout))
		line, _ := json.Marshal(struct {
			Type   string          `json:"type"`
			Object json.RawMessage `json:"object"`
		}{typ, obj})
		if _, err := w.Write(append(line, '\n')); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	if err := rc.Flush(); err != nil {
		return
	}
	for _, o := range snapshot {
		if !f.matches(req.res, o) {
			continue
		}
		obj, err := req.res.render(s.value(r.Context(), o), s.hub.Revision(o.Key))
		if err != nil {
			continue
		}
		if !send(Added, obj) {
			return
		}
	}
	if asked && bookmarks {
		mark, _ := json.Marshal(map[string]any{"kind": req.res.kind, "apiVersion": "v1", "metadata": map[string]any{
			"resourceVersion": strconv.FormatUint(startRev, 10),
			"annotations":     map[string]string{metav1.InitialEventsAnnotationKey: "true"},
		}})
		if !send(Bookmark, mark) {
			return
		}
	}
	deliver := func(c *change) bool {
		typ, ok := f.event(req.res, c)
		if !ok {
			return true
		}
		obj, err := req.res.render(c.obj.Value, c.rev)
		if err != nil {
			return true
		}
		return send(typ, obj)
	}
	for i := range watcher.backlog {
		if !deliver(&watcher.backlog[i]) {
			return
		}
	}
	watcher.backlog = nil
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		select {
		case c, ok := <-watcher.ch:
			if !ok {
				if watcher.Overflowed() {
					s.logger.Warn("closed a watch that fell behind; the client re-watches", "resource", req.res.plural)
				}
				return
			}
			if !deliver(&c) {
				return
			}
		case <-timer.C:
			return
		case <-r.Context().Done():
			return
		case <-s.closing:
			return
		}
	}
}

// value is what to serve for a stored object.
func (s *Server) value(ctx context.Context, obj store.Object) json.RawMessage {
	if s.opts.Decorate == nil {
		return obj.Value
	}
	return s.opts.Decorate(ctx, obj)
}

func tooLarge(from, cur uint64) *apierrors.StatusError {
	st := apierrors.NewTimeoutError(fmt.Sprintf("Too large resource version: %d, current: %d", from, cur), 1)
	st.ErrStatus.Details.Causes = []metav1.StatusCause{{
		Type:    metav1.CauseTypeResourceVersionTooLarge,
		Message: "Too large resource version",
	}}
	return st
}

func (s *Server) resourceList() metav1.APIResourceList {
	out := metav1.APIResourceList{TypeMeta: metav1.TypeMeta{Kind: "APIResourceList", APIVersion: "v1"}, GroupVersion: "v1"}
	for _, r := range resources {
		if r.secret && !s.opts.Secrets {
			continue
		}
		out.APIResources = append(out.APIResources, metav1.APIResource{
			Name: r.plural, Namespaced: r.namespaced, Kind: r.kind, Verbs: metav1.Verbs{"get", "list", "watch"},
		})
	}
	return out
}

func (s *Server) internal(w http.ResponseWriter, op, what string, err error) {
	s.logger.Error("metaserver request failed", "op", op, "what", what, "error", err)
	writeStatus(w, apierrors.NewInternalError(fmt.Errorf("%s %s: %w", op, what, err)))
}

func writeStatus(w http.ResponseWriter, err *apierrors.StatusError) {
	st := err.ErrStatus
	st.Kind, st.APIVersion = "Status", "v1"
	writeJSON(w, int(st.Code), st)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		code, body = http.StatusInternalServerError, []byte(`{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"encode","reason":"InternalError","code":500}`)
	}
	writeRaw(w, code, body)
}

func writeRaw(w http.ResponseWriter, code int, body []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(code)
	_, _ = w.Write(body)
}
