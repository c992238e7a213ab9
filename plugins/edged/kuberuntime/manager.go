package kuberuntime

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/flowcontrol"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/utils/clock"

	"github.com/edgehive/edgehive/plugins/edged/container"
	"github.com/edgehive/edgehive/plugins/edged/cri"
	"github.com/edgehive/edgehive/plugins/edged/status"
)

// Waiting reasons, as the kubelet reports them.
const (
	ReasonCrashLoopBackOff  = "CrashLoopBackOff"
	ReasonImagePullBackOff  = "ImagePullBackOff"
	ReasonErrImagePull      = "ErrImagePull"
	ReasonErrImageNeverPull = "ErrImageNeverPull"
	ReasonCreateContainer   = "CreateContainerError"
	ReasonRunContainer      = "RunContainerError"
	ReasonCreateSandbox     = "CreatePodSandboxError"
	ReasonCreateConfig      = "CreateContainerConfigError"
)

// Event reasons edged records, as the kubelet's.
const (
	EventPulling             = "Pulling"
	EventPulled              = "Pulled"
	EventCreated             = "Created"
	EventStarted             = "Started"
	EventKilling             = "Killing"
	EventBackOff             = "BackOff"
	EventFailed              = "Failed"
	EventFailedPostStartHook = "FailedPostStartHook"
)

// Back-off of restarts, as the kubelet's.
const (
	BackOffInitial = 10 * time.Second
	BackOffMax     = 5 * time.Minute
)

// defaultGracePeriod is used when a pod sets none.
const defaultGracePeriod = 30

// Config of the manager.
type Config struct {
	SandboxImage   string
	PodLogsRoot    string   // sandbox log directories go under it
	ClusterDNS     []string // DNS servers for ClusterFirst pods
	ClusterDomain  string
	ResolvConf     string // host resolver file; default /etc/resolv.conf
	MaxDeadPerName int    // dead instances kept per container name (≥ 1 keeps the last state)
	HostsFile      string // the node's hosts file for host-network pods; default /etc/hosts
	NodeCPU        int64  // node allocatable, the default of limits in resourceFieldRef
	NodeMemory     int64
}

// Reason is why a container is waiting.
type Reason struct {
	Reason, Message string
}

// Manager runs pods over a CRI runtime.
type Manager struct {
	rt      cri.Runtime
	clock   clock.Clock
	log     hclog.Logger
	cfg     Config
	backOff *flowcontrol.Backoff

	mu      sync.Mutex
	reasons map[types.UID]map[string]Reason
	// pidTargets: "<uid>/<ephemeral container>" → the container ID whose
	// process namespace it joins.
	pidTargets map[string]string
	// applied: per pod, the resources applied by in-place resizes by
	// container ID (see resize.go).
	applied map[types.UID]map[string]v1.ResourceRequirements
	// resizeErr: per pod, why applying its resize failed last.
	resizeErr map[types.UID]string

	// Probes, when set, names running containers a probe wants killed and
	// says which passed their startup probe.
	Probes Probes
	// Volumes, when set, prepares (or refreshes) the pod's volumes on every
	// SyncPod and returns their host paths by volume name.
	Volumes func(ctx context.Context, pod *v1.Pod) (map[string]string, error)
	// Events, when set, records a pod event (Pulling, Started, Killing...).
	Events Recorder
	// Fetch, when set, reads configMaps and secrets (env, pull secrets).
	Fetch Fetcher
	// Services, when set, lists services for the service environment variables.
	Services ServiceLister
	// HostIP is the node's IP (status.hostIP for env).
	HostIP string
}

// Recorder records an event about a pod (container "" for the pod itself).
type Recorder func(pod *v1.Pod, container, eventType, reason, message string)

// Event records an event through Events (when set).
func (m *Manager) Event(pod *v1.Pod, container, eventType, reason, message string) {
	m.event(pod, container, eventType, reason, message)
}

func (m *Manager) event(pod *v1.Pod, container, eventType, reason, message string) {
	if m.Events != nil && pod != nil && pod.UID != "" {
		m.Events(pod, container, eventType, reason, message)
	}
}

// New returns a manager. clk drives the restart back-off.
func New(rt cri.Runtime, clk clock.Clock, log hclog.Logger, cfg Config) *Manager {
	if log == nil {
		log = hclog.NewNullLogger()
	}
	if cfg.ResolvConf == "" {
		cfg.ResolvConf = "/etc/resolv.conf"
	}
	if cfg.ClusterDomain == "" {
		cfg.ClusterDomain = "cluster.local"
	}
	if cfg.MaxDeadPerName < 1 {
		cfg.MaxDeadPerName = 1
	}
	return &Manager{rt: rt, clock: clk, log: log, cfg: cfg,
		backOff: flowcontrol.NewFakeBackOff(BackOffInitial, BackOffMax, clk),
		reasons: map[types.UID]map[string]Reason{}}
}

// GetPodStatus reads the pod's runtime status.
// Each container's Resources are what was applied to it.
func (m *Manager) GetPodStatus(ctx context.Context, uid types.UID, name, namespace string) (*container.PodStatus, error) {
	ps, err := container.GetPodStatus(ctx, m.rt, uid, name, namespace)
	if err != nil {
		return nil, err
	}
	m.fillApplied(ps)
	return ps, nil
}

// Reasons returns the waiting reasons of the pod's containers.
func (m *Manager) Reasons(uid types.UID) map[string]Reason {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[string]Reason{}
	for k, v := range m.reasons[uid] {
		out[k] = v
	}
	return out
}

func (m *Manager) setReason(uid types.UID, name string, r *Reason) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if r == nil {
		delete(m.reasons[uid], name)
		return
	}
	if m.reasons[uid] == nil {
		m.reasons[uid] = map[string]Reason{}
	}
	m.reasons[uid][name] = *r
}

// Forget drops what the manager keeps about pod uid.
func (m *Manager) Forget(uid types.UID) {
	m.mu.Lock()
	delete(m.reasons, uid)
	delete(m.applied, uid)
	delete(m.resizeErr, uid)
	m.mu.Unlock()
	m.backOff.GC()
}

// SyncResult is what one SyncPod did.
type SyncResult struct {
	Started []string // container names started
	Killed  []string // container ids killed
	// InitFailed is set when an init container failed and the pod may not restart it.
	InitFailed bool
	// BackOff is the longest restart back-off a container waits for (0 for none).
	BackOff time.Duration
}

// SyncPod brings the runtime in line with pod, in the kubelet's six steps.
func (m *Manager) SyncPod(ctx context.Context, pod *v1.Pod, ps *container.PodStatus) (SyncResult, error) {
	var res SyncResult
	// Step 1: compute what changed.
	a := computePodActionsProbed(pod, ps, m.Probes)
	m.planResize(pod, ps, &a)
	res.InitFailed = a.InitFailed

	// Volumes are prepared (configMaps and secrets refreshed) on every sync;
	// a failure only matters to containers that are to start.
	vols := map[string]string{}
	var volErr error
	if m.Volumes != nil {
		vols, volErr = m.Volumes(ctx, pod)
		if vols == nil {
			vols = map[string]string{}
		}
		if volErr != nil {
			m.log.Warn("pod volumes", "pod", pod.Namespace+"/"+pod.Name, "error", volErr)
		}
	}

	// Step 2: kill the pod when its sandbox changed (or nothing should run).
	if a.KillPod {
		if err := m.KillPod(ctx, pod, ps, gracePeriod(pod, nil), false); err != nil {
			return res, fmt.Errorf("kill pod: %w", err)
		}
	} else {
		// Step 3: kill the containers that must go.
		for id, why := range a.ContainersToKill {
			m.log.Info("killing container", "pod", pod.Namespace+"/"+pod.Name, "container", id, "reason", why)
			name := ""
			for _, cs := range ps.Containers {
				if cs.Id == id {
					name = cs.Name
				}
			}
			m.event(pod, name, v1.EventTypeNormal, EventKilling, "Stopping container "+name+": "+why)
			grace := m.preStop(ctx, pod, specOf(pod, name), id, ps.PodIP(), gracePeriod(pod, nil))
			if a.KeepKilled[id] {
				if err := m.rt.StopContainer(ctx, id, grace); err != nil && !cri.IsNotFound(err) {
					return res, fmt.Errorf("stop container %s: %w", id, err)
				}
			} else if err := m.killContainer(ctx, id, grace); err != nil {
				return res, err
			}
			res.Killed = append(res.Killed, id)
		}
	}
	// Resize running containers in place; a failure is retried on the
	// next sync (the pod stays PodResizeInProgress).
	var resizeErrs []error
	for _, t := range a.ContainersToUpdate {
		if err := m.resizeContainer(ctx, pod, ps, t); err != nil {
			resizeErrs = append(resizeErrs, err)
		}
	}
	if err := errors.Join(resizeErrs...); err != nil {
		m.setResizeError(pod.UID, err.Error())
	} else {
		m.setResizeError(pod.UID, "")
	}

	// Step 4: a new sandbox.
	sandboxID := a.SandboxID
	podIP := ps.PodIP()
	sbConfig, err := m.sandboxConfig(pod, a.Attempt)
	if err != nil {
		return res, err
	}
	if a.CreateSandbox {
		if err := m.ensureImage(ctx, pod, "", m.cfg.SandboxImage, v1.PullIfNotPresent); err != nil {
			return res, fmt.Errorf("sandbox image: %w", err)
		}
		if err := os.MkdirAll(sbConfig.LogDirectory, 0o755); err != nil {
			return res, err
		}
		sandboxID, err = m.rt.RunPodSandbox(ctx, sbConfig, runtimeHandler(pod))
		if err != nil {
			return res, fmt.Errorf("%s: %w", ReasonCreateSandbox, err)
		}
		st, err := m.rt.PodSandboxStatus(ctx, sandboxID, false)
		if err != nil {
			return res, err
		}
		podIP = st.GetStatus().GetNetwork().GetIp()
		ps = &container.PodStatus{ID: pod.UID, Name: pod.Name, Namespace: pod.Namespace, Containers: ps.KeepContainers()}
	}
	if !a.CreateSandbox && (a.KillPod || sandboxID == "") {
		return res, nil
	}

	// Step 5: the next init container.
	if c := a.NextInitContainer; c != nil {
		if d, err := m.startContainer(ctx, pod, ps, sandboxID, sbConfig, c, podIP, vols, volErr); err != nil {
			res.BackOff = max(res.BackOff, d)
			return res, err
		}
		res.Started = append(res.Started, c.Name)
		return res, nil
	}

	// Step 6: the sidecars that stopped, then the app containers.
	var errs []error
	start := func(c *v1.Container) {
		d, err := m.startContainer(ctx, pod, ps, sandboxID, sbConfig, c, podIP, vols, volErr)
		if err != nil {
			res.BackOff = max(res.BackOff, d)
			errs = append(errs, err)
			return
		}
		res.Started = append(res.Started, c.Name)
	}
	for _, i := range a.SidecarsToStart {
		start(&pod.Spec.InitContainers[i])
	}
	for _, i := range a.ContainersToStart {
		start(&pod.Spec.Containers[i])
	}

	// Step 7: ephemeral containers (debug containers added to a running pod).
	for _, i := range a.EphemeralToStart {
		ec := &pod.Spec.EphemeralContainers[i]
		c := v1.Container(ec.EphemeralContainerCommon)
		if ec.TargetContainerName != "" {
			if t := ps.FindContainer(ec.TargetContainerName); t != nil && t.Running() {
				m.targets(pod.UID, c.Name, t.Id)
			}
		}
		if _, err := m.startContainer(ctx, pod, ps, sandboxID, sbConfig, &c, podIP, vols, volErr); err != nil {
			errs = append(errs, err)
			continue
		}
		res.Started = append(res.Started, c.Name)
	}
	return res, errors.Join(append(errs, resizeErrs...)...)
}

// targets remembers that an ephemeral container shares the process namespace
// of a running container (targetContainerName) until it is created.
func (m *Manager) targets(uid types.UID, name, targetID string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.pidTargets == nil {
		m.pidTargets = map[string]string{}
	}
	m.pidTargets[string(uid)+"/"+name] = targetID
}

func (m *Manager) takeTarget(uid types.UID, name string) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	id := m.pidTargets[string(uid)+"/"+name]
	delete(m.pidTargets, string(uid)+"/"+name)
	return id
}

func runtimeHandler(pod *v1.Pod) string {
	if pod.Spec.RuntimeClassName != nil {
		return *pod.Spec.RuntimeClassName
	}
	return ""
}

// gracePeriod of a pod: the override, the deletion's, the spec's, or 30 s.
func gracePeriod(pod *v1.Pod, override *int64) int64 {
	switch {
	case override != nil:
		return *override
	case pod == nil:
		return defaultGracePeriod
	case pod.DeletionGracePeriodSeconds != nil:
		return *pod.DeletionGracePeriodSeconds
	case pod.Spec.TerminationGracePeriodSeconds != nil:
		return *pod.Spec.TerminationGracePeriodSeconds
	}
	return defaultGracePeriod
}

// GracePeriod is the grace period KillPod would use for pod.
func GracePeriod(pod *v1.Pod) int64 { return gracePeriod(pod, nil) }

// backOffKey identifies one container spec of one pod.
func backOffKey(pod *v1.Pod, c *v1.Container) string {
	return fmt.Sprintf("%s_%s_%s_%s_%s", pod.Name, pod.Namespace, pod.UID, c.Name, HashContainer(c))
}

// startContainer makes sure the image is there, then creates and starts c.
// On a back-off it returns how long is left.
func (m *Manager) startContainer(ctx context.Context, pod *v1.Pod, ps *container.PodStatus, sandboxID string,
	sbConfig *runtimeapi.PodSandboxConfig, c *v1.Container, podIP string, vols map[string]string, volErr error) (time.Duration, error) {
	prev := ps.FindContainer(c.Name)
	restartCount := 0
	if prev != nil {
		restartCount = prev.RestartCount + 1
		if prev.Exited() {
			key := backOffKey(pod, c)
			finished := time.Unix(0, prev.FinishedAt)
			if m.backOff.IsInBackOffSince(key, finished) {
				left := m.backOff.Get(key) - m.clock.Since(finished)
				msg := fmt.Sprintf("back-off %s restarting failed container=%s pod=%s_%s(%s)", m.backOff.Get(key), c.Name, pod.Name, pod.Namespace, pod.UID)
				m.setReason(pod.UID, c.Name, &Reason{ReasonCrashLoopBackOff, msg})
				m.event(pod, c.Name, v1.EventTypeWarning, EventBackOff, "Back-off restarting failed container "+c.Name+" in pod "+pod.Name+"_"+pod.Namespace+"("+string(pod.UID)+")")
				return left, fmt.Errorf("%s: %s", ReasonCrashLoopBackOff, msg)
			}
			m.backOff.Next(key, finished)
		}
	}
	imageRef := c.Image
	if err := m.ensureImage(ctx, pod, c.Name, c.Image, c.ImagePullPolicy); err != nil {
		var r *reasonError
		if errors.As(err, &r) {
			m.setReason(pod.UID, c.Name, &Reason{r.reason, r.Error()})
		}
		return 0, err
	}
	fail := func(reason string, err error) (time.Duration, error) {
		m.setReason(pod.UID, c.Name, &Reason{reason, err.Error()})
		m.event(pod, c.Name, v1.EventTypeWarning, EventFailed, "Error: "+err.Error())
		return 0, fmt.Errorf("%s: %w", reason, err)
	}
	cfg, vars, err := m.containerConfig(ctx, pod, c, restartCount, podIP, imageRef)
	if err != nil {
		if errors.Is(err, errConfig) {
			return fail(ReasonCreateConfig, err)
		}
		return fail(ReasonCreateContainer, err)
	}
	mounts, err := makeMounts(pod, c, vols, volErr, vars)
	if err != nil {
		return fail(ReasonCreateConfig, err)
	}
	extra, err := m.podMounts(pod, c, podIP, restartCount)
	if err != nil {
		return fail(ReasonCreateConfig, err)
	}
	cfg.Mounts = append(mounts, extra...)
	if err := os.MkdirAll(filepath.Join(sbConfig.LogDirectory, c.Name), 0o755); err != nil {
		return 0, err
	}
	// Dead instances beyond the ones kept go before a new one comes.
	m.removeDead(ctx, ps, c.Name)
	id, err := m.rt.CreateContainer(ctx, sandboxID, cfg, sbConfig)
	if err != nil {
		return fail(ReasonCreateContainer, err)
	}
	m.event(pod, c.Name, v1.EventTypeNormal, EventCreated, "Created container "+c.Name)
	if err := m.rt.StartContainer(ctx, id); err != nil {
		return fail(ReasonRunContainer, err)
	}
	m.event(pod, c.Name, v1.EventTypeNormal, EventStarted, "Started container "+c.Name)
	if c.Lifecycle != nil && c.Lifecycle.PostStart != nil {
		if err := m.runHook(ctx, pod, c, id, podIP, c.Lifecycle.PostStart, time.Duration(gracePeriod(pod, nil)+30)*time.Second); err != nil {
			msg := fmt.Sprintf("PostStartHook failed: %v", err)
			m.event(pod, c.Name, v1.EventTypeWarning, EventFailedPostStartHook, msg)
			// As the kubelet: the container is killed and restarted by policy.
			if serr := m.rt.StopContainer(ctx, id, minGraceAfterPreStop); serr != nil && !cri.IsNotFound(serr) {
				m.log.Warn("stop after failed postStart hook", "id", id, "error", serr)
			}
			m.setReason(pod.UID, c.Name, &Reason{ReasonPostStartHookError, msg})
			return 0, fmt.Errorf("%s: %s", ReasonPostStartHookError, msg)
		}
	}
	m.setReason(pod.UID, c.Name, nil)
	m.log.Debug("container started", "pod", pod.Namespace+"/"+pod.Name, "container", c.Name, "id", id, "restartCount", restartCount)
	return 0, nil
}

// removeDead removes exited instances of name, keeping MaxDeadPerName-1 so
// that, with the new one, the last terminated state stays readable.
func (m *Manager) removeDead(ctx context.Context, ps *container.PodStatus, name string) {
	kept := 0
	for _, cs := range ps.ContainersNamed(name) {
		if !cs.Exited() {
			continue
		}
		if kept < m.cfg.MaxDeadPerName {
			kept++
			continue
		}
		if err := m.rt.RemoveContainer(ctx, cs.Id); err != nil && !cri.IsNotFound(err) {
			m.log.Warn("remove dead container", "id", cs.Id, "error", err)
		}
	}
}

type reasonError struct {
	reason string
	err    error
}

func (e *reasonError) Error() string { return e.reason + ": " + e.err.Error() }
func (e *reasonError) Unwrap() error { return e.err }

// pullPolicy is the spec's, or the default: Always for :latest or no tag.
func pullPolicy(image string, p v1.PullPolicy) v1.PullPolicy {
	if p != "" {
		return p
	}
	ref := image
	if i := strings.LastIndex(ref, "@"); i >= 0 {
		return v1.PullIfNotPresent
	}
	if i := strings.LastIndex(ref, "/"); i >= 0 {
		ref = ref[i+1:]
	}
	if i := strings.LastIndex(ref, ":"); i < 0 || ref[i+1:] == "latest" {
		return v1.PullAlways
	}
	return v1.PullIfNotPresent
}

// ensureImage honours the pull policy; a present image is never pulled
// unless the policy is Always.
// cname names the container for events ("" for the sandbox image: no events).
func (m *Manager) ensureImage(ctx context.Context, pod *v1.Pod, cname, image string, policy v1.PullPolicy) error {
	ev := func(typ, reason, msg string) {
		if cname != "" {
			m.event(pod, cname, typ, reason, msg)
		}
	}
	spec := &runtimeapi.ImageSpec{Image: image}
	policy = pullPolicy(image, policy)
	if policy != v1.PullAlways {
		st, err := m.rt.ImageStatus(ctx, spec, false)
		if err != nil {
			return &reasonError{ReasonErrImagePull, err}
		}
		if st.GetImage() != nil {
			ev(v1.EventTypeNormal, EventPulled, fmt.Sprintf("Container image %q already present on machine", image))
			return nil
		}
		if policy == v1.PullNever {
			err := &reasonError{ReasonErrImageNeverPull, fmt.Errorf("image %q is not present and the pull policy is Never", image)}
			ev(v1.EventTypeWarning, ReasonErrImageNeverPull, err.Error())
			return err
		}
	}
	key := "image:" + image
	now := m.clock.Now()
	if m.backOff.IsInBackOffSinceUpdate(key, now) {
		ev(v1.EventTypeNormal, EventBackOff, fmt.Sprintf("Back-off pulling image %q", image))
		return &reasonError{ReasonImagePullBackOff, fmt.Errorf("back-off pulling image %q", image)}
	}
	ev(v1.EventTypeNormal, EventPulling, fmt.Sprintf("Pulling image %q", image))
	start := m.clock.Now()
	if _, err := m.rt.PullImage(ctx, spec, m.pullAuth(ctx, pod, image), nil); err != nil {
		m.backOff.Next(key, now)
		ev(v1.EventTypeWarning, EventFailed, fmt.Sprintf("Failed to pull image %q: %v", image, err))
		return &reasonError{ReasonErrImagePull, err}
	}
	ev(v1.EventTypeNormal, EventPulled, fmt.Sprintf("Successfully pulled image %q in %s", image, m.clock.Since(start).Round(time.Millisecond)))
	m.backOff.Reset(key)
	return nil
}

// LogDir is the sandbox log directory of a pod.
func (m *Manager) LogDir(pod *v1.Pod) string {
	return filepath.Join(m.cfg.PodLogsRoot, fmt.Sprintf("%s_%s_%s", pod.Namespace, pod.Name, pod.UID))
}

func namespaces(pod *v1.Pod) *runtimeapi.NamespaceOption {
	ns := &runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode_POD, Pid: runtimeapi.NamespaceMode_CONTAINER, Ipc: runtimeapi.NamespaceMode_POD}
	if pod.Spec.HostNetwork {
		ns.Network = runtimeapi.NamespaceMode_NODE
	}
	if pod.Spec.HostPID {
		ns.Pid = runtimeapi.NamespaceMode_NODE
	} else if pod.Spec.ShareProcessNamespace != nil && *pod.Spec.ShareProcessNamespace {
		ns.Pid = runtimeapi.NamespaceMode_POD
	}
	if pod.Spec.HostIPC {
		ns.Ipc = runtimeapi.NamespaceMode_NODE
	}
	return ns
}

func (m *Manager) sandboxConfig(pod *v1.Pod, attempt uint32) (*runtimeapi.PodSandboxConfig, error) {
	labels := map[string]string{}
	for k, v := range pod.Labels {
		labels[k] = v
	}
	for k, v := range container.PodLabels(pod.Name, pod.Namespace, pod.UID) {
		labels[k] = v
	}
	annotations := map[string]string{}
	for k, v := range pod.Annotations {
		annotations[k] = v
	}
	cfg := &runtimeapi.PodSandboxConfig{
		Metadata:     &runtimeapi.PodSandboxMetadata{Name: pod.Name, Namespace: pod.Namespace, Uid: string(pod.UID), Attempt: attempt},
		LogDirectory: m.LogDir(pod),
		Labels:       labels,
		Annotations:  annotations,
		Linux: &runtimeapi.LinuxPodSandboxConfig{
			SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{NamespaceOptions: namespaces(pod)},
		},
	}
	if !pod.Spec.HostNetwork {
		// No hostname on the host network: runc refuses one without a private UTS namespace.
		cfg.Hostname = podHostname(pod)
	}
	sandboxSecurity(pod, cfg)
	dns, err := m.dnsConfig(pod)
	if err != nil {
		return nil, err
	}
	cfg.DnsConfig = dns
	for _, c := range pod.Spec.Containers {
		for _, p := range c.Ports {
			if p.HostPort == 0 {
				continue
			}
			proto := runtimeapi.Protocol_TCP
			switch p.Protocol {
			case v1.ProtocolUDP:
				proto = runtimeapi.Protocol_UDP
			case v1.ProtocolSCTP:
				proto = runtimeapi.Protocol_SCTP
			}
			cfg.PortMappings = append(cfg.PortMappings, &runtimeapi.PortMapping{
				Protocol: proto, ContainerPort: p.ContainerPort, HostPort: p.HostPort, HostIp: p.HostIP})
		}
	}
	return cfg, nil
}

// hostDNS reads the host resolver file.
func (m *Manager) hostDNS() *runtimeapi.DNSConfig {
	dns := &runtimeapi.DNSConfig{}
	f, err := os.Open(m.cfg.ResolvConf)
	if err != nil {
		return dns
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 || strings.HasPrefix(fields[0], "#") {
			continue
		}
		switch fields[0] {
		case "nameserver":
			dns.Servers = append(dns.Servers, fields[1])
		case "search":
			dns.Searches = fields[1:]
		case "options":
			dns.Options = fields[1:]
		}
	}
	return dns
}

func (m *Manager) dnsConfig(pod *v1.Pod) (*runtimeapi.DNSConfig, error) {
	policy := pod.Spec.DNSPolicy
	if policy == "" {
		policy = v1.DNSClusterFirst
	}
	var dns *runtimeapi.DNSConfig
	switch {
	case policy == v1.DNSNone:
		dns = &runtimeapi.DNSConfig{}
	case policy == v1.DNSDefault, len(m.cfg.ClusterDNS) == 0,
		policy == v1.DNSClusterFirst && pod.Spec.HostNetwork:
		dns = m.hostDNS()
	default: // ClusterFirst, ClusterFirstWithHostNet with a cluster DNS
		d := m.cfg.ClusterDomain
		dns = &runtimeapi.DNSConfig{
			Servers:  append([]string(nil), m.cfg.ClusterDNS...),
			Searches: append([]string{pod.Namespace + ".svc." + d, "svc." + d, d}, m.hostDNS().Searches...),
			Options:  []string{"ndots:5"},
		}
	}
	if pc := pod.Spec.DNSConfig; pc != nil {
		dns.Servers = append(dns.Servers, pc.Nameservers...)
		dns.Searches = append(dns.Searches, pc.Searches...)
		for _, o := range pc.Options {
			if o.Value != nil {
				dns.Options = append(dns.Options, o.Name+":"+*o.Value)
			} else {
				dns.Options = append(dns.Options, o.Name)
			}
		}
	}
	return dns, nil
}

// services are the ones whose variables a container gets: the pod's
// namespace's (with enableServiceLinks) and the master service
// default/kubernetes. A failure to list them leaves them out.
func (m *Manager) services(ctx context.Context, pod *v1.Pod) []*v1.Service {
	if m.Services == nil {
		return nil
	}
	var out []*v1.Service
	links := pod.Spec.EnableServiceLinks == nil || *pod.Spec.EnableServiceLinks
	byName := map[string]bool{}
	if links {
		svcs, err := m.Services(ctx, pod.Namespace)
		if err != nil {
			m.log.Debug("services for env", "namespace", pod.Namespace, "error", err)
		}
		for _, s := range svcs {
			byName[s.Name] = true
			out = append(out, s)
		}
	}
	if pod.Namespace != "default" || !links {
		svcs, err := m.Services(ctx, "default")
		if err != nil {
			m.log.Debug("services for env", "namespace", "default", "error", err)
		}
		for _, s := range svcs {
			if s.Name == "kubernetes" && !byName[s.Name] {
				out = append(out, s)
			}
		}
	}
	return out
}

// containerConfig returns c's CRI config and its environment by name (for
// subPathExpr).
func (m *Manager) containerConfig(ctx context.Context, pod *v1.Pod, c *v1.Container, restartCount int, podIP, imageRef string) (*runtimeapi.ContainerConfig, map[string]string, error) {
	imageUser := func() (*int64, string, error) {
		st, err := m.rt.ImageStatus(ctx, &runtimeapi.ImageSpec{Image: imageRef}, false)
		if err != nil {
			return nil, "", err
		}
		if u := st.GetImage().GetUid(); u != nil {
			v := u.GetValue()
			return &v, "", nil
		}
		return nil, st.GetImage().GetUsername(), nil
	}
	if err := runAsNonRootCheck(pod, c, imageUser); err != nil {
		return nil, nil, err
	}
	env, vars, err := makeEnv(ctx, pod, c, EnvInput{PodIP: podIP, HostIP: m.HostIP, Fetch: m.Fetch,
		Services: m.services(ctx, pod), NodeCPU: m.cfg.NodeCPU, NodeMemory: m.cfg.NodeMemory})
	if err != nil {
		return nil, nil, err
	}
	cmd := make([]string, len(c.Command))
	for i, s := range c.Command {
		cmd[i] = expand(s, vars)
	}
	args := make([]string, len(c.Args))
	for i, s := range c.Args {
		args[i] = expand(s, vars)
	}
	labels := container.PodLabels(pod.Name, pod.Namespace, pod.UID)
	labels[container.LabelContainerName] = c.Name
	cfg := &runtimeapi.ContainerConfig{
		Metadata:   &runtimeapi.ContainerMetadata{Name: c.Name, Attempt: uint32(restartCount)},
		Image:      &runtimeapi.ImageSpec{Image: imageRef},
		Command:    cmd,
		Args:       args,
		WorkingDir: c.WorkingDir,
		Labels:     labels,
		Annotations: map[string]string{
			container.AnnotationContainerHash: HashContainer(c),
			container.AnnotationRestartCount:  strconv.Itoa(restartCount),
			container.AnnotationGracePeriod:   strconv.FormatInt(gracePeriod(pod, nil), 10),
			container.AnnotationResources:     resourcesAnnotation(c),
		},
		LogPath:   filepath.Join(c.Name, strconv.Itoa(restartCount)+".log"),
		Stdin:     c.Stdin,
		StdinOnce: c.StdinOnce,
		Tty:       c.TTY,
		Linux: &runtimeapi.LinuxContainerConfig{
			SecurityContext: securityContext(pod, c),
			Resources:       linuxResources(c),
		},
	}
	cfg.Linux.Resources.OomScoreAdj = oomScoreAdj(pod, c, status.QOSClass(pod), m.cfg.NodeMemory)
	if target := m.takeTarget(pod.UID, c.Name); target != "" {
		ns := cfg.Linux.SecurityContext.NamespaceOptions
		ns.Pid, ns.TargetId = runtimeapi.NamespaceMode_TARGET, target
	}
	if c.TerminationMessagePath != "" {
		cfg.Annotations[container.AnnotationTerminationMsg] = c.TerminationMessagePath
	}
	// The policy counts without a path too: the logs are the message then.
	if c.TerminationMessagePolicy != "" {
		cfg.Annotations[container.AnnotationTerminationMsgPolicy] = string(c.TerminationMessagePolicy)
	}
	for _, e := range env {
		cfg.Envs = append(cfg.Envs, &runtimeapi.KeyValue{Key: e[0], Value: []byte(e[1])})
	}
	return cfg, vars, nil
}

// killContainer stops a container with the grace period, then removes it.
func (m *Manager) killContainer(ctx context.Context, id string, grace int64) error {
	if err := m.rt.StopContainer(ctx, id, grace); err != nil && !cri.IsNotFound(err) {
		return fmt.Errorf("stop container %s: %w", id, err)
	}
	if err := m.rt.RemoveContainer(ctx, id); err != nil && !cri.IsNotFound(err) {
		return fmt.Errorf("remove container %s: %w", id, err)
	}
	return nil
}

// KillPod stops every running container of the pod (grace seconds each, in
// parallel) and its sandboxes. With remove it also removes them all — what a
// deleted pod needs; without, exited containers stay for their status.
func (m *Manager) KillPod(ctx context.Context, pod *v1.Pod, ps *container.PodStatus, grace int64, remove bool) error {
	if ps == nil {
		return nil
	}
	// The app containers stop first, together; the sidecars then stop one
	// by one in reverse order, so they keep serving the app containers'
	// preStop hooks (the kubelet's order).
	sidecarRank := map[string]int{}
	for i := range pod.Spec.InitContainers {
		if container.IsSidecar(&pod.Spec.InitContainers[i]) {
			sidecarRank[pod.Spec.InitContainers[i].Name] = i + 1
		}
	}
	var regular, sidecars []*container.ContainerStatus
	for _, cs := range ps.Containers {
		if !cs.Running() && !remove {
			continue
		}
		if sidecarRank[cs.Name] > 0 && cs.Running() {
			sidecars = append(sidecars, cs)
		} else {
			regular = append(regular, cs)
		}
	}
	slices.SortStableFunc(sidecars, func(a, b *container.ContainerStatus) int { return sidecarRank[b.Name] - sidecarRank[a.Name] })
	stop := func(cs *container.ContainerStatus, grace int64) error {
		if cs.Running() {
			m.event(pod, cs.Name, v1.EventTypeNormal, EventKilling, "Stopping container "+cs.Name)
			grace := m.preStop(ctx, pod, specOf(pod, cs.Name), cs.Id, ps.PodIP(), grace)
			if err := m.rt.StopContainer(ctx, cs.Id, grace); err != nil && !cri.IsNotFound(err) {
				return fmt.Errorf("stop container %s: %w", cs.Name, err)
			}
		}
		if remove {
			if err := m.rt.RemoveContainer(ctx, cs.Id); err != nil && !cri.IsNotFound(err) {
				return fmt.Errorf("remove container %s: %w", cs.Name, err)
			}
		}
		return nil
	}
	started := m.clock.Now()
	var wg sync.WaitGroup
	errs := make([]error, len(regular)+len(sidecars))
	for i, cs := range regular {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = stop(cs, grace)
		}()
	}
	wg.Wait()
	for i, cs := range sidecars {
		left := max(grace-int64(m.clock.Since(started).Seconds()), minGraceAfterPreStop)
		errs[len(regular)+i] = stop(cs, left)
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	for _, sb := range ps.Sandboxes {
		if sb.State == runtimeapi.PodSandboxState_SANDBOX_READY {
			if err := m.rt.StopPodSandbox(ctx, sb.Id); err != nil && !cri.IsNotFound(err) {
				return fmt.Errorf("stop sandbox: %w", err)
			}
		}
		if remove {
			if err := m.rt.RemovePodSandbox(ctx, sb.Id); err != nil && !cri.IsNotFound(err) {
				return fmt.Errorf("remove sandbox: %w", err)
			}
		}
	}
	return nil
}
