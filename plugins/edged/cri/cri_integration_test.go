//go:build containerd

// Integration test against a real, private containerd. Run it with
//
//	make test-cri
//
// which starts containerd (hack/containerd.sh), imports the test images
// (hack/images) and sets CONTAINERD_ADDRESS.
package cri

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

const (
	itBusybox = "edgehive.local/busybox:1.36"
	itPause   = "edgehive.local/pause:3.10"
)

func integrationClient(t *testing.T) *Client {
	t.Helper()
	addr := os.Getenv("CONTAINERD_ADDRESS")
	if addr == "" {
		t.Fatal("CONTAINERD_ADDRESS is not set: run this test with `make test-cri` " +
			"(it starts a private containerd with hack/containerd.sh and imports the images with hack/images)")
	}
	if !strings.Contains(addr, "://") {
		addr = "unix://" + addr
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := New(ctx, addr)
	if err != nil {
		t.Fatalf("connect to the test containerd: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// timed runs fn and logs how long it took.
func timed(t *testing.T, what string, fn func() error) time.Duration {
	t.Helper()
	start := time.Now()
	err := fn()
	d := time.Since(start)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	t.Logf("%-16s %6.1f ms", what, float64(d.Microseconds())/1000)
	return d
}

func itSandboxConfig(t *testing.T, name string, hostNetwork bool) *runtimeapi.PodSandboxConfig {
	uid := fmt.Sprintf("%s-%d", name, time.Now().UnixNano())
	c := &runtimeapi.PodSandboxConfig{
		Metadata:     &runtimeapi.PodSandboxMetadata{Name: name, Namespace: "edgehive-test", Uid: uid},
		LogDirectory: t.TempDir(),
		Labels:       map[string]string{"edgehive.test": name},
		Linux: &runtimeapi.LinuxPodSandboxConfig{
			SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{
				// As the kubelet sets them: a PID namespace per container.
				NamespaceOptions: itNamespaces(),
			},
		},
	}
	if hostNetwork {
		// No Hostname: runc refuses one without a private UTS namespace.
		c.Linux.SecurityContext.NamespaceOptions.Network = runtimeapi.NamespaceMode_NODE
	} else {
		c.Hostname = name
	}
	return c
}

func itNamespaces() *runtimeapi.NamespaceOption {
	return &runtimeapi.NamespaceOption{
		Network: runtimeapi.NamespaceMode_POD,
		Pid:     runtimeapi.NamespaceMode_CONTAINER,
		Ipc:     runtimeapi.NamespaceMode_POD,
	}
}

// itContainerConfig is a busybox container running cmd.
func itContainerConfig(name string, sandbox *runtimeapi.PodSandboxConfig, cmd ...string) *runtimeapi.ContainerConfig {
	ns := itNamespaces()
	ns.Network = sandbox.GetLinux().GetSecurityContext().GetNamespaceOptions().GetNetwork()
	return &runtimeapi.ContainerConfig{
		Metadata: &runtimeapi.ContainerMetadata{Name: name},
		Image:    &runtimeapi.ImageSpec{Image: itBusybox},
		Command:  cmd,
		LogPath:  name + ".log",
		Labels:   map[string]string{"edgehive.test": name},
		Linux: &runtimeapi.LinuxContainerConfig{
			SecurityContext: &runtimeapi.LinuxContainerSecurityContext{NamespaceOptions: ns},
		},
	}
}

// runSandbox starts a sandbox and registers its removal.
func runSandbox(t *testing.T, c *Client, cfg *runtimeapi.PodSandboxConfig) string {
	t.Helper()
	var id string
	timed(t, "RunPodSandbox", func() (err error) {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		id, err = c.RunPodSandbox(ctx, cfg, "")
		return err
	})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		if err := c.StopPodSandbox(ctx, id); err != nil && !IsNotFound(err) {
			t.Errorf("cleanup: %v", err)
		}
		if err := c.RemovePodSandbox(ctx, id); err != nil && !IsNotFound(err) {
			t.Errorf("cleanup: %v", err)
		}
	})
	return id
}

func TestIntegrationVersionAndImages(t *testing.T) {
	c := integrationClient(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	v, err := c.Version(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if v.RuntimeName != "containerd" || v.RuntimeApiVersion != "v1" {
		t.Fatalf("Version = %v; want containerd serving runtime API v1", v)
	}
	t.Logf("runtime %s %s, CRI %s", v.RuntimeName, v.RuntimeVersion, v.RuntimeApiVersion)

	for _, ref := range []string{itBusybox, itPause, "docker.io/library/busybox:1.36", "registry.k8s.io/pause:3.10"} {
		st, err := c.ImageStatus(ctx, &runtimeapi.ImageSpec{Image: ref}, false)
		if err != nil {
			t.Fatal(err)
		}
		if st.Image == nil {
			t.Fatalf("image %s is not present; were the images imported (hack/images)?", ref)
		}
	}
	imgs, err := c.ListImages(ctx, nil)
	if err != nil || len(imgs) < 2 {
		t.Fatalf("ListImages = %d images, %v", len(imgs), err)
	}
	// No pull leaves the machine: containerd resolves every reference with
	// the registry, and the test containerd's proxy is a closed local port.
	start := time.Now()
	_, err = c.PullImage(ctx, &runtimeapi.ImageSpec{Image: "edgehive.local/absent:0"}, nil, nil)
	if err == nil || !strings.Contains(err.Error(), "127.0.0.1:9") {
		t.Fatalf("PullImage = %v; want a failure at the closed proxy 127.0.0.1:9", err)
	}
	t.Logf("PullImage failed as it must, in %v: %v", time.Since(start).Round(time.Millisecond), err)
	fs, err := c.ImageFsInfo(ctx)
	if err != nil || len(fs.ImageFilesystems) == 0 {
		t.Fatalf("ImageFsInfo = %v, %v", fs, err)
	}
	// A missing image is reported as absent, not as an error.
	st, err := c.ImageStatus(ctx, &runtimeapi.ImageSpec{Image: "edgehive.local/absent:0"}, false)
	if err != nil || st.Image != nil {
		t.Fatalf("ImageStatus(absent) = %v, %v", st, err)
	}
}

func TestIntegrationHostNetworkPod(t *testing.T) {
	c := integrationClient(t)
	sbCfg := itSandboxConfig(t, "hostnet", true)
	sb := runSandbox(t, c, sbCfg)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	cCfg := itContainerConfig("app", sbCfg, "sh", "-c", "echo hello; sleep 300")
	var id string
	timed(t, "CreateContainer", func() (err error) {
		id, err = c.CreateContainer(ctx, sb, cCfg, sbCfg)
		return err
	})
	timed(t, "StartContainer", func() error { return c.StartContainer(ctx, id) })

	r, err := c.ExecSync(ctx, id, []string{"cat", "/proc/1/cmdline"}, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	// PID 1 is the container's own process (busybox sh execs its last
	// command), not the sandbox's pause: the PID namespace is the container's.
	if got := strings.ReplaceAll(string(r.Stdout), "\x00", " "); r.ExitCode != 0 || !strings.Contains(got, "sleep 300") {
		t.Fatalf("ExecSync cat /proc/1/cmdline = %q (stderr %q), exit %d", got, r.Stderr, r.ExitCode)
	}
	r, err = c.ExecSync(ctx, id, []string{"sh", "-c", "echo ok; exit 3"}, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if string(r.Stdout) != "ok\n" || r.ExitCode != 3 {
		t.Fatalf("ExecSync echo ok = %q, exit %d", r.Stdout, r.ExitCode)
	}

	st, err := c.ContainerStatus(ctx, id, false)
	if err != nil {
		t.Fatal(err)
	}
	if st.Status.State != runtimeapi.ContainerState_CONTAINER_RUNNING {
		t.Fatalf("container state = %v, want RUNNING", st.Status.State)
	}
	// The container's output reaches its log file.
	logPath := st.Status.LogPath
	deadline := time.Now().Add(5 * time.Second)
	for {
		b, _ := os.ReadFile(logPath)
		if strings.Contains(string(b), "hello") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("log %s = %q, want hello", logPath, b)
		}
		time.Sleep(50 * time.Millisecond)
	}

	list, err := c.ListContainers(ctx, &runtimeapi.ContainerFilter{PodSandboxId: sb})
	if err != nil || len(list) != 1 || list[0].Id != id {
		t.Fatalf("ListContainers = %v, %v", list, err)
	}
	sbs, err := c.ListPodSandbox(ctx, &runtimeapi.PodSandboxFilter{Id: sb})
	if err != nil || len(sbs) != 1 || sbs[0].State != runtimeapi.PodSandboxState_SANDBOX_READY {
		t.Fatalf("ListPodSandbox = %v, %v", sbs, err)
	}

	// sh as PID 1 ignores SIGTERM: StopContainer kills it after the timeout.
	timed(t, "StopContainer", func() error { return c.StopContainer(ctx, id, 1) })
	st, err = c.ContainerStatus(ctx, id, false)
	if err != nil {
		t.Fatal(err)
	}
	if st.Status.State != runtimeapi.ContainerState_CONTAINER_EXITED {
		t.Fatalf("container state after stop = %v, want EXITED", st.Status.State)
	}
	timed(t, "RemoveContainer", func() error { return c.RemoveContainer(ctx, id) })
	if _, err := c.ContainerStatus(ctx, id, false); !IsNotFound(err) {
		t.Fatalf("ContainerStatus after remove = %v, want NotFound", err)
	}
	timed(t, "StopPodSandbox", func() error { return c.StopPodSandbox(ctx, sb) })
	timed(t, "RemovePodSandbox", func() error { return c.RemovePodSandbox(ctx, sb) })
	if _, err := c.PodSandboxStatus(ctx, sb, false); !IsNotFound(err) {
		t.Fatalf("PodSandboxStatus after remove = %v, want NotFound", err)
	}
}

func TestIntegrationBridgeNetworkPod(t *testing.T) {
	c := integrationClient(t)
	sbCfg := itSandboxConfig(t, "bridge", false)
	sb := runSandbox(t, c, sbCfg)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	st, err := c.PodSandboxStatus(ctx, sb, false)
	if err != nil {
		t.Fatal(err)
	}
	ip := st.Status.GetNetwork().GetIp()
	if ip == "" {
		t.Fatalf("bridge sandbox has no IP: %v", st.Status)
	}
	if st.Status.State != runtimeapi.PodSandboxState_SANDBOX_READY {
		t.Fatalf("sandbox state = %v", st.Status.State)
	}
	t.Logf("sandbox IP %s", ip)

	cCfg := itContainerConfig("web", sbCfg, "sh", "-c", "echo hi > /tmp/index.html; exec httpd -f -p 8080 -h /tmp")
	var id string
	timed(t, "CreateContainer", func() (err error) {
		id, err = c.CreateContainer(ctx, sb, cCfg, sbCfg)
		return err
	})
	timed(t, "StartContainer", func() error { return c.StartContainer(ctx, id) })

	// The container sees the sandbox's IP and hostname, and its own server.
	r, err := c.ExecSync(ctx, id, []string{"sh", "-c", "hostname; ip -4 -o addr show eth0; for i in 1 2 3 4 5 6 7 8 9 10; do wget -q -O - http://" + ip + ":8080/ && exit 0; sleep 0.2; done; exit 1"}, 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	out := string(r.Stdout)
	if r.ExitCode != 0 || !strings.Contains(out, "bridge") || !strings.Contains(out, ip+"/") || !strings.Contains(out, "hi") {
		t.Fatalf("exec in bridge pod: exit %d, stdout %q, stderr %q", r.ExitCode, out, r.Stderr)
	}

	timed(t, "StopContainer", func() error { return c.StopContainer(ctx, id, 2) })
	timed(t, "RemoveContainer", func() error { return c.RemoveContainer(ctx, id) })
	timed(t, "StopPodSandbox", func() error { return c.StopPodSandbox(ctx, sb) })
	timed(t, "RemovePodSandbox", func() error { return c.RemovePodSandbox(ctx, sb) })
}

// TestIntegrationTimings runs a few pods in a row and logs the median
// RunPodSandbox, CreateContainer and StartContainer durations.
func TestIntegrationTimings(t *testing.T) {
	c := integrationClient(t)
	const n = 5
	var run, create, start []time.Duration
	for i := range n {
		sbCfg := itSandboxConfig(t, fmt.Sprintf("timing%d", i), i%2 == 0)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		t0 := time.Now()
		sb, err := c.RunPodSandbox(ctx, sbCfg, "")
		if err != nil {
			cancel()
			t.Fatal(err)
		}
		t1 := time.Now()
		id, err := c.CreateContainer(ctx, sb, itContainerConfig("c", sbCfg, "sleep", "300"), sbCfg)
		if err != nil {
			cancel()
			t.Fatal(err)
		}
		t2 := time.Now()
		if err := c.StartContainer(ctx, id); err != nil {
			cancel()
			t.Fatal(err)
		}
		t3 := time.Now()
		run, create, start = append(run, t1.Sub(t0)), append(create, t2.Sub(t1)), append(start, t3.Sub(t2))
		if err := c.StopPodSandbox(ctx, sb); err != nil {
			t.Error(err)
		}
		if err := c.RemovePodSandbox(ctx, sb); err != nil {
			t.Error(err)
		}
		cancel()
	}
	med := func(ds []time.Duration) string {
		s := append([]time.Duration(nil), ds...)
		for i := range s {
			for j := i + 1; j < len(s); j++ {
				if s[j] < s[i] {
					s[i], s[j] = s[j], s[i]
				}
			}
		}
		return fmt.Sprintf("median %6.1f ms (min %6.1f, max %6.1f)", ms(s[len(s)/2]), ms(s[0]), ms(s[len(s)-1]))
	}
	t.Logf("RunPodSandbox   %s", med(run))
	t.Logf("CreateContainer %s", med(create))
	t.Logf("StartContainer  %s", med(start))
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
