package cri

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// FakeRuntime is an in-memory Runtime for unit tests of edged's pod
// workers. It keeps sandboxes, containers and images with the state
// transitions a CRI runtime makes, records every call, and lets a test inject
// errors and exec results. Safe for concurrent use.
type FakeRuntime struct {
	mu sync.Mutex

	// Now stamps creation, start and finish times; time.Now when nil.
	Now func() time.Time
	// Errors makes the named method (e.g. "StartContainer") return the error
	// once; the entry is removed when used.
	Errors map[string]error
	// ExecFunc answers ExecSync; when nil, ExecSync echoes nothing and exits 0.
	ExecFunc func(containerID string, cmd []string) (stdout, stderr []byte, exitCode int32)
	// StopExitCode is the exit code a container gets when stopped; 137 when 0.
	StopExitCode int32
	// PodIP is given to sandboxes that are not on the host network.
	PodIP string
	// MemoryUsage is what ListContainerStats reports a container uses, by
	// container ID (0 when unset).
	MemoryUsage map[string]uint64

	calls      []string
	nextID     int
	sandboxes  map[string]*fakeSandbox
	containers map[string]*fakeContainer
	images     map[string]*runtimeapi.Image // by every tag and by id
	closed     bool
}

type fakeSandbox struct {
	sb     *runtimeapi.PodSandbox
	config *runtimeapi.PodSandboxConfig
	ip     string
}

type fakeContainer struct {
	c      *runtimeapi.Container
	status *runtimeapi.ContainerStatus
	config *runtimeapi.ContainerConfig
}

// ContainerConfig returns a copy of the config a container was created
// with, or nil for an unknown id.
func (f *FakeRuntime) ContainerConfig(containerID string) *runtimeapi.ContainerConfig {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, ok := f.containers[containerID]
	if !ok {
		return nil
	}
	return proto.Clone(c.config).(*runtimeapi.ContainerConfig)
}

var _ Runtime = (*FakeRuntime)(nil)

// NewFakeRuntime returns an empty fake runtime holding the given images
// (references like "edgehive.local/busybox:1.36").
func NewFakeRuntime(images ...string) *FakeRuntime {
	f := &FakeRuntime{
		sandboxes:  map[string]*fakeSandbox{},
		containers: map[string]*fakeContainer{},
		images:     map[string]*runtimeapi.Image{},
		Errors:     map[string]error{},
		PodIP:      "10.88.0.2",
	}
	for _, ref := range images {
		f.AddImage(ref)
	}
	return f
}

// AddImage makes ref present, as a pull would.
func (f *FakeRuntime) AddImage(ref string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.addImageLocked(ref)
}

func (f *FakeRuntime) addImageLocked(ref string) string {
	if img, ok := f.images[ref]; ok {
		return img.Id
	}
	f.nextID++
	id := fmt.Sprintf("sha256:%064x", f.nextID)
	img := &runtimeapi.Image{Id: id, RepoTags: []string{ref}, Size: 1 << 20, Spec: &runtimeapi.ImageSpec{Image: ref}}
	f.images[ref] = img
	f.images[id] = img
	return id
}

// Calls returns the names of the methods called so far, in order.
func (f *FakeRuntime) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

// ResetCalls forgets the recorded calls.
func (f *FakeRuntime) ResetCalls() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = nil
}

// InjectError makes the next call of method return err.
func (f *FakeRuntime) InjectError(method string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.Errors[method] = err
}

// SetContainerExited marks a running container exited with code, as if its
// process ended on its own.
func (f *FakeRuntime) SetContainerExited(containerID string, code int32) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, ok := f.containers[containerID]
	if !ok {
		return notFound("container", containerID)
	}
	f.exitLocked(c, code, "Completed")
	return nil
}

// begin records the call and returns an injected error, if any. f.mu held.
func (f *FakeRuntime) begin(ctx context.Context, method string) error {
	f.calls = append(f.calls, method)
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("cri: %s: %w", method, status.FromContextError(err).Err())
	}
	if f.closed {
		return fmt.Errorf("cri: %s: %w", method, status.Error(codes.Canceled, "client closed"))
	}
	if err, ok := f.Errors[method]; ok {
		delete(f.Errors, method)
		return fmt.Errorf("cri: %s: %w", method, err)
	}
	return nil
}

func (f *FakeRuntime) now() int64 {
	if f.Now != nil {
		return f.Now().UnixNano()
	}
	return time.Now().UnixNano()
}

func (f *FakeRuntime) newID() string {
	f.nextID++
	return fmt.Sprintf("%064x", f.nextID)
}

func notFound(kind, id string) error {
	return status.Errorf(codes.NotFound, "%s %q: not found", kind, id)
}

func (f *FakeRuntime) Version(ctx context.Context) (*runtimeapi.VersionResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.begin(ctx, "Version"); err != nil {
		return nil, err
	}
	return &runtimeapi.VersionResponse{Version: apiVersion, RuntimeName: "fake", RuntimeVersion: "0.0.0", RuntimeApiVersion: "v1"}, nil
}

func (f *FakeRuntime) RunPodSandbox(ctx context.Context, config *runtimeapi.PodSandboxConfig, runtimeHandler string) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.begin(ctx, "RunPodSandbox"); err != nil {
		return "", err
	}
	md := config.GetMetadata()
	if md.GetName() == "" || md.GetUid() == "" {
		return "", fmt.Errorf("cri: RunPodSandbox: %w", status.Error(codes.InvalidArgument, "sandbox metadata needs name and uid"))
	}
	hostNet := config.GetLinux().GetSecurityContext().GetNamespaceOptions().GetNetwork() == runtimeapi.NamespaceMode_NODE
	if hostNet && config.GetHostname() != "" {
		// runc refuses a hostname without a private UTS namespace.
		return "", fmt.Errorf("cri: RunPodSandbox: %w", status.Error(codes.Unknown, "host-network sandbox must not set a hostname"))
	}
	for _, s := range f.sandboxes {
		m := s.sb.Metadata
		if s.sb.State == runtimeapi.PodSandboxState_SANDBOX_READY && m.Name == md.Name && m.Namespace == md.Namespace && m.Uid == md.Uid && m.Attempt == md.Attempt {
			return "", fmt.Errorf("cri: RunPodSandbox: %w", status.Errorf(codes.AlreadyExists, "sandbox name %s_%s_%s_%d is reserved", m.Name, m.Namespace, m.Uid, m.Attempt))
		}
	}
	id := f.newID()
	s := &fakeSandbox{
		config: proto.Clone(config).(*runtimeapi.PodSandboxConfig),
		sb: &runtimeapi.PodSandbox{
			Id:             id,
			Metadata:       proto.Clone(md).(*runtimeapi.PodSandboxMetadata),
			State:          runtimeapi.PodSandboxState_SANDBOX_READY,
			CreatedAt:      f.now(),
			Labels:         maps.Clone(config.GetLabels()),
			Annotations:    maps.Clone(config.GetAnnotations()),
			RuntimeHandler: runtimeHandler,
		},
	}
	if !hostNet {
		s.ip = f.PodIP
	}
	f.sandboxes[id] = s
	return id, nil
}

func (f *FakeRuntime) StopPodSandbox(ctx context.Context, podSandboxID string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.begin(ctx, "StopPodSandbox"); err != nil {
		return err
	}
	s, ok := f.sandboxes[podSandboxID]
	if !ok {
		// Like containerd: stopping what is gone is not an error.
		return nil
	}
	for _, c := range f.containers {
		if c.c.PodSandboxId == podSandboxID {
			f.exitLocked(c, f.stopCode(), "Error")
		}
	}
	s.sb.State = runtimeapi.PodSandboxState_SANDBOX_NOTREADY
	s.ip = ""
	return nil
}

func (f *FakeRuntime) RemovePodSandbox(ctx context.Context, podSandboxID string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.begin(ctx, "RemovePodSandbox"); err != nil {
		return err
	}
	s, ok := f.sandboxes[podSandboxID]
	if !ok {
		return nil
	}
	if s.sb.State == runtimeapi.PodSandboxState_SANDBOX_READY {
		return fmt.Errorf("cri: RemovePodSandbox %s: %w", podSandboxID, status.Error(codes.FailedPrecondition, "sandbox is still running; stop it first"))
	}
	for id, c := range f.containers {
		if c.c.PodSandboxId == podSandboxID {
			delete(f.containers, id)
		}
	}
	delete(f.sandboxes, podSandboxID)
	return nil
}

func (f *FakeRuntime) PodSandboxStatus(ctx context.Context, podSandboxID string, verbose bool) (*runtimeapi.PodSandboxStatusResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.begin(ctx, "PodSandboxStatus"); err != nil {
		return nil, err
	}
	s, ok := f.sandboxes[podSandboxID]
	if !ok {
		return nil, fmt.Errorf("cri: PodSandboxStatus %s: %w", podSandboxID, notFound("sandbox", podSandboxID))
	}
	st := &runtimeapi.PodSandboxStatus{
		Id:             s.sb.Id,
		Metadata:       proto.Clone(s.sb.Metadata).(*runtimeapi.PodSandboxMetadata),
		State:          s.sb.State,
		CreatedAt:      s.sb.CreatedAt,
		Network:        &runtimeapi.PodSandboxNetworkStatus{Ip: s.ip},
		Linux:          &runtimeapi.LinuxPodSandboxStatus{Namespaces: &runtimeapi.Namespace{Options: proto.Clone(s.config.GetLinux().GetSecurityContext().GetNamespaceOptions()).(*runtimeapi.NamespaceOption)}},
		Labels:         maps.Clone(s.sb.Labels),
		Annotations:    maps.Clone(s.sb.Annotations),
		RuntimeHandler: s.sb.RuntimeHandler,
	}
	return &runtimeapi.PodSandboxStatusResponse{Status: st}, nil
}

func labelsMatch(have, want map[string]string) bool {
	for k, v := range want {
		if have[k] != v {
			return false
		}
	}
	return true
}

func (f *FakeRuntime) ListPodSandbox(ctx context.Context, filter *runtimeapi.PodSandboxFilter) ([]*runtimeapi.PodSandbox, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.begin(ctx, "ListPodSandbox"); err != nil {
		return nil, err
	}
	var out []*runtimeapi.PodSandbox
	for _, s := range f.sandboxes {
		if filter != nil {
			if filter.Id != "" && filter.Id != s.sb.Id {
				continue
			}
			if filter.State != nil && filter.State.State != s.sb.State {
				continue
			}
			if !labelsMatch(s.sb.Labels, filter.LabelSelector) {
				continue
			}
		}
		out = append(out, proto.Clone(s.sb).(*runtimeapi.PodSandbox))
	}
	slices.SortFunc(out, func(a, b *runtimeapi.PodSandbox) int { return compareInt64(a.CreatedAt, b.CreatedAt, a.Id, b.Id) })
	return out, nil
}

func compareInt64(a, b int64, ida, idb string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	case ida < idb:
		return -1
	case ida > idb:
		return 1
	}
	return 0
}

func (f *FakeRuntime) CreateContainer(ctx context.Context, podSandboxID string, config *runtimeapi.ContainerConfig, sandboxConfig *runtimeapi.PodSandboxConfig) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.begin(ctx, "CreateContainer"); err != nil {
		return "", err
	}
	s, ok := f.sandboxes[podSandboxID]
	if !ok {
		return "", fmt.Errorf("cri: CreateContainer: %w", notFound("sandbox", podSandboxID))
	}
	if s.sb.State != runtimeapi.PodSandboxState_SANDBOX_READY {
		return "", fmt.Errorf("cri: CreateContainer: %w", status.Errorf(codes.FailedPrecondition, "sandbox %s is not ready", podSandboxID))
	}
	md := config.GetMetadata()
	if md.GetName() == "" {
		return "", fmt.Errorf("cri: CreateContainer: %w", status.Error(codes.InvalidArgument, "container metadata needs a name"))
	}
	ref := config.GetImage().GetImage()
	img, ok := f.images[ref]
	if !ok {
		return "", fmt.Errorf("cri: CreateContainer: %w", notFound("image", ref))
	}
	for _, c := range f.containers {
		if c.c.PodSandboxId == podSandboxID && c.c.Metadata.Name == md.Name && c.c.Metadata.Attempt == md.Attempt {
			return "", fmt.Errorf("cri: CreateContainer: %w", status.Errorf(codes.AlreadyExists, "container name %s attempt %d is reserved", md.Name, md.Attempt))
		}
	}
	id := f.newID()
	created := f.now()
	c := &runtimeapi.Container{
		Id:           id,
		PodSandboxId: podSandboxID,
		Metadata:     proto.Clone(md).(*runtimeapi.ContainerMetadata),
		Image:        &runtimeapi.ImageSpec{Image: ref},
		ImageRef:     img.Id,
		State:        runtimeapi.ContainerState_CONTAINER_CREATED,
		CreatedAt:    created,
		Labels:       maps.Clone(config.GetLabels()),
		Annotations:  maps.Clone(config.GetAnnotations()),
	}
	var mounts []*runtimeapi.Mount
	for _, mt := range config.GetMounts() {
		mounts = append(mounts, proto.Clone(mt).(*runtimeapi.Mount))
	}
	f.containers[id] = &fakeContainer{
		c:      c,
		config: proto.Clone(config).(*runtimeapi.ContainerConfig),
		status: &runtimeapi.ContainerStatus{
			Id:          id,
			Metadata:    proto.Clone(md).(*runtimeapi.ContainerMetadata),
			State:       runtimeapi.ContainerState_CONTAINER_CREATED,
			CreatedAt:   created,
			Image:       &runtimeapi.ImageSpec{Image: ref},
			ImageRef:    img.Id,
			Labels:      maps.Clone(config.GetLabels()),
			Annotations: maps.Clone(config.GetAnnotations()),
			LogPath:     config.GetLogPath(),
			Mounts:      mounts,
			Resources:   fakeResources(config.GetLinux().GetResources()),
		},
	}
	return id, nil
}

func (f *FakeRuntime) StartContainer(ctx context.Context, containerID string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.begin(ctx, "StartContainer"); err != nil {
		return err
	}
	c, ok := f.containers[containerID]
	if !ok {
		return fmt.Errorf("cri: StartContainer: %w", notFound("container", containerID))
	}
	if c.c.State != runtimeapi.ContainerState_CONTAINER_CREATED {
		return fmt.Errorf("cri: StartContainer %s: %w", containerID, status.Errorf(codes.FailedPrecondition, "container is in %s state", c.c.State))
	}
	c.c.State = runtimeapi.ContainerState_CONTAINER_RUNNING
	c.status.State = runtimeapi.ContainerState_CONTAINER_RUNNING
	c.status.StartedAt = f.now()
	return nil
}

func (f *FakeRuntime) stopCode() int32 {
	if f.StopExitCode != 0 {
		return f.StopExitCode
	}
	return 137
}

// exitLocked moves a created or running container to EXITED.
func (f *FakeRuntime) exitLocked(c *fakeContainer, code int32, reason string) {
	switch c.c.State {
	case runtimeapi.ContainerState_CONTAINER_RUNNING:
		c.status.ExitCode = code
		c.status.Reason = reason
		c.status.FinishedAt = f.now()
	case runtimeapi.ContainerState_CONTAINER_CREATED:
		c.status.FinishedAt = f.now()
	default:
		return
	}
	c.c.State = runtimeapi.ContainerState_CONTAINER_EXITED
	c.status.State = runtimeapi.ContainerState_CONTAINER_EXITED
}

func (f *FakeRuntime) StopContainer(ctx context.Context, containerID string, timeout int64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.begin(ctx, "StopContainer"); err != nil {
		return err
	}
	c, ok := f.containers[containerID]
	if !ok {
		return fmt.Errorf("cri: StopContainer: %w", notFound("container", containerID))
	}
	f.exitLocked(c, f.stopCode(), "Error")
	return nil
}

func (f *FakeRuntime) RemoveContainer(ctx context.Context, containerID string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.begin(ctx, "RemoveContainer"); err != nil {
		return err
	}
	c, ok := f.containers[containerID]
	if !ok {
		return nil
	}
	if c.c.State == runtimeapi.ContainerState_CONTAINER_RUNNING {
		return fmt.Errorf("cri: RemoveContainer %s: %w", containerID, status.Error(codes.FailedPrecondition, "container is running; stop it first"))
	}
	delete(f.containers, containerID)
	return nil
}

func (f *FakeRuntime) ListContainers(ctx context.Context, filter *runtimeapi.ContainerFilter) ([]*runtimeapi.Container, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.begin(ctx, "ListContainers"); err != nil {
		return nil, err
	}
	var out []*runtimeapi.Container
	for _, c := range f.containers {
		if filter != nil {
			if filter.Id != "" && filter.Id != c.c.Id {
				continue
			}
			if filter.PodSandboxId != "" && filter.PodSandboxId != c.c.PodSandboxId {
				continue
			}
			if filter.State != nil && filter.State.State != c.c.State {
				continue
			}
			if !labelsMatch(c.c.Labels, filter.LabelSelector) {
				continue
			}
		}
		out = append(out, proto.Clone(c.c).(*runtimeapi.Container))
	}
	slices.SortFunc(out, func(a, b *runtimeapi.Container) int { return compareInt64(a.CreatedAt, b.CreatedAt, a.Id, b.Id) })
	return out, nil
}

func (f *FakeRuntime) ContainerStatus(ctx context.Context, containerID string, verbose bool) (*runtimeapi.ContainerStatusResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.begin(ctx, "ContainerStatus"); err != nil {
		return nil, err
	}
	c, ok := f.containers[containerID]
	if !ok {
		return nil, fmt.Errorf("cri: ContainerStatus: %w", notFound("container", containerID))
	}
	return &runtimeapi.ContainerStatusResponse{Status: proto.Clone(c.status).(*runtimeapi.ContainerStatus)}, nil
}

// fakeResources is what a runtime reports of a container's cgroup values.
func fakeResources(r *runtimeapi.LinuxContainerResources) *runtimeapi.ContainerResources {
	if r == nil {
		return nil
	}
	return &runtimeapi.ContainerResources{Linux: proto.Clone(r).(*runtimeapi.LinuxContainerResources)}
}

// UpdateContainerResources applies resources to a created or running
// container, as containerd does: zero values leave the old ones.
func (f *FakeRuntime) UpdateContainerResources(ctx context.Context, containerID string, resources *runtimeapi.LinuxContainerResources) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.begin(ctx, "UpdateContainerResources"); err != nil {
		return err
	}
	c, ok := f.containers[containerID]
	if !ok {
		return fmt.Errorf("cri: UpdateContainerResources: %w", notFound("container", containerID))
	}
	if c.c.State == runtimeapi.ContainerState_CONTAINER_EXITED {
		return fmt.Errorf("cri: UpdateContainerResources %s: %w", containerID, status.Error(codes.FailedPrecondition, "container is not running"))
	}
	if c.config.Linux == nil {
		c.config.Linux = &runtimeapi.LinuxContainerConfig{}
	}
	cur := c.config.Linux.Resources
	if cur == nil {
		cur = &runtimeapi.LinuxContainerResources{}
		c.config.Linux.Resources = cur
	}
	if v := resources.GetCpuShares(); v != 0 {
		cur.CpuShares = v
	}
	if v := resources.GetCpuPeriod(); v != 0 {
		cur.CpuPeriod = v
	}
	if v := resources.GetCpuQuota(); v != 0 {
		cur.CpuQuota = v
	}
	if v := resources.GetMemoryLimitInBytes(); v != 0 {
		cur.MemoryLimitInBytes = v
	}
	c.status.Resources = fakeResources(cur)
	return nil
}

// ListContainerStats reports MemoryUsage of the containers filter selects.
func (f *FakeRuntime) ListContainerStats(ctx context.Context, filter *runtimeapi.ContainerStatsFilter) ([]*runtimeapi.ContainerStats, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.begin(ctx, "ListContainerStats"); err != nil {
		return nil, err
	}
	var out []*runtimeapi.ContainerStats
	for id, c := range f.containers {
		if filter != nil && filter.Id != "" && filter.Id != id {
			continue
		}
		if c.c.State != runtimeapi.ContainerState_CONTAINER_RUNNING {
			continue
		}
		out = append(out, &runtimeapi.ContainerStats{
			Attributes: &runtimeapi.ContainerAttributes{Id: id, Metadata: proto.Clone(c.c.Metadata).(*runtimeapi.ContainerMetadata)},
			Memory:     &runtimeapi.MemoryUsage{Timestamp: f.now(), UsageBytes: &runtimeapi.UInt64Value{Value: f.MemoryUsage[id]}},
		})
	}
	return out, nil
}

func (f *FakeRuntime) ExecSync(ctx context.Context, containerID string, cmd []string, timeout time.Duration) (*runtimeapi.ExecSyncResponse, error) {
	f.mu.Lock()
	if err := f.begin(ctx, "ExecSync"); err != nil {
		f.mu.Unlock()
		return nil, err
	}
	c, ok := f.containers[containerID]
	if !ok {
		f.mu.Unlock()
		return nil, fmt.Errorf("cri: ExecSync: %w", notFound("container", containerID))
	}
	if c.c.State != runtimeapi.ContainerState_CONTAINER_RUNNING {
		f.mu.Unlock()
		return nil, fmt.Errorf("cri: ExecSync %s: %w", containerID, status.Errorf(codes.FailedPrecondition, "container is in %s state", c.c.State))
	}
	exec := f.ExecFunc
	f.mu.Unlock()
	if exec == nil {
		return &runtimeapi.ExecSyncResponse{}, nil
	}
	// Outside the lock: the function may call back into the fake.
	stdout, stderr, code := exec(containerID, slices.Clone(cmd))
	return &runtimeapi.ExecSyncResponse{Stdout: stdout, Stderr: stderr, ExitCode: code}, nil
}

func (f *FakeRuntime) ImageStatus(ctx context.Context, image *runtimeapi.ImageSpec, verbose bool) (*runtimeapi.ImageStatusResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.begin(ctx, "ImageStatus"); err != nil {
		return nil, err
	}
	img, ok := f.images[image.GetImage()]
	if !ok {
		return &runtimeapi.ImageStatusResponse{}, nil
	}
	return &runtimeapi.ImageStatusResponse{Image: proto.Clone(img).(*runtimeapi.Image)}, nil
}

func (f *FakeRuntime) PullImage(ctx context.Context, image *runtimeapi.ImageSpec, auth *runtimeapi.AuthConfig, sandboxConfig *runtimeapi.PodSandboxConfig) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.begin(ctx, "PullImage"); err != nil {
		return "", err
	}
	ref := image.GetImage()
	if ref == "" {
		return "", fmt.Errorf("cri: PullImage: %w", status.Error(codes.InvalidArgument, "no image"))
	}
	return f.addImageLocked(ref), nil
}

func (f *FakeRuntime) ListImages(ctx context.Context, filter *runtimeapi.ImageFilter) ([]*runtimeapi.Image, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.begin(ctx, "ListImages"); err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	var out []*runtimeapi.Image
	for _, img := range f.images {
		if seen[img.Id] {
			continue
		}
		if want := filter.GetImage().GetImage(); want != "" && want != img.Id && !slices.Contains(img.RepoTags, want) {
			continue
		}
		seen[img.Id] = true
		out = append(out, proto.Clone(img).(*runtimeapi.Image))
	}
	slices.SortFunc(out, func(a, b *runtimeapi.Image) int { return compareInt64(0, 0, a.Id, b.Id) })
	return out, nil
}

func (f *FakeRuntime) ImageFsInfo(ctx context.Context) (*runtimeapi.ImageFsInfoResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.begin(ctx, "ImageFsInfo"); err != nil {
		return nil, err
	}
	var used uint64
	seen := map[string]bool{}
	for _, img := range f.images {
		if !seen[img.Id] {
			seen[img.Id] = true
			used += img.Size
		}
	}
	return &runtimeapi.ImageFsInfoResponse{ImageFilesystems: []*runtimeapi.FilesystemUsage{{
		Timestamp:  f.now(),
		FsId:       &runtimeapi.FilesystemIdentifier{Mountpoint: "/fake/images"},
		UsedBytes:  &runtimeapi.UInt64Value{Value: used},
		InodesUsed: &runtimeapi.UInt64Value{Value: uint64(len(seen))},
	}}}, nil
}

func (f *FakeRuntime) RemoveImage(ctx context.Context, image *runtimeapi.ImageSpec) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.begin(ctx, "RemoveImage"); err != nil {
		return err
	}
	img, ok := f.images[image.GetImage()]
	if !ok {
		return nil
	}
	for k, v := range f.images {
		if v.Id == img.Id {
			delete(f.images, k)
		}
	}
	return nil
}

// SetImageSize sets the size of a present image (ImageFsInfo sums them).
func (f *FakeRuntime) SetImageSize(ref string, size uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if img, ok := f.images[ref]; ok {
		img.Size = size
	}
}

// Close makes every later call fail.
func (f *FakeRuntime) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, "Close")
	f.closed = true
	return nil
}

// String summarizes the fake's contents, for test failure messages.
func (f *FakeRuntime) String() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return "FakeRuntime{sandboxes: " + strconv.Itoa(len(f.sandboxes)) + ", containers: " + strconv.Itoa(len(f.containers)) + "}"
}
