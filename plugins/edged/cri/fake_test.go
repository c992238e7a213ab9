package cri

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

const testImage = "edgehive.local/busybox:1.36"

func sandboxConfig(name string, hostNetwork bool) *runtimeapi.PodSandboxConfig {
	c := &runtimeapi.PodSandboxConfig{
		Metadata: &runtimeapi.PodSandboxMetadata{Name: name, Namespace: "default", Uid: "uid-" + name},
		Labels:   map[string]string{"app": name},
		Linux:    &runtimeapi.LinuxPodSandboxConfig{},
	}
	if hostNetwork {
		c.Linux.SecurityContext = &runtimeapi.LinuxSandboxSecurityContext{
			NamespaceOptions: &runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode_NODE},
		}
	} else {
		c.Hostname = name
	}
	return c
}

func containerConfig(name, image string) *runtimeapi.ContainerConfig {
	return &runtimeapi.ContainerConfig{
		Metadata: &runtimeapi.ContainerMetadata{Name: name},
		Image:    &runtimeapi.ImageSpec{Image: image},
		Command:  []string{"sh", "-c", "sleep 300"},
		Labels:   map[string]string{"c": name},
	}
}

func TestFakeLifecycle(t *testing.T) {
	ctx := context.Background()
	f := NewFakeRuntime(testImage)
	var rt Runtime = f

	sc := sandboxConfig("web", false)
	sb, err := rt.RunPodSandbox(ctx, sc, "")
	if err != nil {
		t.Fatal(err)
	}
	st, err := rt.PodSandboxStatus(ctx, sb, false)
	if err != nil {
		t.Fatal(err)
	}
	if st.Status.State != runtimeapi.PodSandboxState_SANDBOX_READY || st.Status.Network.Ip == "" {
		t.Fatalf("sandbox status = %v", st.Status)
	}
	if _, err := rt.RunPodSandbox(ctx, sc, ""); status.Code(err) != codes.AlreadyExists {
		t.Fatalf("second RunPodSandbox with the same metadata: %v, want AlreadyExists", err)
	}

	id, err := rt.CreateContainer(ctx, sb, containerConfig("app", testImage), sc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rt.ExecSync(ctx, id, []string{"true"}, 0); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("ExecSync in a created container: %v, want FailedPrecondition", err)
	}
	if err := rt.StartContainer(ctx, id); err != nil {
		t.Fatal(err)
	}
	if err := rt.StartContainer(ctx, id); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("second StartContainer: %v, want FailedPrecondition", err)
	}
	cs, err := rt.ContainerStatus(ctx, id, false)
	if err != nil {
		t.Fatal(err)
	}
	if cs.Status.State != runtimeapi.ContainerState_CONTAINER_RUNNING || cs.Status.StartedAt == 0 || cs.Status.ImageRef == "" {
		t.Fatalf("container status = %v", cs.Status)
	}

	f.ExecFunc = func(cid string, cmd []string) ([]byte, []byte, int32) {
		return []byte(fmt.Sprint(cmd)), nil, 3
	}
	r, err := rt.ExecSync(ctx, id, []string{"echo", "ok"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if string(r.Stdout) != "[echo ok]" || r.ExitCode != 3 {
		t.Fatalf("ExecSync = %q, %d", r.Stdout, r.ExitCode)
	}

	list, err := rt.ListContainers(ctx, &runtimeapi.ContainerFilter{
		PodSandboxId:  sb,
		State:         &runtimeapi.ContainerStateValue{State: runtimeapi.ContainerState_CONTAINER_RUNNING},
		LabelSelector: map[string]string{"c": "app"},
	})
	if err != nil || len(list) != 1 || list[0].Id != id {
		t.Fatalf("ListContainers = %v, %v", list, err)
	}

	if err := rt.RemoveContainer(ctx, id); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("RemoveContainer while running: %v, want FailedPrecondition", err)
	}
	if err := rt.RemovePodSandbox(ctx, sb); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("RemovePodSandbox while ready: %v, want FailedPrecondition", err)
	}
	if err := rt.StopContainer(ctx, id, 10); err != nil {
		t.Fatal(err)
	}
	cs, _ = rt.ContainerStatus(ctx, id, false)
	if cs.Status.State != runtimeapi.ContainerState_CONTAINER_EXITED || cs.Status.ExitCode != 137 || cs.Status.FinishedAt == 0 {
		t.Fatalf("stopped container status = %v", cs.Status)
	}
	if err := rt.RemoveContainer(ctx, id); err != nil {
		t.Fatal(err)
	}
	if _, err := rt.ContainerStatus(ctx, id, false); !IsNotFound(err) {
		t.Fatalf("ContainerStatus after remove: %v, want NotFound", err)
	}
	if err := rt.StopPodSandbox(ctx, sb); err != nil {
		t.Fatal(err)
	}
	if err := rt.RemovePodSandbox(ctx, sb); err != nil {
		t.Fatal(err)
	}
	if _, err := rt.PodSandboxStatus(ctx, sb, false); !IsNotFound(err) {
		t.Fatalf("PodSandboxStatus after remove: %v, want NotFound", err)
	}
	// Stopping and removing what is gone is not an error, as with containerd.
	if err := rt.StopPodSandbox(ctx, sb); err != nil {
		t.Fatal(err)
	}
	if err := rt.RemovePodSandbox(ctx, sb); err != nil {
		t.Fatal(err)
	}

	want := []string{"RunPodSandbox", "PodSandboxStatus", "RunPodSandbox", "CreateContainer", "ExecSync", "StartContainer"}
	if got := f.Calls(); !slices.Equal(got[:len(want)], want) {
		t.Fatalf("calls = %v, want prefix %v", got, want)
	}
}

func TestFakeStopPodSandboxStopsContainers(t *testing.T) {
	ctx := context.Background()
	f := NewFakeRuntime(testImage)
	sc := sandboxConfig("p", true)
	sb, err := f.RunPodSandbox(ctx, sc, "")
	if err != nil {
		t.Fatal(err)
	}
	st, _ := f.PodSandboxStatus(ctx, sb, false)
	if st.Status.Network.Ip != "" {
		t.Fatalf("host-network sandbox got IP %q", st.Status.Network.Ip)
	}
	id, _ := f.CreateContainer(ctx, sb, containerConfig("a", testImage), sc)
	if err := f.StartContainer(ctx, id); err != nil {
		t.Fatal(err)
	}
	if err := f.StopPodSandbox(ctx, sb); err != nil {
		t.Fatal(err)
	}
	cs, _ := f.ContainerStatus(ctx, id, false)
	if cs.Status.State != runtimeapi.ContainerState_CONTAINER_EXITED {
		t.Fatalf("container after StopPodSandbox: %v", cs.Status.State)
	}
	ready, _ := f.ListPodSandbox(ctx, &runtimeapi.PodSandboxFilter{State: &runtimeapi.PodSandboxStateValue{State: runtimeapi.PodSandboxState_SANDBOX_READY}})
	if len(ready) != 0 {
		t.Fatalf("ready sandboxes after stop: %v", ready)
	}
	if _, err := f.CreateContainer(ctx, sb, containerConfig("b", testImage), sc); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("CreateContainer in a stopped sandbox: %v", err)
	}
	if err := f.RemovePodSandbox(ctx, sb); err != nil {
		t.Fatal(err)
	}
	if all, _ := f.ListContainers(ctx, nil); len(all) != 0 {
		t.Fatalf("containers left after RemovePodSandbox: %v", all)
	}
}

func TestFakeHostNetworkHostname(t *testing.T) {
	f := NewFakeRuntime()
	sc := sandboxConfig("h", true)
	sc.Hostname = "h"
	if _, err := f.RunPodSandbox(context.Background(), sc, ""); err == nil {
		t.Fatal("host-network sandbox with a hostname was accepted")
	}
}

func TestFakeImages(t *testing.T) {
	ctx := context.Background()
	f := NewFakeRuntime()
	spec := &runtimeapi.ImageSpec{Image: "edgehive.local/pause:3.10"}
	st, err := f.ImageStatus(ctx, spec, false)
	if err != nil || st.Image != nil {
		t.Fatalf("ImageStatus of a missing image = %v, %v; want nil image", st, err)
	}
	sb, _ := f.RunPodSandbox(ctx, sandboxConfig("i", false), "")
	if _, err := f.CreateContainer(ctx, sb, containerConfig("c", spec.Image), nil); !IsNotFound(err) {
		t.Fatalf("CreateContainer with a missing image: %v, want NotFound", err)
	}
	ref, err := f.PullImage(ctx, spec, nil, nil)
	if err != nil || ref == "" {
		t.Fatalf("PullImage = %q, %v", ref, err)
	}
	st, _ = f.ImageStatus(ctx, spec, false)
	if st.Image == nil || st.Image.Id != ref {
		t.Fatalf("ImageStatus after pull = %v", st)
	}
	if again, _ := f.PullImage(ctx, spec, nil, nil); again != ref {
		t.Fatalf("second pull gave %q, want %q", again, ref)
	}
	f.AddImage(testImage)
	imgs, _ := f.ListImages(ctx, nil)
	if len(imgs) != 2 {
		t.Fatalf("ListImages = %v", imgs)
	}
	imgs, _ = f.ListImages(ctx, &runtimeapi.ImageFilter{Image: spec})
	if len(imgs) != 1 || imgs[0].Id != ref {
		t.Fatalf("ListImages(filter) = %v", imgs)
	}
	fs, err := f.ImageFsInfo(ctx)
	if err != nil || len(fs.ImageFilesystems) != 1 || fs.ImageFilesystems[0].UsedBytes.Value == 0 {
		t.Fatalf("ImageFsInfo = %v, %v", fs, err)
	}
}

func TestFakeInjectedErrorsAndClose(t *testing.T) {
	ctx := context.Background()
	f := NewFakeRuntime(testImage)
	boom := status.Error(codes.Unavailable, "boom")
	f.InjectError("Version", boom)
	if _, err := f.Version(ctx); !errors.Is(err, boom) {
		t.Fatalf("Version = %v, want the injected error", err)
	}
	if _, err := f.Version(ctx); err != nil {
		t.Fatalf("injected error not cleared: %v", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := f.ListPodSandbox(cctx, nil); status.Code(err) != codes.Canceled {
		t.Fatalf("call with a cancelled context: %v", err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Version(ctx); err == nil {
		t.Fatal("call after Close succeeded")
	}
}

func TestFakeConcurrent(t *testing.T) {
	ctx := context.Background()
	f := NewFakeRuntime(testImage)
	f.ExecFunc = func(string, []string) ([]byte, []byte, int32) { return []byte("ok"), nil, 0 }
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sc := sandboxConfig(fmt.Sprintf("p%d", i), false)
			sb, err := f.RunPodSandbox(ctx, sc, "")
			if err != nil {
				t.Error(err)
				return
			}
			id, err := f.CreateContainer(ctx, sb, containerConfig("c", testImage), sc)
			if err != nil {
				t.Error(err)
				return
			}
			_ = f.StartContainer(ctx, id)
			_, _ = f.ExecSync(ctx, id, []string{"echo"}, 0)
			_, _ = f.ListContainers(ctx, nil)
			_ = f.StopPodSandbox(ctx, sb)
			_ = f.RemovePodSandbox(ctx, sb)
		}()
	}
	wg.Wait()
	if sbs, _ := f.ListPodSandbox(ctx, nil); len(sbs) != 0 {
		t.Fatalf("sandboxes left: %d", len(sbs))
	}
}
