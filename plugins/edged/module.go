// Package edged is the edgehive module that runs pods on the node over CRI,
// the kubelet-derived part of KubeEdge's edgecore: a pod manager, a sync loop
// over config updates, PLEG events, a periodic sync and housekeeping, per-pod
// workers, and the runtime manager's SyncPod. See README.md.
package edged

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	authv1 "k8s.io/api/authentication/v1"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"

	"github.com/edgehive/edgehive/plugins/edged/container"
	"github.com/edgehive/edgehive/plugins/edged/cri"
	"github.com/edgehive/edgehive/plugins/edged/gc"
	"github.com/edgehive/edgehive/plugins/edged/internal/answer"
	"github.com/edgehive/edgehive/plugins/edged/kubeletapi"
	"github.com/edgehive/edgehive/plugins/edged/kuberuntime"
	"github.com/edgehive/edgehive/plugins/edged/node"
	"github.com/edgehive/edgehive/plugins/edged/pleg"
	"github.com/edgehive/edgehive/plugins/edged/podmanager"
	"github.com/edgehive/edgehive/plugins/edged/prober"
	"github.com/edgehive/edgehive/plugins/edged/server"
	"github.com/edgehive/edgehive/plugins/edged/staticpod"
	"github.com/edgehive/edgehive/plugins/edged/status"
	"github.com/edgehive/edgehive/plugins/edged/volume"
	"github.com/edgehive/edgehive/plugins/internal/pluginkit"
	"github.com/edgehive/edgehive/sdk"
)

// Name, Group and Version identify the module to the host.
const (
	Name    = "edged"
	Group   = sdk.GroupEdged
	Version = "0.2.0"
)

// Loop periods, as the kubelet's.
const (
	syncPeriod         = time.Second
	housekeepingPeriod = 2 * time.Second
	resyncInterval     = 10 * time.Second
	retryInterval      = time.Second
	metaManager        = "metamanager"
)

// edgehub's cloud link event (KubeEdge's shape): operation "connect" on
// node/connection with content cloud_connected or cloud_disconnected.
const (
	resourceConnection = "node/connection"
	cloudConnected     = "cloud_connected"
)

// Edged is the edged module.
type Edged struct {
	cfg        config
	clock      clock.WithTicker
	newRuntime func(ctx context.Context, endpoint string) (cri.Runtime, error)
	// staticPeriod is how often static_pod_dir is rescanned.
	staticPeriod time.Duration
	// volumeRefresh is the least time between two fetches of a configMap or secret volume.
	volumeRefresh time.Duration
	// GC periods (the kubelet's: containers every minute, images every 5 minutes).
	containerGCPeriod, imageGCPeriod time.Duration
	// imageFsStats reads the image filesystem's capacity (tests fake it).
	imageFsStats gc.FsStats

	host     sdk.Context
	log      hclog.Logger
	pods     *podmanager.Manager
	configCh chan podUpdate
	// reconnected: size 1, a pending signal already covers a later one.
	reconnected chan struct{}

	// Set once the runtime is connected (run).
	rt       cri.Runtime
	krt      *kuberuntime.Manager
	pleg     *pleg.PLEG
	statuses *status.Manager
	probes   *prober.Manager
	volumes  *volume.Manager
	probeCh  chan types.UID
	events   *eventRecorder
	ready    atomic.Bool
	// sourcesReady: the stored pod list has been read, so runtime pods that
	// are not in the pod manager are orphans.
	sourcesReady atomic.Bool
	loopDone     chan struct{}

	api     *http.Server
	apiAddr string
	// kubeletAPI is the HTTPS kubelet API (kubelet_api.enabled); kapiRT
	// holds its runtime once connected (read by its request goroutines).
	kubeletAPI *kubeletapi.Server
	kapiRT     atomic.Value // kapiRuntime

	// svcCache: services by namespace for serviceCacheTTL, so that a burst of
	// container starts asks metamanager once.
	svcMu    sync.Mutex
	svcCache map[string]serviceList

	mu       sync.Mutex
	invalid  map[types.UID]error // pods whose content did not decode
	workers  map[types.UID]*worker
	nextSync map[types.UID]time.Time
	wg       sync.WaitGroup
}

type podUpdate struct {
	op  string // sdk.OpInsert (upsert) or sdk.OpDelete
	pod *v1.Pod
	// invalid is why the pod's content did not decode (pod is then a stub
	// with its metadata): it is reported Failed, never run.
	invalid error
}

var (
	_ sdk.Module        = (*Edged)(nil)
	_ sdk.HealthChecker = (*Edged)(nil)
	_ sdk.Stopper       = (*Edged)(nil)
)

// New returns an unconfigured module that connects to the configured CRI endpoint.
func New() *Edged {
	return &Edged{clock: clock.RealClock{}, staticPeriod: 5 * time.Second, volumeRefresh: volume.RefreshInterval,
		containerGCPeriod: time.Minute, imageGCPeriod: 5 * time.Minute, newRuntime: func(ctx context.Context, endpoint string) (cri.Runtime, error) {
			return cri.New(ctx, endpoint)
		}}
}

// NewWithRuntime returns a module over rt (tests: cri.FakeRuntime).
func NewWithRuntime(rt cri.Runtime, clk clock.WithTicker) *Edged {
	e := New()
	e.clock = clk
	e.newRuntime = func(context.Context, string) (cri.Runtime, error) { return rt, nil }
	return e
}

// Info identifies the module.
func (e *Edged) Info() sdk.PluginInfo {
	return sdk.PluginInfo{Name: Name, Group: Group, Version: Version, APIVersions: []string{sdk.APIVersion1},
		Description: "pod lifecycle over CRI (kubelet-derived)"}
}

// ConfigSchema declares the config block.
func (e *Edged) ConfigSchema() *sdk.Schema { return schema() }

// SetConfig decodes and validates the config block.
func (e *Edged) SetConfig(cfg *sdk.Config) error {
	c, err := pluginkit.Decode(cfg, defaultConfig(), (*config).validate)
	if err != nil {
		return err
	}
	e.cfg = c
	return nil
}

// Start connects to the runtime in the background and runs the sync loop.
func (e *Edged) Start(ctx context.Context, host sdk.Context) error {
	e.host = host
	e.log = host.Logger()
	e.pods = podmanager.New()
	e.configCh = make(chan podUpdate, 1024)
	e.reconnected = make(chan struct{}, 1)
	e.workers = map[types.UID]*worker{}
	e.invalid = map[types.UID]error{}
	e.nextSync = map[types.UID]time.Time{}
	e.loopDone = make(chan struct{})
	e.probeCh = make(chan types.UID, 256)
	status.HostIP = node.InternalIP("")
	// One quick try now, so a reachable runtime is in use when Start returns.
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	if rt, err := e.newRuntime(cctx, e.cfg.RuntimeEndpoint); err == nil {
		e.setup(ctx, rt)
	} else {
		e.log.Warn("container runtime not reachable; retrying in the background", "endpoint", e.cfg.RuntimeEndpoint, "error", err)
	}
	cancel()
	e.serveAPI()
	if err := e.serveKubeletAPI(); err != nil {
		return err
	}
	go e.run(ctx)
	return nil
}

// kapiRuntime boxes the runtime for atomic.Value (always the same type).
type kapiRuntime struct{ rt kubeletapi.Runtime }

// serveKubeletAPI starts the kubelet HTTPS API when enabled. Unlike the
// read-only API, a failure is an error: it was asked for, and the API
// server cannot reach the node's pods without it.
func (e *Edged) serveKubeletAPI() error {
	k := e.cfg.KubeletAPI
	if !k.Enabled {
		return nil
	}
	var ips []net.IP
	if ip := net.ParseIP(status.HostIP); ip != nil {
		ips = append(ips, ip)
	}
	srv, err := kubeletapi.New(kubeletapi.Config{
		Listen: k.Listen, CertFile: k.CertFile, KeyFile: k.KeyFile, ClientCAFile: k.ClientCAFile,
		CertDir: filepath.Join(e.host.DataDir(), "kubelet-api"), AuthorizedUsers: k.AuthorizedUsers,
		NodeName: e.host.NodeName(), NodeIPs: ips,
	}, kubeletAPISource{apiSource{e}}, e.log.Named("kubeletapi"))
	if err != nil {
		return fmt.Errorf("%s: kubelet_api: %w", Name, err)
	}
	if err := srv.Start(); err != nil {
		return fmt.Errorf("%s: kubelet_api: %w", Name, err)
	}
	e.kubeletAPI = srv
	e.log.Info("kubelet API serving", "address", srv.Addr().String())
	return nil
}

// KubeletAPIAddr is where the kubelet API listens ("" when it does not).
func (e *Edged) KubeletAPIAddr() string {
	if e.kubeletAPI == nil {
		return ""
	}
	return e.kubeletAPI.Addr().String()
}

// kubeletAPISource adds the runtime to the read-only API's source.
type kubeletAPISource struct{ apiSource }

var _ kubeletapi.Source = kubeletAPISource{}

func (s kubeletAPISource) Runtime() kubeletapi.Runtime {
	if v, ok := s.e.kapiRT.Load().(kapiRuntime); ok {
		return v.rt
	}
	return nil
}

// serveAPI opens the read-only API on http_address. A port already taken
// is logged, not fatal: the API is for looking, pods run without it.
func (e *Edged) serveAPI() {
	if e.cfg.HTTPAddress == "" {
		return
	}
	ln, err := net.Listen("tcp", e.cfg.HTTPAddress)
	if err != nil {
		e.log.Warn("read-only API not served", "address", e.cfg.HTTPAddress, "error", err)
		return
	}
	e.api = &http.Server{Handler: server.New(apiSource{e}), ReadHeaderTimeout: 10 * time.Second}
	e.apiAddr = ln.Addr().String()
	go func() {
		if err := e.api.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			e.log.Warn("read-only API stopped", "error", err)
		}
	}()
}

// APIAddr is where the read-only API listens ("" when it does not).
func (e *Edged) APIAddr() string { return e.apiAddr }

// apiSource shows the pod manager's pods with their last computed status.
type apiSource struct{ e *Edged }

func (s apiSource) Pods() []*v1.Pod {
	var out []*v1.Pod
	for _, p := range s.e.pods.Pods() {
		c := p.DeepCopy()
		if s.e.statuses != nil {
			if st, ok := s.e.statuses.Get(p.UID); ok {
				c.Status = st
			}
		}
		out = append(out, c)
	}
	return out
}

func (s apiSource) LogDir(pod *v1.Pod) string {
	if s.e.krt == nil {
		return ""
	}
	return s.e.krt.LogDir(pod)
}

// setup builds the runtime side and adopts what runs: the first relist,
// before any sync, finds the pods already there.
func (e *Edged) setup(ctx context.Context, rt cri.Runtime) {
	e.rt = rt
	cpu, mem := node.Allocatable()
	e.krt = kuberuntime.New(e.rt, e.clock, e.log.Named("kuberuntime"), kuberuntime.Config{
		SandboxImage: e.cfg.SandboxImage, PodLogsRoot: filepath.Join(e.host.DataDir(), "pods"),
		ClusterDNS: e.cfg.ClusterDNS, ClusterDomain: e.cfg.ClusterDomain, MaxDeadPerName: max(e.cfg.MaxDeadContainersPerPod, 1),
		NodeCPU: cpu, NodeMemory: mem,
	})
	e.krt.Fetch = e.fetchObject
	e.krt.Services = e.listServices
	e.krt.HostIP = status.HostIP
	e.events = newEventRecorder(e.host.NodeName(), e.clock, func(ctx context.Context, msg *sdk.Message) error {
		return e.host.Send(ctx, metaManager, msg)
	})
	if e.cfg.ReportEvents {
		e.krt.Events = e.events.record
	}
	e.pleg = pleg.New(e.rt, e.clock, e.log.Named("pleg"))
	e.statuses = status.NewManager(e.sendStatus)
	e.probes = prober.NewManager(e.rt, e.clock, e.log.Named("prober"), e.statuses.Get, func(uid types.UID) {
		select {
		case e.probeCh <- uid:
		default: // a full queue: the periodic sync catches up
		}
	})
	e.krt.Probes = e.probes
	if e.cfg.ReportEvents {
		e.probes.OnFailure = func(pod *v1.Pod, c string, t prober.Type, out string) {
			e.events.record(pod, c, v1.EventTypeWarning, "Unhealthy", fmt.Sprintf("%s probe failed: %s", t, out))
		}
	}
	e.volumes = volume.New(filepath.Join(e.host.DataDir(), "pods"), e.fetchObject, e.clock, e.log.Named("volume"))
	e.volumes.Refresh = e.volumeRefresh
	e.volumes.Tokens = e.fetchToken
	e.volumes.NodeCPU, e.volumes.NodeMemory = cpu, mem
	e.krt.Volumes = e.volumes.Setup
	e.pleg.Relist(ctx)
	if krt, ok := rt.(kubeletapi.Runtime); ok {
		e.kapiRT.Store(kapiRuntime{krt})
	}
	e.ready.Store(true)
}

// Stop waits for the loops to end (ctx is already cancelled by the host).
func (e *Edged) Stop(ctx context.Context) error {
	if e.api != nil {
		_ = e.api.Shutdown(ctx)
	}
	if e.kubeletAPI != nil {
		if err := e.kubeletAPI.Shutdown(ctx); err != nil {
			e.log.Warn("kubelet API shutdown", "error", err)
		}
	}
	if e.loopDone == nil {
		return nil
	}
	select {
	case <-e.loopDone:
	case <-ctx.Done():
		return ctx.Err()
	}
	e.wg.Wait()
	if e.rt != nil {
		return e.rt.Close()
	}
	return nil
}

// Health reports whether the runtime is connected and relisted lately.
func (e *Edged) Health(ctx context.Context) error {
	if !e.ready.Load() {
		return errors.New("container runtime not connected")
	}
	if last := e.pleg.LastRelist(); e.clock.Since(last) > 3*time.Minute {
		return fmt.Errorf("PLEG has not relisted since %s", last.Format(time.RFC3339))
	}
	return nil
}

// httpPort is the kubelet endpoint's port reported in node status: the
// kubelet API's when it serves, else http_address's.
func (e *Edged) httpPort() int32 {
	if e.kubeletAPI != nil {
		if a, ok := e.kubeletAPI.Addr().(*net.TCPAddr); ok {
			return int32(a.Port)
		}
	}
	_, p, err := net.SplitHostPort(e.cfg.HTTPAddress)
	if err != nil {
		return 10350
	}
	n, err := strconv.Atoi(p)
	if err != nil || n == 0 {
		return 10350
	}
	return int32(n)
}

// Handle takes pod insert/update/delete messages from metamanager, and
// edgehub's cloud link events.
func (e *Edged) Handle(ctx context.Context, msg *sdk.Message) error {
	if msg.Router.Resource == resourceConnection {
		e.connectionEvent(msg)
		return nil
	}
	parts := strings.Split(msg.Router.Resource, "/")
	if len(parts) != 3 || parts[1] != "pod" {
		e.log.Debug("ignored message", "operation", msg.Router.Operation, "resource", msg.Router.Resource)
		return nil
	}
	var op string
	switch msg.Router.Operation {
	case sdk.OpInsert, sdk.OpUpdate:
		op = sdk.OpInsert
	case sdk.OpDelete:
		op = sdk.OpDelete
	default:
		return nil
	}
	pod, err := decodePod(msg.Content)
	var invalid *errInvalidPod
	switch {
	case errors.As(err, &invalid) && op == sdk.OpInsert:
		e.log.Warn("pod content does not decode; reporting it Failed", "resource", msg.Router.Resource, "error", err)
	case errors.As(err, &invalid):
		err = nil // a delete needs only the metadata
	case err != nil:
		return fmt.Errorf("pod %s: %w", msg.Router.Resource, err)
	}
	if isMirrorPod(pod) {
		return nil // a static pod's mirror: the manifest is the source
	}
	if pod.Namespace == "" {
		pod.Namespace = parts[0]
	}
	if pod.Name == "" {
		pod.Name = parts[2]
	}
	select {
	case e.configCh <- podUpdate{op: op, pod: pod, invalid: err}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// connectionEvent: once the cloud is connected again, the sync loop resends
// every pod's status (see resendStatuses).
func (e *Edged) connectionEvent(msg *sdk.Message) {
	if msg.ContentString() != cloudConnected {
		e.log.Debug("cloud link event", "operation", msg.Router.Operation, "content", msg.ContentString())
		return
	}
	select {
	case e.reconnected <- struct{}{}:
	default: // one is pending already
	}
}

// run connects to the runtime, then runs the loops until ctx ends.
func (e *Edged) run(ctx context.Context) {
	defer close(e.loopDone)
	for !e.ready.Load() {
		rt, err := e.newRuntime(ctx, e.cfg.RuntimeEndpoint)
		if err == nil {
			e.setup(ctx, rt)
			break
		}
		e.log.Debug("container runtime not reachable; retrying", "endpoint", e.cfg.RuntimeEndpoint, "error", err)
		select {
		case <-ctx.Done():
			return
		case <-e.clock.After(5 * time.Second):
		}
	}
	e.wg.Add(2)
	if e.cfg.RegisterNode {
		r := node.New(node.Config{Name: e.host.NodeName(), Labels: e.cfg.NodeLabels, Port: e.httpPort(),
			Frequency: time.Duration(e.cfg.NodeStatusUpdateFrequency), Source: Name, StorageDir: e.host.DataDir()}, e.host, e.rt, e.clock, e.log.Named("node"))
		e.wg.Add(1)
		go func() { defer e.wg.Done(); r.Run(ctx) }()
	}
	if e.cfg.StaticPodDir != "" {
		e.wg.Add(1)
		go func() { defer e.wg.Done(); e.watchStaticPods(ctx) }()
	}
	e.wg.Add(2)
	go func() { defer e.wg.Done(); e.events.run(ctx) }()
	go func() { defer e.wg.Done(); e.garbageCollect(ctx) }()
	go func() { defer e.wg.Done(); e.pleg.Run(ctx) }()
	go func() { defer e.wg.Done(); e.loadPods(ctx) }()
	e.syncLoop(ctx)
}

// garbageCollect runs container GC and image GC on their periods.
func (e *Edged) garbageCollect(ctx context.Context) {
	cgc := gc.NewContainerGC(e.rt, e.clock, e.log.Named("gc"), gc.ContainerPolicy{MaxPerPodContainer: max(e.cfg.MaxDeadContainersPerPod, 1)})
	igc := gc.NewImageGC(e.rt, e.clock, e.log.Named("gc"), gc.ImagePolicy{HighThresholdPercent: e.cfg.ImageGCHighThreshold,
		LowThresholdPercent: e.cfg.ImageGCLowThreshold, MinAge: 2 * time.Minute, Keep: []string{e.cfg.SandboxImage}}, e.imageFsStats)
	ct := e.clock.NewTicker(e.containerGCPeriod)
	defer ct.Stop()
	it := e.clock.NewTicker(e.imageGCPeriod)
	defer it.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ct.C():
			if !e.sourcesReady.Load() {
				continue // what is dead may still be adopted
			}
			if c, s, err := cgc.GarbageCollect(ctx); err != nil || c+s > 0 {
				e.log.Info("container GC", "containers_removed", c, "sandboxes_removed", s, "error", err)
			}
		case <-it.C():
			if freed, err := igc.GarbageCollect(ctx); err != nil || freed > 0 {
				e.log.Info("image GC", "freed_bytes", freed, "error", err)
			}
		}
	}
}

// watchStaticPods rescans static_pod_dir every staticPodPeriod: new or
// changed manifests are upserted, removed ones deleted. Static pods need
// neither the cloud nor metamanager.
func (e *Edged) watchStaticPods(ctx context.Context) {
	known := map[types.UID]*v1.Pod{}
	bad := map[string]bool{}
	t := e.clock.NewTicker(e.staticPeriod)
	defer t.Stop()
	for {
		pods, errs := staticpod.Scan(e.cfg.StaticPodDir, e.host.NodeName())
		nowBad := map[string]bool{}
		for _, err := range errs {
			if !bad[err.Error()] {
				e.log.Warn("static pod manifest", "error", err)
			}
			nowBad[err.Error()] = true
		}
		bad = nowBad
		add, del, next := staticpod.Diff(known, pods)
		known = next
		var ups []podUpdate
		for _, p := range del {
			ups = append(ups, podUpdate{op: sdk.OpDelete, pod: p})
		}
		for _, p := range add {
			ups = append(ups, podUpdate{op: sdk.OpInsert, pod: p})
		}
		for _, u := range ups {
			e.log.Info("static pod", "op", u.op, "pod", u.pod.Namespace+"/"+u.pod.Name)
			select {
			case e.configCh <- u:
			case <-ctx.Done():
				return
			}
			e.sendMirrorPod(ctx, u)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C():
		}
	}
}

// sendMirrorPod tells the cloud about a static pod, as the kubelet's mirror
// pod and KubeEdge's wire do: insert (or delete) on <ns>/pod/<name> with the
// pod annotated kubernetes.io/config.mirror. Best effort: static pods run
// without a cloud.
func (e *Edged) sendMirrorPod(ctx context.Context, u podUpdate) {
	mirror := u.pod.DeepCopy()
	if mirror.Annotations == nil {
		mirror.Annotations = map[string]string{}
	}
	mirror.Annotations[staticpod.AnnotationMirror] = mirror.Annotations[staticpod.AnnotationHash]
	msg := sdk.NewMessage("").BuildRouter(Name, sdk.GroupMeta, mirror.Namespace+"/pod/"+mirror.Name, u.op)
	if err := msg.FillBody(mirror); err != nil {
		return
	}
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := e.host.Send(sctx, metaManager, msg); err != nil {
		e.log.Debug("mirror pod not sent", "pod", mirror.Namespace+"/"+mirror.Name, "error", err)
	}
}

// isMirrorPod: the cloud's copy of a static pod; the manifest is what runs.
func isMirrorPod(pod *v1.Pod) bool {
	_, ok := pod.Annotations[staticpod.AnnotationMirror]
	return ok
}

// loadPods asks metamanager for the stored pods (they come back after a restart).
func (e *Edged) loadPods(ctx context.Context) {
	for attempt := 0; ; attempt++ {
		pods, err := e.queryPods(ctx)
		if err == nil {
			for _, p := range pods {
				select {
				case e.configCh <- podUpdate{op: sdk.OpInsert, pod: p}:
				case <-ctx.Done():
					return
				}
			}
			e.sourcesReady.Store(true)
			e.log.Info("stored pods loaded", "count", len(pods))
			return
		}
		e.log.Warn("pod list query failed; orphan cleanup waits for it", "error", err, "attempt", attempt)
		select {
		case <-ctx.Done():
			return
		case <-e.clock.After(5 * time.Second):
		}
	}
}

// queryList asks metamanager for a list (resource "<ns>/<kind>") and returns
// its items' JSON; metamanager may store each item as a JSON string.
func (e *Edged) queryList(ctx context.Context, group, resource string, timeout time.Duration) ([]json.RawMessage, error) {
	qctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	msg := sdk.NewMessage("").BuildRouter(Name, group, resource, sdk.OpQuery)
	resp, err := e.host.SendSync(qctx, metaManager, msg)
	if err != nil {
		return nil, err
	}
	if resp.Router.Operation == sdk.OpError {
		return nil, fmt.Errorf("metamanager: %s", resp.ContentString())
	}
	var items []json.RawMessage
	if err := resp.DecodeContent(&items); err != nil {
		return nil, err
	}
	for i, raw := range items {
		var s string
		if json.Unmarshal(raw, &s) == nil {
			items[i] = json.RawMessage(s)
		}
	}
	return items, nil
}

func (e *Edged) queryPods(ctx context.Context) ([]*v1.Pod, error) {
	items, err := e.queryList(ctx, sdk.GroupEdged, "default/pod", 10*time.Second)
	if err != nil {
		return nil, err
	}
	var out []*v1.Pod
	for _, raw := range items {
		p, err := decodePod(raw)
		if err != nil {
			var invalid *errInvalidPod
			if !errors.As(err, &invalid) {
				e.log.Warn("stored pod not decodable", "error", err)
				continue
			}
		}
		if p.Spec.NodeName != "" && p.Spec.NodeName != e.host.NodeName() || isMirrorPod(p) {
			continue
		}
		out = append(out, p)
	}
	return out, nil
}

// fetchObject asks metamanager for a configMap or secret (volume.Fetcher).
func (e *Edged) fetchObject(ctx context.Context, kind, namespace, name string) (map[string][]byte, error) {
	qctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	msg := sdk.NewMessage("").BuildRouter(Name, sdk.GroupMeta, namespace+"/"+kind+"/"+name, sdk.OpQuery)
	resp, err := e.host.SendSync(qctx, metaManager, msg)
	if err != nil {
		return nil, err
	}
	return decodeObject(kind, resp)
}

// fetchToken asks for a service account token bound to pod: KubeEdge's
// query on <ns>/serviceaccounttoken/<sa> with an authentication.k8s.io/v1
// TokenRequest, answered with the TokenRequest filled in.
func (e *Edged) fetchToken(ctx context.Context, pod *v1.Pod, sa, audience string, exp int64) (volume.Token, error) {
	qctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	tr := &authv1.TokenRequest{
		TypeMeta:   metav1.TypeMeta{APIVersion: "authentication.k8s.io/v1", Kind: "TokenRequest"},
		ObjectMeta: metav1.ObjectMeta{Name: sa, Namespace: pod.Namespace},
		Spec: authv1.TokenRequestSpec{ExpirationSeconds: &exp,
			BoundObjectRef: &authv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID}},
	}
	if audience != "" {
		tr.Spec.Audiences = []string{audience}
	}
	msg := sdk.NewMessage("").BuildRouter(Name, sdk.GroupMeta, pod.Namespace+"/serviceaccounttoken/"+sa, sdk.OpQuery)
	if err := msg.FillBody(tr); err != nil {
		return volume.Token{}, err
	}
	resp, err := e.host.SendSync(qctx, metaManager, msg)
	if err != nil {
		return volume.Token{}, err
	}
	raw, err := answer.Decode(resp)
	if err != nil {
		return volume.Token{}, err
	}
	got := &authv1.TokenRequest{}
	if err := json.Unmarshal(raw, got); err != nil {
		return volume.Token{}, fmt.Errorf("token request answer: %w", err)
	}
	if got.Status.Token == "" {
		return volume.Token{}, errors.New("token request answered without a token")
	}
	return volume.Token{Value: got.Status.Token, Expires: got.Status.ExpirationTimestamp.Time}, nil
}

type serviceList struct {
	at   time.Time
	svcs []*v1.Service
}

// serviceCacheTTL is how long a namespace's service list is reused.
const serviceCacheTTL = 5 * time.Second

// listServices asks metamanager for the services of a namespace (a list
// query "<ns>/service", answered from its store), for the service
// environment variables; answers are reused for serviceCacheTTL. Short
// timeout: a container start waits for it.
func (e *Edged) listServices(ctx context.Context, namespace string) ([]*v1.Service, error) {
	now := e.clock.Now()
	e.svcMu.Lock()
	if c, ok := e.svcCache[namespace]; ok && now.Sub(c.at) < serviceCacheTTL {
		e.svcMu.Unlock()
		return c.svcs, nil
	}
	e.svcMu.Unlock()
	svcs, err := e.queryServices(ctx, namespace)
	if err != nil {
		return nil, err
	}
	e.svcMu.Lock()
	if e.svcCache == nil {
		e.svcCache = map[string]serviceList{}
	}
	e.svcCache[namespace] = serviceList{at: now, svcs: svcs}
	e.svcMu.Unlock()
	return svcs, nil
}

func (e *Edged) queryServices(ctx context.Context, namespace string) ([]*v1.Service, error) {
	items, err := e.queryList(ctx, sdk.GroupMeta, namespace+"/service", 2*time.Second)
	if err != nil {
		return nil, err
	}
	var out []*v1.Service
	for _, raw := range items {
		svc := &v1.Service{}
		if err := json.Unmarshal(raw, svc); err != nil {
			continue
		}
		if svc.Namespace == "" || svc.Namespace == namespace {
			out = append(out, svc)
		}
	}
	return out, nil
}

// decodeObject reads a metamanager answer to a configMap or secret query
// (see package answer for its shapes). An answer saying the object does not
// exist (an API error NotFound, metamanager's "not found") wraps
// volume.ErrNotFound: optional references treat it as absent. Other errors,
// such as Forbidden, keep the pod waiting with the cloud's message.
func decodeObject(kind string, resp *sdk.Message) (map[string][]byte, error) {
	raw, err := answer.Decode(resp)
	if err != nil {
		return nil, err
	}
	out := map[string][]byte{}
	switch kind {
	case volume.KindConfigMap:
		cm := &v1.ConfigMap{}
		if err := json.Unmarshal(raw, cm); err != nil {
			return nil, fmt.Errorf("configmap: %w", err)
		}
		for k, v := range cm.Data {
			out[k] = []byte(v)
		}
		for k, v := range cm.BinaryData {
			out[k] = v
		}
	case volume.KindSecret:
		sec := &v1.Secret{}
		if err := json.Unmarshal(raw, sec); err != nil {
			return nil, fmt.Errorf("secret: %w", err)
		}
		for k, v := range sec.Data {
			out[k] = v
		}
		for k, v := range sec.StringData {
			out[k] = []byte(v)
		}
	default:
		return nil, fmt.Errorf("kind %q unknown", kind)
	}
	return out, nil
}

func (e *Edged) sendStatus(ctx context.Context, uid types.UID, namespace, name string, patch []byte) error {
	msg := sdk.NewMessage("").BuildRouter(Name, sdk.GroupMeta, namespace+"/podpatch/"+name, sdk.OpPatch)
	if err := msg.FillBody(string(patch)); err != nil {
		return err
	}
	return e.host.Send(ctx, metaManager, msg)
}

// sendPodDelete tells the cloud a pod with a deletionTimestamp is gone.
func (e *Edged) sendPodDelete(ctx context.Context, pod *v1.Pod) error {
	msg := sdk.NewMessage("").BuildRouter(Name, sdk.GroupMeta, pod.Namespace+"/pod/"+pod.Name, sdk.OpDelete)
	if err := msg.FillBody(map[string]any{"gracePeriodSeconds": 0, "preconditions": map[string]any{"uid": pod.UID}}); err != nil {
		return err
	}
	return e.host.Send(ctx, metaManager, msg)
}

// syncLoop is the kubelet's syncLoop: one iteration per input.
func (e *Edged) syncLoop(ctx context.Context) {
	syncTicker := e.clock.NewTicker(syncPeriod)
	defer syncTicker.Stop()
	hkTicker := e.clock.NewTicker(housekeepingPeriod)
	defer hkTicker.Stop()
	for e.syncLoopIteration(ctx, syncTicker.C(), hkTicker.C()) {
	}
}

func (e *Edged) syncLoopIteration(ctx context.Context, syncCh, hkCh <-chan time.Time) bool {
	select {
	case <-ctx.Done():
		return false
	case u := <-e.configCh:
		switch u.op {
		case sdk.OpInsert:
			e.mu.Lock()
			if u.invalid != nil {
				e.invalid[u.pod.UID] = u.invalid
			} else {
				delete(e.invalid, u.pod.UID)
			}
			e.mu.Unlock()
			if old := e.pods.Upsert(u.pod); old != nil {
				e.dispatch(ctx, old, true)
			}
			e.dispatch(ctx, u.pod, false)
		case sdk.OpDelete:
			pod := u.pod
			if u.pod.UID == "" {
				if p, ok := e.pods.GetByName(u.pod.Namespace, u.pod.Name); ok {
					pod = p
				}
			}
			if pod.UID == "" {
				return true
			}
			e.pods.Delete(pod.UID)
			e.dispatch(ctx, pod, true)
		}
	case uid := <-e.probeCh:
		if pod, ok := e.pods.GetByUID(uid); ok {
			e.dispatch(ctx, pod, false)
		}
	case ev := <-e.pleg.Watch():
		if pod, ok := e.pods.GetByUID(ev.ID); ok {
			e.dispatch(ctx, pod, false)
		}
	case <-syncCh:
		now := e.clock.Now()
		for _, pod := range e.pods.Pods() {
			e.mu.Lock()
			due := !now.Before(e.nextSync[pod.UID])
			e.mu.Unlock()
			if due {
				e.dispatch(ctx, pod, false)
			}
		}
	case <-hkCh:
		e.housekeeping(ctx)
	case <-e.reconnected:
		e.resendStatuses(ctx)
	}
	return true
}

// resendStatuses sends every pod's current status once more, as the pod
// workers compute it next: statuses sent while the cloud was unreachable may
// have been lost, and the cloud answers a status of a pod it no longer has
// (force-deleted meanwhile) by deleting it here.
func (e *Edged) resendStatuses(ctx context.Context) {
	e.statuses.ResendAll()
	pods := e.pods.Pods()
	e.log.Info("cloud connected: resending pod statuses", "pods", len(pods))
	for _, pod := range pods {
		e.dispatch(ctx, pod, false)
	}
}

// housekeeping kills runtime pods edged no longer has, once the sources are known.
func (e *Edged) housekeeping(ctx context.Context) {
	if !e.sourcesReady.Load() {
		return
	}
	for uid, info := range e.pleg.Pods() {
		if _, ok := e.pods.GetByUID(uid); ok {
			continue
		}
		e.mu.Lock()
		_, busy := e.workers[uid]
		e.mu.Unlock()
		if busy {
			continue
		}
		e.log.Info("removing orphaned pod", "pod", info.Namespace+"/"+info.Name, "uid", uid)
		stub := &v1.Pod{}
		stub.UID, stub.Name, stub.Namespace = uid, info.Name, info.Namespace
		e.dispatch(ctx, stub, true)
	}
}

// worker serialises the work of one pod.
type worker struct {
	signal    chan struct{}
	mu        sync.Mutex
	pod       *v1.Pod
	terminate bool
}

// dispatch hands pod to its worker, starting one if needed. The latest
// update wins; a termination is never overridden.
func (e *Edged) dispatch(ctx context.Context, pod *v1.Pod, terminate bool) {
	e.mu.Lock()
	w, ok := e.workers[pod.UID]
	if !ok {
		w = &worker{signal: make(chan struct{}, 1)}
		e.workers[pod.UID] = w
		e.wg.Add(1)
		go e.podWorker(ctx, pod.UID, w)
	}
	e.nextSync[pod.UID] = e.clock.Now().Add(resyncInterval)
	e.mu.Unlock()
	w.mu.Lock()
	if !w.terminate {
		w.pod, w.terminate = pod, terminate
	}
	w.mu.Unlock()
	select {
	case w.signal <- struct{}{}:
	default:
	}
}

func (e *Edged) podWorker(ctx context.Context, uid types.UID, w *worker) {
	defer e.wg.Done()
	for {
		select {
		case <-ctx.Done():
			return
		case <-w.signal:
		}
		w.mu.Lock()
		pod, terminate := w.pod, w.terminate
		w.mu.Unlock()
		if terminate {
			e.terminatePod(ctx, pod)
			e.mu.Lock()
			delete(e.workers, uid)
			delete(e.nextSync, uid)
			delete(e.invalid, uid)
			e.mu.Unlock()
			return
		}
		next := e.syncPod(ctx, pod)
		e.mu.Lock()
		e.nextSync[uid] = e.clock.Now().Add(next)
		e.mu.Unlock()
	}
}

func (e *Edged) reasons(uid types.UID) map[string]status.Reason {
	out := map[string]status.Reason{}
	for k, v := range e.krt.Reasons(uid) {
		out[k] = status.Reason{Reason: v.Reason, Message: v.Message}
	}
	return out
}

func (e *Edged) updateStatus(ctx context.Context, pod *v1.Pod) {
	ps, err := e.krt.GetPodStatus(ctx, pod.UID, pod.Name, pod.Namespace)
	if err != nil {
		e.log.Warn("pod status", "pod", pod.Namespace+"/"+pod.Name, "error", err)
		return
	}
	e.pleg.Set(pod.UID, ps, e.clock.Now())
	old, ok := e.statuses.Get(pod.UID)
	var oldp *v1.PodStatus
	if ok {
		oldp = &old
	}
	now := e.clock.Now()
	st := status.ComputeWith(pod, ps, e.reasons(pod.UID), now, oldp, e.probes.UpdatePodStatus)
	status.SetResizeConditions(&st, pod, ps, e.krt.ResizeStatus(pod), now, oldp)
	if _, err := e.statuses.Set(ctx, pod, st); err != nil {
		e.log.Warn("status not sent", "error", err)
	}
}

// syncPod is one pass of a pod worker; it returns when to sync again.
func (e *Edged) syncPod(ctx context.Context, pod *v1.Pod) time.Duration {
	name := pod.Namespace + "/" + pod.Name
	e.mu.Lock()
	err := e.invalid[pod.UID]
	e.mu.Unlock()
	if err == nil {
		err = validatePod(pod)
	}
	if err != nil {
		st := v1.PodStatus{Phase: v1.PodFailed, Reason: ReasonInvalidPodSpec, Message: err.Error()}
		if _, serr := e.statuses.Set(ctx, pod, st); serr != nil {
			return retryInterval
		}
		return time.Hour
	}
	if pod.DeletionTimestamp != nil {
		ps, err := e.krt.GetPodStatus(ctx, pod.UID, pod.Name, pod.Namespace)
		if err == nil {
			err = e.krt.KillPod(ctx, pod, ps, kuberuntime.GracePeriod(pod), true)
		}
		if err == nil {
			err = e.volumes.Cleanup(pod.UID)
		}
		if err == nil {
			err = e.sendPodDelete(ctx, pod)
		}
		if err != nil {
			e.log.Warn("terminating pod", "pod", name, "error", err)
			return retryInterval
		}
		return resyncInterval
	}
	ps, err := e.krt.GetPodStatus(ctx, pod.UID, pod.Name, pod.Namespace)
	if err != nil {
		e.log.Warn("pod status", "pod", name, "error", err)
		return retryInterval
	}
	next := resyncInterval
	if d := pod.Spec.ActiveDeadlineSeconds; d != nil {
		if st, ok := e.statuses.Get(pod.UID); ok && st.StartTime != nil {
			left := time.Duration(*d)*time.Second - e.clock.Since(st.StartTime.Time)
			if left <= 0 {
				return e.deadlineExceeded(ctx, pod, ps)
			}
			next = min(next, left)
		}
	}
	res, err := e.krt.SyncPod(ctx, pod, ps)
	e.updateStatus(ctx, pod)
	e.probes.AddPod(ctx, pod)
	if err != nil {
		e.log.Info("sync pod", "pod", name, "error", err)
		if res.BackOff > 0 {
			return min(res.BackOff+100*time.Millisecond, resyncInterval)
		}
		return retryInterval
	}
	if len(res.Started) > 0 {
		e.log.Info("containers started", "pod", name, "containers", res.Started)
	}
	return next
}

// Reason and message of a pod stopped by activeDeadlineSeconds, as the kubelet's.
const (
	reasonDeadlineExceeded  = "DeadlineExceeded"
	messageDeadlineExceeded = "Pod was active on the node longer than the specified deadline"
)

// deadlineExceeded stops a pod past its activeDeadlineSeconds and reports
// it Failed; it stays stopped (every later sync lands here again).
func (e *Edged) deadlineExceeded(ctx context.Context, pod *v1.Pod, ps *container.PodStatus) time.Duration {
	if err := e.krt.KillPod(ctx, pod, ps, kuberuntime.GracePeriod(pod), false); err != nil {
		e.log.Warn("stopping a pod past its deadline", "pod", pod.Namespace+"/"+pod.Name, "error", err)
		return retryInterval
	}
	if ps2, err := e.krt.GetPodStatus(ctx, pod.UID, pod.Name, pod.Namespace); err == nil {
		ps = ps2
	}
	old, ok := e.statuses.Get(pod.UID)
	var oldp *v1.PodStatus
	if ok {
		oldp = &old
	}
	if !ok || old.Reason != reasonDeadlineExceeded {
		e.krt.Event(pod, "", v1.EventTypeNormal, reasonDeadlineExceeded, messageDeadlineExceeded)
	}
	st := status.ComputeWith(pod, ps, e.reasons(pod.UID), e.clock.Now(), oldp, e.probes.UpdatePodStatus)
	st.Phase, st.Reason, st.Message = v1.PodFailed, reasonDeadlineExceeded, messageDeadlineExceeded
	for i := range st.ContainerStatuses {
		st.ContainerStatuses[i].Ready = false
	}
	for i := range st.Conditions {
		if c := &st.Conditions[i]; c.Type == v1.PodReady || c.Type == v1.ContainersReady {
			if c.Status == v1.ConditionTrue {
				c.Status, c.Reason, c.LastTransitionTime = v1.ConditionFalse, "PodFailed", metav1.NewTime(e.clock.Now().Truncate(time.Second))
			}
		}
	}
	if _, err := e.statuses.Set(ctx, pod, st); err != nil {
		return retryInterval
	}
	return resyncInterval
}

// terminatePod stops and removes everything of pod and forgets it.
func (e *Edged) terminatePod(ctx context.Context, pod *v1.Pod) {
	for attempt := 0; ctx.Err() == nil; attempt++ {
		ps, err := e.krt.GetPodStatus(ctx, pod.UID, pod.Name, pod.Namespace)
		if err == nil {
			err = e.krt.KillPod(ctx, pod, ps, kuberuntime.GracePeriod(pod), true)
		}
		if err == nil {
			err = e.volumes.Cleanup(pod.UID)
		}
		if err == nil {
			break
		}
		e.log.Warn("kill pod", "pod", pod.Namespace+"/"+pod.Name, "error", err, "attempt", attempt)
		select {
		case <-ctx.Done():
		case <-e.clock.After(retryInterval):
		}
	}
	e.probes.RemovePod(pod.UID)
	e.statuses.Forget(pod.UID)
	e.krt.Forget(pod.UID)
	e.log.Info("pod removed", "pod", pod.Namespace+"/"+pod.Name, "uid", pod.UID)
}
