// Package cri is edged's thin client of a container runtime over the CRI
// (k8s.io/cri-api, runtime.v1), as served by containerd's CRI plugin.
//
// Runtime is the set of calls edged's pod workers use; Client implements it
// over gRPC and FakeRuntime in memory for unit tests. Every error a Client
// returns wraps the gRPC status error with %w, so status.Code(err) and
// IsNotFound(err) still see the runtime's code.
package cri

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Runtime is the container runtime as edged's pod workers see it.
type Runtime interface {
	Version(ctx context.Context) (*runtimeapi.VersionResponse, error)

	RunPodSandbox(ctx context.Context, config *runtimeapi.PodSandboxConfig, runtimeHandler string) (string, error)
	StopPodSandbox(ctx context.Context, podSandboxID string) error
	RemovePodSandbox(ctx context.Context, podSandboxID string) error
	PodSandboxStatus(ctx context.Context, podSandboxID string, verbose bool) (*runtimeapi.PodSandboxStatusResponse, error)
	ListPodSandbox(ctx context.Context, filter *runtimeapi.PodSandboxFilter) ([]*runtimeapi.PodSandbox, error)

	CreateContainer(ctx context.Context, podSandboxID string, config *runtimeapi.ContainerConfig, sandboxConfig *runtimeapi.PodSandboxConfig) (string, error)
	StartContainer(ctx context.Context, containerID string) error
	// StopContainer gives the container timeout seconds after SIGTERM (or
	// its image's stop signal) before it is killed. ctx must allow for it.
	StopContainer(ctx context.Context, containerID string, timeout int64) error
	RemoveContainer(ctx context.Context, containerID string) error
	ListContainers(ctx context.Context, filter *runtimeapi.ContainerFilter) ([]*runtimeapi.Container, error)
	ContainerStatus(ctx context.Context, containerID string, verbose bool) (*runtimeapi.ContainerStatusResponse, error)
	// UpdateContainerResources changes a running container's cgroup
	// resources in place (an in-place pod resize).
	UpdateContainerResources(ctx context.Context, containerID string, resources *runtimeapi.LinuxContainerResources) error
	// ExecSync runs cmd in the container and returns its output and exit
	// code; a non-zero exit code is not an error. timeout 0 means none.
	ExecSync(ctx context.Context, containerID string, cmd []string, timeout time.Duration) (*runtimeapi.ExecSyncResponse, error)

	// ImageStatus returns a response with a nil Image when the image is not present.
	ImageStatus(ctx context.Context, image *runtimeapi.ImageSpec, verbose bool) (*runtimeapi.ImageStatusResponse, error)
	PullImage(ctx context.Context, image *runtimeapi.ImageSpec, auth *runtimeapi.AuthConfig, sandboxConfig *runtimeapi.PodSandboxConfig) (string, error)
	ListImages(ctx context.Context, filter *runtimeapi.ImageFilter) ([]*runtimeapi.Image, error)
	ImageFsInfo(ctx context.Context) (*runtimeapi.ImageFsInfoResponse, error)
	// RemoveImage removes an image (by ID: every tag of it); a missing image is not an error.
	RemoveImage(ctx context.Context, image *runtimeapi.ImageSpec) error

	Close() error
}

// maxMsgSize is the kubelet's limit for CRI messages (ListContainers on a
// busy node can be large).
const maxMsgSize = 16 << 20

// Client is a Runtime over a CRI gRPC endpoint.
type Client struct {
	endpoint string
	conn     *grpc.ClientConn
	rt       runtimeapi.RuntimeServiceClient
	img      runtimeapi.ImageServiceClient
}

var _ Runtime = (*Client)(nil)

// target turns a CRI endpoint — unix:///path, /path or tcp://host:port —
// into a gRPC target.
func target(endpoint string) (string, error) {
	switch {
	case strings.HasPrefix(endpoint, "unix://"):
		p := strings.TrimPrefix(endpoint, "unix://")
		if !strings.HasPrefix(p, "/") {
			return "", fmt.Errorf("cri: endpoint %q: unix socket path must be absolute", endpoint)
		}
		return "unix://" + p, nil
	case strings.HasPrefix(endpoint, "/"):
		return "unix://" + endpoint, nil
	case strings.HasPrefix(endpoint, "tcp://"):
		hp := strings.TrimPrefix(endpoint, "tcp://")
		if hp == "" {
			return "", fmt.Errorf("cri: endpoint %q: no address", endpoint)
		}
		return "passthrough:///" + hp, nil
	default:
		return "", fmt.Errorf("cri: endpoint %q: want unix:///path or tcp://host:port", endpoint)
	}
}

// New connects to the CRI endpoint and checks, within ctx, that it answers
// Version on the v1 API. Close releases the connection.
func New(ctx context.Context, endpoint string) (*Client, error) {
	t, err := target(endpoint)
	if err != nil {
		return nil, err
	}
	conn, err := grpc.NewClient(t,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxMsgSize), grpc.MaxCallSendMsgSize(maxMsgSize)),
	)
	if err != nil {
		return nil, fmt.Errorf("cri: connect %s: %w", endpoint, err)
	}
	c := &Client{
		endpoint: endpoint,
		conn:     conn,
		rt:       runtimeapi.NewRuntimeServiceClient(conn),
		img:      runtimeapi.NewImageServiceClient(conn),
	}
	// The first call connects: a missing socket fails at once (Unavailable)
	// instead of waiting for ctx's deadline.
	if _, err := c.rt.Version(ctx, &runtimeapi.VersionRequest{Version: apiVersion}); err != nil {
		conn.Close()
		return nil, fmt.Errorf("cri: %s: runtime.v1 Version: %w", endpoint, err)
	}
	return c, nil
}

// apiVersion is the kubelet's CRI version string.
const apiVersion = "0.1.0"

// Endpoint returns the endpoint the client was created with.
func (c *Client) Endpoint() string { return c.endpoint }

// Close closes the connection.
func (c *Client) Close() error {
	if err := c.conn.Close(); err != nil {
		return fmt.Errorf("cri: close: %w", err)
	}
	return nil
}

func wrap(op, id string, err error) error {
	if id != "" {
		return fmt.Errorf("cri: %s %s: %w", op, id, err)
	}
	return fmt.Errorf("cri: %s: %w", op, err)
}

func (c *Client) Version(ctx context.Context) (*runtimeapi.VersionResponse, error) {
	r, err := c.rt.Version(ctx, &runtimeapi.VersionRequest{Version: apiVersion})
	if err != nil {
		return nil, wrap("Version", "", err)
	}
	return r, nil
}

func (c *Client) RunPodSandbox(ctx context.Context, config *runtimeapi.PodSandboxConfig, runtimeHandler string) (string, error) {
	name := ""
	if md := config.GetMetadata(); md != nil {
		name = md.Namespace + "/" + md.Name
	}
	r, err := c.rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: config, RuntimeHandler: runtimeHandler})
	if err != nil {
		return "", wrap("RunPodSandbox", name, err)
	}
	if r.PodSandboxId == "" {
		return "", wrap("RunPodSandbox", name, errors.New("runtime returned an empty sandbox id"))
	}
	return r.PodSandboxId, nil
}

func (c *Client) StopPodSandbox(ctx context.Context, podSandboxID string) error {
	if _, err := c.rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: podSandboxID}); err != nil {
		return wrap("StopPodSandbox", podSandboxID, err)
	}
	return nil
}

func (c *Client) RemovePodSandbox(ctx context.Context, podSandboxID string) error {
	if _, err := c.rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: podSandboxID}); err != nil {
		return wrap("RemovePodSandbox", podSandboxID, err)
	}
	return nil
}

func (c *Client) PodSandboxStatus(ctx context.Context, podSandboxID string, verbose bool) (*runtimeapi.PodSandboxStatusResponse, error) {
	r, err := c.rt.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: podSandboxID, Verbose: verbose})
	if err != nil {
		return nil, wrap("PodSandboxStatus", podSandboxID, err)
	}
	return r, nil
}

func (c *Client) ListPodSandbox(ctx context.Context, filter *runtimeapi.PodSandboxFilter) ([]*runtimeapi.PodSandbox, error) {
	r, err := c.rt.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{Filter: filter})
	if err != nil {
		return nil, wrap("ListPodSandbox", "", err)
	}
	return r.Items, nil
}

func (c *Client) CreateContainer(ctx context.Context, podSandboxID string, config *runtimeapi.ContainerConfig, sandboxConfig *runtimeapi.PodSandboxConfig) (string, error) {
	r, err := c.rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: podSandboxID, Config: config, SandboxConfig: sandboxConfig})
	if err != nil {
		return "", wrap("CreateContainer", podSandboxID+"/"+config.GetMetadata().GetName(), err)
	}
	if r.ContainerId == "" {
		return "", wrap("CreateContainer", podSandboxID, errors.New("runtime returned an empty container id"))
	}
	return r.ContainerId, nil
}

func (c *Client) StartContainer(ctx context.Context, containerID string) error {
	if _, err := c.rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: containerID}); err != nil {
		return wrap("StartContainer", containerID, err)
	}
	return nil
}

func (c *Client) StopContainer(ctx context.Context, containerID string, timeout int64) error {
	if _, err := c.rt.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: containerID, Timeout: timeout}); err != nil {
		return wrap("StopContainer", containerID, err)
	}
	return nil
}

func (c *Client) RemoveContainer(ctx context.Context, containerID string) error {
	if _, err := c.rt.RemoveContainer(ctx, &runtimeapi.RemoveContainerRequest{ContainerId: containerID}); err != nil {
		return wrap("RemoveContainer", containerID, err)
	}
	return nil
}

func (c *Client) ListContainers(ctx context.Context, filter *runtimeapi.ContainerFilter) ([]*runtimeapi.Container, error) {
	r, err := c.rt.ListContainers(ctx, &runtimeapi.ListContainersRequest{Filter: filter})
	if err != nil {
		return nil, wrap("ListContainers", "", err)
	}
	return r.Containers, nil
}

func (c *Client) ContainerStatus(ctx context.Context, containerID string, verbose bool) (*runtimeapi.ContainerStatusResponse, error) {
	r, err := c.rt.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: containerID, Verbose: verbose})
	if err != nil {
		return nil, wrap("ContainerStatus", containerID, err)
	}
	return r, nil
}

func (c *Client) UpdateContainerResources(ctx context.Context, containerID string, resources *runtimeapi.LinuxContainerResources) error {
	if _, err := c.rt.UpdateContainerResources(ctx, &runtimeapi.UpdateContainerResourcesRequest{ContainerId: containerID, Linux: resources}); err != nil {
		return wrap("UpdateContainerResources", containerID, err)
	}
	return nil
}

func (c *Client) ExecSync(ctx context.Context, containerID string, cmd []string, timeout time.Duration) (*runtimeapi.ExecSyncResponse, error) {
	req := &runtimeapi.ExecSyncRequest{ContainerId: containerID, Cmd: cmd}
	if timeout > 0 {
		// CRI counts whole seconds; round up so a short timeout is not "none".
		req.Timeout = int64((timeout + time.Second - 1) / time.Second)
	}
	r, err := c.rt.ExecSync(ctx, req)
	if err != nil {
		return nil, wrap("ExecSync", containerID, err)
	}
	return r, nil
}

func (c *Client) ImageStatus(ctx context.Context, image *runtimeapi.ImageSpec, verbose bool) (*runtimeapi.ImageStatusResponse, error) {
	r, err := c.img.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: image, Verbose: verbose})
	if err != nil {
		return nil, wrap("ImageStatus", image.GetImage(), err)
	}
	return r, nil
}

func (c *Client) PullImage(ctx context.Context, image *runtimeapi.ImageSpec, auth *runtimeapi.AuthConfig, sandboxConfig *runtimeapi.PodSandboxConfig) (string, error) {
	r, err := c.img.PullImage(ctx, &runtimeapi.PullImageRequest{Image: image, Auth: auth, SandboxConfig: sandboxConfig})
	if err != nil {
		return "", wrap("PullImage", image.GetImage(), err)
	}
	return r.ImageRef, nil
}

func (c *Client) ListImages(ctx context.Context, filter *runtimeapi.ImageFilter) ([]*runtimeapi.Image, error) {
	r, err := c.img.ListImages(ctx, &runtimeapi.ListImagesRequest{Filter: filter})
	if err != nil {
		return nil, wrap("ListImages", "", err)
	}
	return r.Images, nil
}

func (c *Client) ImageFsInfo(ctx context.Context) (*runtimeapi.ImageFsInfoResponse, error) {
	r, err := c.img.ImageFsInfo(ctx, &runtimeapi.ImageFsInfoRequest{})
	if err != nil {
		return nil, wrap("ImageFsInfo", "", err)
	}
	return r, nil
}

func (c *Client) RemoveImage(ctx context.Context, image *runtimeapi.ImageSpec) error {
	if _, err := c.img.RemoveImage(ctx, &runtimeapi.RemoveImageRequest{Image: image}); err != nil {
		return wrap("RemoveImage", image.GetImage(), err)
	}
	return nil
}

// IsNotFound reports whether err (possibly wrapped) is the runtime's
// NotFound: the sandbox, container or image does not exist.
func IsNotFound(err error) bool {
	return status.Code(err) == codes.NotFound
}
