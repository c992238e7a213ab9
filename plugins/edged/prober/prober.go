// Package prober runs the liveness, readiness and startup probes of pod
// containers (exec over CRI ExecSync, httpGet, tcpSocket), one worker per
// probe, and keeps their results for the status manager (Ready, Started) and
// the runtime manager (containers to kill).
package prober

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/clock"

	"github.com/edgehive/edgehive/plugins/edged/container"
	"github.com/edgehive/edgehive/plugins/edged/cri"
)

// Result of a probe.
type Result int

// Results. A probe that could not run (e.g. container gone) is Unknown.
const (
	Unknown Result = iota
	Success
	Failure
)

func (r Result) String() string {
	switch r {
	case Success:
		return "success"
	case Failure:
		return "failure"
	}
	return "unknown"
}

// Type of a probe.
type Type int

// Probe types.
const (
	Liveness Type = iota
	Readiness
	Startup
)

func (t Type) String() string {
	switch t {
	case Liveness:
		return "Liveness"
	case Readiness:
		return "Readiness"
	}
	return "Startup"
}

func probeOf(c *v1.Container, t Type) *v1.Probe {
	switch t {
	case Liveness:
		return c.LivenessProbe
	case Readiness:
		return c.ReadinessProbe
	}
	return c.StartupProbe
}

// initial is the result a probe has before it ran on a container.
func initial(t Type) Result {
	if t == Readiness {
		return Failure
	}
	if t == Liveness {
		return Success
	}
	return Unknown
}

// StatusFunc returns the last pod status edged computed (container IDs, states, pod IP).
type StatusFunc func(uid types.UID) (v1.PodStatus, bool)

type key struct {
	uid       types.UID
	container string
	typ       Type
}

type resultKey struct {
	containerID string
	typ         Type
}

// Manager owns the probe workers of every pod.
type Manager struct {
	rt        cri.Runtime
	clock     clock.WithTicker
	log       hclog.Logger
	status    StatusFunc
	onChange  func(uid types.UID)
	httpProbe *http.Client

	mu      sync.Mutex
	workers map[key]*worker
	results map[resultKey]Result
	// failMsg: why a liveness/startup probe failed, by container id.
	failMsg map[resultKey]string

	// OnFailure, when set, is told about every failed probe run (the
	// kubelet's Unhealthy event); set before AddPod.
	OnFailure func(pod *v1.Pod, container string, t Type, output string)
}

// NewManager returns a manager. status reads the pod's current status;
// onChange is called (from a worker) when a result changes.
func NewManager(rt cri.Runtime, clk clock.WithTicker, log hclog.Logger, status StatusFunc, onChange func(types.UID)) *Manager {
	if log == nil {
		log = hclog.NewNullLogger()
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, DisableKeepAlives: true} //nolint:gosec // as the kubelet: probes do not verify certificates
	return &Manager{rt: rt, clock: clk, log: log, status: status, onChange: onChange,
		httpProbe: &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }},
		workers:   map[key]*worker{}, results: map[resultKey]Result{}, failMsg: map[resultKey]string{}}
}

// AddPod starts the workers for the probes of pod's containers that have
// none yet, replaces the workers whose probe changed in the spec and stops
// those whose probe is gone.
func (m *Manager) AddPod(ctx context.Context, pod *v1.Pod) {
	m.mu.Lock()
	defer m.mu.Unlock()
	want := map[key]bool{}
	for _, c := range probed(pod) {
		for _, t := range []Type{Liveness, Readiness, Startup} {
			p := probeOf(c, t)
			if p == nil {
				continue
			}
			k := key{pod.UID, c.Name, t}
			want[k] = true
			if old, ok := m.workers[k]; ok {
				if equality.Semantic.DeepEqual(old.spec, p) {
					continue
				}
				old.stop()
			}
			w := newWorker(m, t, pod, c, p)
			m.workers[k] = w
			go w.run(ctx)
		}
	}
	for k, w := range m.workers {
		if k.uid == pod.UID && !want[k] {
			w.stop()
			delete(m.workers, k)
		}
	}
}

// RemovePod stops the workers of pod uid and drops their results.
func (m *Manager) RemovePod(uid types.UID) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for k, w := range m.workers {
		if k.uid == uid {
			w.stop()
			delete(m.workers, k)
		}
	}
}

// Worker returns the worker of one probe (tests).
func (m *Manager) worker(uid types.UID, container string, t Type) *worker {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.workers[key{uid, container, t}]
}

// Probe runs one probe of a worker now (tests drive workers with it).
func (m *Manager) Probe(ctx context.Context, uid types.UID, container string, t Type) bool {
	w := m.worker(uid, container, t)
	if w == nil {
		return false
	}
	return w.doProbe(ctx)
}

func (m *Manager) result(containerID string, t Type) (Result, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r, ok := m.results[resultKey{containerID, t}]
	return r, ok
}

func (m *Manager) setResult(uid types.UID, containerID string, t Type, r Result, msg string) {
	k := resultKey{containerID, t}
	m.mu.Lock()
	old, had := m.results[k]
	m.results[k] = r
	if r == Failure {
		m.failMsg[k] = msg
	} else {
		delete(m.failMsg, k)
	}
	m.mu.Unlock()
	if (!had || old != r) && m.onChange != nil {
		m.onChange(uid)
	}
}

func (m *Manager) dropResults(containerID string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, t := range []Type{Liveness, Readiness, Startup} {
		delete(m.results, resultKey{containerID, t})
		delete(m.failMsg, resultKey{containerID, t})
	}
}

// Unhealthy says whether the running container containerID of pod must be
// killed: its liveness or startup probe failed. The reason names the probe.
func (m *Manager) Unhealthy(pod *v1.Pod, containerName, containerID string) (string, bool) {
	c := container.FindSpec(pod, containerName)
	if c == nil {
		return "", false
	}
	for _, t := range []Type{Liveness, Startup} {
		if probeOf(c, t) == nil {
			continue
		}
		m.mu.Lock()
		r, msg := m.results[resultKey{containerID, t}], m.failMsg[resultKey{containerID, t}]
		m.mu.Unlock()
		if r == Failure {
			return fmt.Sprintf("Container %s failed %s probe, will be restarted: %s", containerName, strings.ToLower(t.String()), msg), true
		}
	}
	return "", false
}

// Started says whether the running container containerID passed its
// startup probe (true when it has none).
func (m *Manager) Started(pod *v1.Pod, containerName, containerID string) bool {
	c := container.FindSpec(pod, containerName)
	if c == nil || c.StartupProbe == nil {
		return true
	}
	r, _ := m.result(trimID(containerID), Startup)
	return r == Success
}

// probed lists the containers of pod that probes apply to: the app
// containers and the sidecars (init containers that keep running).
func probed(pod *v1.Pod) []*v1.Container {
	var out []*v1.Container
	for i := range pod.Spec.InitContainers {
		if container.IsSidecar(&pod.Spec.InitContainers[i]) {
			out = append(out, &pod.Spec.InitContainers[i])
		}
	}
	for i := range pod.Spec.Containers {
		out = append(out, &pod.Spec.Containers[i])
	}
	return out
}

// UpdatePodStatus sets Started and Ready of pod's running container (and
// sidecar) statuses from the probe results (containerID is
// "containerd://<id>").
func (m *Manager) UpdatePodStatus(pod *v1.Pod, statuses []v1.ContainerStatus) {
	for i := range statuses {
		s := &statuses[i]
		c := container.FindSpec(pod, s.Name)
		running := s.State.Running != nil
		if c == nil || !running {
			continue
		}
		id := trimID(s.ContainerID)
		started := m.Started(pod, c.Name, id)
		ready := started
		if c.ReadinessProbe != nil && ready {
			r, _ := m.result(id, Readiness)
			ready = r == Success
		}
		s.Started = &started
		s.Ready = ready
	}
}

func trimID(id string) string {
	if i := strings.Index(id, "://"); i >= 0 {
		return id[i+3:]
	}
	return id
}

// worker probes one container of one pod.
type worker struct {
	m         *Manager
	typ       Type
	uid       types.UID
	pod       *v1.Pod
	container *v1.Container
	spec      *v1.Probe
	stopCh    chan struct{}
	stopOnce  sync.Once

	mu          sync.Mutex
	containerID string
	lastResult  Result
	resultRun   int
	onHold      bool // after a liveness/startup failure, until the container changes
}

func newWorker(m *Manager, t Type, pod *v1.Pod, c *v1.Container, p *v1.Probe) *worker {
	return &worker{m: m, typ: t, uid: pod.UID, pod: pod, container: c, spec: p, stopCh: make(chan struct{}), lastResult: Unknown}
}

func (w *worker) stop() { w.stopOnce.Do(func() { close(w.stopCh) }) }

func period(p *v1.Probe) time.Duration {
	if p.PeriodSeconds <= 0 {
		return 10 * time.Second
	}
	return time.Duration(p.PeriodSeconds) * time.Second
}

func timeout(p *v1.Probe) time.Duration {
	if p.TimeoutSeconds <= 0 {
		return time.Second
	}
	return time.Duration(p.TimeoutSeconds) * time.Second
}

func threshold(n int32) int {
	if n <= 0 {
		return 1
	}
	return int(n)
}

// run probes every period until stopped or ctx ends.
func (w *worker) run(ctx context.Context) {
	t := w.m.clock.NewTicker(period(w.spec))
	defer t.Stop()
	for {
		// A cancelled or stopped worker probes no more, not even once.
		select {
		case <-ctx.Done():
			return
		case <-w.stopCh:
			return
		default:
		}
		if !w.doProbe(ctx) {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-w.stopCh:
			return
		case <-t.C():
		}
	}
}

// doProbe runs the probe once if it is due; false means the worker should end.
func (w *worker) doProbe(ctx context.Context) bool {
	select {
	case <-w.stopCh:
		return false
	default:
	}
	st, ok := w.m.status(w.uid)
	if !ok {
		return true // no status yet
	}
	var cs *v1.ContainerStatus
	for _, list := range [][]v1.ContainerStatus{st.ContainerStatuses, st.InitContainerStatuses} {
		for i := range list {
			if list[i].Name == w.container.Name {
				cs = &list[i]
			}
		}
	}
	if cs == nil || cs.ContainerID == "" {
		return true
	}
	id := trimID(cs.ContainerID)
	w.mu.Lock()
	if id != w.containerID {
		if w.containerID != "" {
			w.m.dropResults(w.containerID)
		}
		w.containerID, w.onHold, w.resultRun, w.lastResult = id, false, 0, Unknown
		w.mu.Unlock()
		w.m.setResult(w.uid, id, w.typ, initial(w.typ), "")
		w.mu.Lock()
	}
	hold := w.onHold
	w.mu.Unlock()
	if hold {
		return true
	}
	if cs.State.Running == nil {
		if cs.State.Terminated != nil && w.pod.Spec.RestartPolicy == v1.RestartPolicyNever && !container.IsSidecar(w.container) {
			w.m.setResult(w.uid, id, w.typ, Failure, "container terminated")
			return false
		}
		w.m.setResult(w.uid, id, w.typ, initial(w.typ), "")
		return true
	}
	// Liveness and readiness wait for the startup probe.
	if w.typ != Startup && w.container.StartupProbe != nil {
		if r, _ := w.m.result(id, Startup); r != Success {
			return true
		}
	}
	if w.typ == Startup {
		if r, _ := w.m.result(id, Startup); r == Success {
			return true // done for this container
		}
	}
	if w.m.clock.Since(cs.State.Running.StartedAt.Time) < time.Duration(w.spec.InitialDelaySeconds)*time.Second {
		return true
	}
	res, msg := w.m.runProbe(ctx, w.typ, w.pod, st, w.container, id, w.spec)
	if res == Unknown {
		return true
	}
	if res == Failure && w.m.OnFailure != nil {
		w.m.OnFailure(w.pod, w.container.Name, w.typ, msg)
	}
	w.mu.Lock()
	if res == w.lastResult {
		w.resultRun++
	} else {
		w.lastResult, w.resultRun = res, 1
	}
	run := w.resultRun
	w.mu.Unlock()
	if (res == Failure && run < threshold(w.spec.FailureThreshold)) ||
		(res == Success && run < threshold(w.spec.SuccessThreshold)) {
		return true
	}
	if res == Failure {
		w.m.log.Info("probe failed", "probe", w.typ.String(), "pod", w.pod.Namespace+"/"+w.pod.Name, "container", w.container.Name, "output", msg)
	}
	w.m.setResult(w.uid, id, w.typ, res, msg)
	if res == Failure && w.typ != Readiness {
		// The container is killed; wait for its replacement.
		w.mu.Lock()
		w.onHold, w.resultRun = true, 0
		w.mu.Unlock()
	}
	return true
}

// runProbe runs spec once against the container.
func (m *Manager) runProbe(ctx context.Context, t Type, pod *v1.Pod, st v1.PodStatus, c *v1.Container, containerID string, spec *v1.Probe) (Result, string) {
	to := timeout(spec)
	switch {
	case spec.Exec != nil:
		cctx, cancel := context.WithTimeout(ctx, to+2*time.Second)
		defer cancel()
		r, err := m.rt.ExecSync(cctx, containerID, spec.Exec.Command, to)
		if err != nil {
			if ctx.Err() != nil {
				return Unknown, ""
			}
			return Failure, err.Error()
		}
		if r.ExitCode != 0 {
			return Failure, fmt.Sprintf("exit code %d: %s", r.ExitCode, strings.TrimSpace(string(r.Stdout)+string(r.Stderr)))
		}
		return Success, ""
	case spec.HTTPGet != nil:
		return m.httpGet(ctx, pod, st, c, spec.HTTPGet, to)
	case spec.TCPSocket != nil:
		host := spec.TCPSocket.Host
		if host == "" {
			host = podHost(pod, st)
		}
		port, err := resolvePort(spec.TCPSocket.Port, c)
		if err != nil {
			return Failure, err.Error()
		}
		d := net.Dialer{Timeout: to}
		conn, err := d.DialContext(ctx, "tcp", net.JoinHostPort(host, strconv.Itoa(port)))
		if err != nil {
			return Failure, err.Error()
		}
		conn.Close()
		return Success, ""
	case spec.GRPC != nil:
		return grpcProbe(ctx, podHost(pod, st), spec.GRPC, to)
	}
	return Unknown, "no probe handler"
}

// grpcProbe calls the standard gRPC health service (grpc.health.v1) without
// TLS, as the kubelet: SERVING succeeds, anything else fails.
func grpcProbe(ctx context.Context, host string, g *v1.GRPCAction, to time.Duration) (Result, string) {
	ctx, cancel := context.WithTimeout(ctx, to)
	defer cancel()
	conn, err := grpc.NewClient(net.JoinHostPort(host, strconv.Itoa(int(g.Port))), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return Failure, err.Error()
	}
	defer conn.Close()
	service := ""
	if g.Service != nil {
		service = *g.Service
	}
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: service})
	if err != nil {
		return Failure, fmt.Sprintf("health check %s:%d: %v", host, g.Port, err)
	}
	if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		return Failure, fmt.Sprintf("service unhealthy (responded with %q)", resp.GetStatus())
	}
	return Success, ""
}

func podHost(pod *v1.Pod, st v1.PodStatus) string {
	if pod.Spec.HostNetwork || st.PodIP == "" {
		return "127.0.0.1"
	}
	return st.PodIP
}

func resolvePort(p intstr.IntOrString, c *v1.Container) (int, error) {
	if p.Type == intstr.Int {
		if p.IntVal <= 0 || p.IntVal > 65535 {
			return 0, fmt.Errorf("invalid port %d", p.IntVal)
		}
		return int(p.IntVal), nil
	}
	for _, cp := range c.Ports {
		if cp.Name == p.StrVal {
			return int(cp.ContainerPort), nil
		}
	}
	if n, err := strconv.Atoi(p.StrVal); err == nil && n > 0 && n <= 65535 {
		return n, nil
	}
	return 0, fmt.Errorf("port %q not found in container %s", p.StrVal, c.Name)
}

func (m *Manager) httpGet(ctx context.Context, pod *v1.Pod, st v1.PodStatus, c *v1.Container, g *v1.HTTPGetAction, to time.Duration) (Result, string) {
	host := g.Host
	if host == "" {
		host = podHost(pod, st)
	}
	port, err := resolvePort(g.Port, c)
	if err != nil {
		return Failure, err.Error()
	}
	scheme := strings.ToLower(string(g.Scheme))
	if scheme == "" {
		scheme = "http"
	}
	path := g.Path
	if !strings.HasPrefix(path, "/") {
		path = "/" + path
	}
	u := &url.URL{Scheme: scheme, Host: net.JoinHostPort(host, strconv.Itoa(port))}
	full, err := u.Parse(path)
	if err != nil {
		return Failure, err.Error()
	}
	cctx, cancel := context.WithTimeout(ctx, to)
	defer cancel()
	req, err := http.NewRequestWithContext(cctx, http.MethodGet, full.String(), nil)
	if err != nil {
		return Failure, err.Error()
	}
	req.Header.Set("User-Agent", "kube-probe/edgehive")
	req.Header.Set("Accept", "*/*")
	for _, h := range g.HTTPHeaders {
		if strings.EqualFold(h.Name, "Host") {
			req.Host = h.Value
			continue
		}
		req.Header.Add(h.Name, h.Value)
	}
	resp, err := m.httpProbe.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return Unknown, ""
		}
		return Failure, err.Error()
	}
	resp.Body.Close()
	if resp.StatusCode >= 200 && resp.StatusCode < 400 {
		return Success, ""
	}
	return Failure, fmt.Sprintf("HTTP probe failed with statuscode: %d", resp.StatusCode)
}
