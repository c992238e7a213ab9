//go:build e2e

package e2eenv

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/types"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/edgehive/edgehive/plugins/edged/container"
	"github.com/edgehive/edgehive/plugins/edged/cri"
)

// NewCRI connects the repo's CRI client to the test containerd, to look at
// what the edge really runs.
func NewCRI(t testing.TB, ctrd Containerd) *cri.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := cri.New(ctx, ctrd.Endpoint())
	if err != nil {
		t.Fatalf("CRI client: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// PodContainers lists the pod's containers (all states unless running).
func PodContainers(ctx context.Context, rt *cri.Client, uid types.UID, running bool) ([]*runtimeapi.Container, error) {
	f := &runtimeapi.ContainerFilter{LabelSelector: map[string]string{container.LabelPodUID: string(uid)}}
	if running {
		f.State = &runtimeapi.ContainerStateValue{State: runtimeapi.ContainerState_CONTAINER_RUNNING}
	}
	return rt.ListContainers(ctx, f)
}

// PodSandboxes lists the pod's sandboxes.
func PodSandboxes(ctx context.Context, rt *cri.Client, uid types.UID) ([]*runtimeapi.PodSandbox, error) {
	return rt.ListPodSandbox(ctx, &runtimeapi.PodSandboxFilter{LabelSelector: map[string]string{container.LabelPodUID: string(uid)}})
}

// criPoll is how often the runtime is asked: the CRI has no watch the repo
// client exposes, and these waits are short.
const criPoll = 200 * time.Millisecond

// WaitRuntimeGone waits until the runtime has no container and no sandbox
// of the pod left.
func WaitRuntimeGone(ctx context.Context, rt *cri.Client, uid types.UID) error {
	tick := time.NewTicker(criPoll)
	defer tick.Stop()
	for {
		cs, err := PodContainers(ctx, rt, uid, false)
		if err != nil {
			return err
		}
		sbs, err := PodSandboxes(ctx, rt, uid)
		if err != nil {
			return err
		}
		if len(cs) == 0 && len(sbs) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("pod %s still has %d containers and %d sandboxes in the runtime: %w", uid, len(cs), len(sbs), ctx.Err())
		case <-tick.C:
		}
	}
}

// RunningContainer returns the running container called name of the pod.
func RunningContainer(ctx context.Context, rt *cri.Client, uid types.UID, name string) (*runtimeapi.Container, error) {
	cs, err := PodContainers(ctx, rt, uid, true)
	if err != nil {
		return nil, err
	}
	for _, c := range cs {
		if c.GetMetadata().GetName() == name {
			return c, nil
		}
	}
	return nil, fmt.Errorf("pod %s has no running container %q (%d running)", uid, name, len(cs))
}

// Exec runs cmd in the container through CRI ExecSync and returns stdout;
// a non-zero exit is an error with stderr.
func Exec(ctx context.Context, rt *cri.Client, containerID string, cmd ...string) (string, error) {
	resp, err := rt.ExecSync(ctx, containerID, cmd, 10*time.Second)
	if err != nil {
		return "", fmt.Errorf("exec %v: %w", cmd, err)
	}
	if resp.GetExitCode() != 0 {
		return string(resp.GetStdout()), fmt.Errorf("exec %v: exit %d: %s", cmd, resp.GetExitCode(), strings.TrimSpace(string(resp.GetStderr())))
	}
	return string(resp.GetStdout()), nil
}

// WaitFileContent waits until `cat path` in the pod's container name prints
// want (the kubelet updates configMap volumes some time after the change).
func WaitFileContent(ctx context.Context, rt *cri.Client, uid types.UID, name, path, want string) error {
	tick := time.NewTicker(criPoll)
	defer tick.Stop()
	var last string
	for {
		c, err := RunningContainer(ctx, rt, uid, name)
		if err == nil {
			last, err = Exec(ctx, rt, c.GetId(), "cat", path)
			if err == nil && last == want {
				return nil
			}
		}
		if err != nil {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s in %s/%s is not %q: %w (last: %q)", path, uid, name, want, ctx.Err(), last)
		case <-tick.C:
		}
	}
}
