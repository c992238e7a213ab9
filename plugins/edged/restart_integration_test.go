//go:build containerd

// The edged plugin killed with SIGKILL under the real host, with pods running
// on the real containerd: the host restarts it and no container restarts.
package edged_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/edgehive/edgehive/host"
	"github.com/edgehive/edgehive/host/config"
	"github.com/edgehive/edgehive/host/router"
	"github.com/edgehive/edgehive/plugins/edged/container"
	"github.com/edgehive/edgehive/plugins/edged/cri"
	"github.com/edgehive/edgehive/sdk"
	pluginv1 "github.com/edgehive/edgehive/sdk/proto/plugin/v1"
)

const (
	itBusybox = "edgehive.local/busybox:1.36"
	itPause   = "edgehive.local/pause:3.10"
)

// fakeMeta stands in for metamanager: it stores the pods it delivered,
// answers edged's queries from that store and keeps the last status per pod.
type fakeMeta struct {
	t     *testing.T
	local *router.Local

	mu     sync.Mutex
	stored map[string]*v1.Pod
	last   map[string]v1.PodStatus
	// podQueries counts edged's pod list queries: each edged instance asks
	// once at start, so patches after the second came from the restarted one.
	podQueries int
	gen        map[string]int // podQueries when the pod's last patch came
	changed    chan struct{}
}

func (f *fakeMeta) onDelivery(d *pluginv1.Delivery) {
	m := sdk.MessageFromProto(d.GetMessage())
	switch {
	case m.Router.Operation == sdk.OpQuery && m.Header.Sync:
		var body any = []any{}
		if m.Router.Resource == "default/pod" {
			f.mu.Lock()
			f.podQueries++
			items := []string{}
			for _, p := range f.stored {
				b, _ := json.Marshal(p)
				items = append(items, string(b))
			}
			f.mu.Unlock()
			body = items
		}
		resp, err := sdk.NewResponse(m, body)
		if err == nil {
			err = f.local.Send(pluginv1.Send_KIND_RESPONSE, "", 0, resp.ToProto())
		}
		if err != nil {
			f.t.Errorf("answer %s: %v", m.Router.Resource, err)
		}
	case m.Router.Operation == sdk.OpPatch:
		res, err := sdk.ParseResource(m.Router.Resource)
		if err != nil || res.Type != "podpatch" {
			return
		}
		var p struct {
			Status v1.PodStatus `json:"status"`
		}
		if err := m.DecodeContent(&p); err != nil {
			f.t.Errorf("bad podpatch %s: %v", m.Content, err)
			return
		}
		f.mu.Lock()
		f.last[res.Name] = p.Status
		f.gen[res.Name] = f.podQueries
		f.mu.Unlock()
		select {
		case f.changed <- struct{}{}:
		default:
		}
	}
}

func (f *fakeMeta) deliver(op string, pod *v1.Pod) {
	f.t.Helper()
	f.mu.Lock()
	if op == sdk.OpDelete {
		delete(f.stored, pod.Name)
	} else {
		f.stored[pod.Name] = pod
	}
	f.mu.Unlock()
	msg := sdk.NewMessage("")
	msg.Header.ResourceVersion = "1"
	msg.BuildRouter("metamanager", sdk.GroupMeta, "default/pod/"+pod.Name, op)
	if err := msg.FillBody(pod); err != nil {
		f.t.Fatal(err)
	}
	if err := f.local.Send(pluginv1.Send_KIND_MODULE, "edged", 0, msg.ToProto()); err != nil {
		f.t.Fatalf("deliver %s: %v", pod.Name, err)
	}
}

// waitAll waits until ok holds for every named pod's last status.
func (f *fakeMeta) waitAll(timeout time.Duration, names []string, ok func(name string, s v1.PodStatus) bool) {
	f.t.Helper()
	deadline := time.After(timeout)
	for {
		f.mu.Lock()
		done := true
		for _, n := range names {
			if s, seen := f.last[n]; !seen || !ok(n, s) {
				done = false
			}
		}
		f.mu.Unlock()
		if done {
			return
		}
		select {
		case <-f.changed:
		case <-time.After(200 * time.Millisecond):
		case <-deadline:
			f.mu.Lock()
			defer f.mu.Unlock()
			f.t.Fatalf("pods not as wanted within %s: %+v", timeout, f.last)
		}
	}
}

func buildEdgehive(t *testing.T) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "edgehive")
	cmd := exec.Command("go", "build", "-o", out, "./cmd/edgehive")
	cmd.Dir = "../.."
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build edgehive: %v\n%s", err, b)
	}
	return out
}

func runHost(t *testing.T, exe, endpoint string) (*host.Host, *fakeMeta) {
	t.Helper()
	dir := t.TempDir()
	src := fmt.Sprintf(`
node_name = "it-node"
data_dir  = %q
admin {
  socket = %q
}
log {
  level = "warn"
}
plugin "edged" {
  path = %q
  args = ["__serve", "edged"]
  restart {
    delay     = "50ms"
    max_delay = "1s"
  }
  config {
    runtime_endpoint = %q
    sandbox_image    = %q
    static_pod_dir   = ""
    register_node    = false
    http_address     = "127.0.0.1:0"
  }
}
`, filepath.Join(dir, "data"), filepath.Join(dir, "admin.sock"), exe, endpoint, itPause)
	cfg, diags := config.Parse(filepath.Join(dir, "edgehive.hcl"), []byte(src), config.WithBaseDir(dir))
	if diags.HasErrors() {
		t.Fatalf("config: %s", diags.Error())
	}
	h, err := host.New(cfg, hclog.New(&hclog.LoggerOptions{Name: "host", Level: hclog.Warn, Output: os.Stderr}))
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeMeta{t: t, stored: map[string]*v1.Pod{}, last: map[string]v1.PodStatus{}, gen: map[string]int{}, changed: make(chan struct{}, 1)}
	f.local, err = router.NewLocal(h.Router(), "metamanager", sdk.GroupMeta, f.onDelivery)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.Run(ctx, 10*time.Second) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Error("host did not stop")
		}
		f.local.Close()
	})
	return h, f
}

func waitPlugin(t *testing.T, h *host.Host, timeout time.Duration, ok func(pid, restarts int) bool) (pid, restarts int) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if sup := h.Supervisor("edged"); sup != nil {
			st := sup.Status()
			if st.State == "running" && ok(st.PID, st.Restarts) {
				return st.PID, st.Restarts
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("edged plugin not as wanted within %s", timeout)
	return 0, 0
}

// containerSet is "pod/container" → container ID and restart count, from a status.
func containerSet(s v1.PodStatus) map[string]string {
	out := map[string]string{}
	for _, cs := range s.ContainerStatuses {
		out[cs.Name] = fmt.Sprintf("%s#%d", cs.ContainerID, cs.RestartCount)
	}
	return out
}

func TestContainerdKill9EdgedPlugin(t *testing.T) {
	addr := os.Getenv("CONTAINERD_ADDRESS")
	if addr == "" {
		t.Fatal("CONTAINERD_ADDRESS is not set: run this test with `make test-cri`")
	}
	if !strings.Contains(addr, "://") {
		addr = "unix://" + addr
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	check, err := cri.New(ctx, addr)
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	defer check.Close()

	exe := buildEdgehive(t)
	h, meta := runHost(t, exe, addr)
	pid1, _ := waitPlugin(t, h, 30*time.Second, func(pid, _ int) bool { return pid > 0 })

	stamp := time.Now().Format("150405")
	grace := int64(1)
	var pods []*v1.Pod
	var names []string
	for i := range 5 {
		name := fmt.Sprintf("it-k9-%s-%d", stamp, i)
		p := &v1.Pod{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", UID: types.UID("uid-" + name)},
			Spec: v1.PodSpec{NodeName: "it-node", HostNetwork: i%2 == 0, RestartPolicy: v1.RestartPolicyAlways,
				TerminationGracePeriodSeconds: &grace,
				Containers: []v1.Container{{Name: "main", Image: itBusybox, ImagePullPolicy: v1.PullIfNotPresent,
					Command: []string{"sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"}}}}}
		pods = append(pods, p)
		names = append(names, name)
	}
	defer func() {
		for _, p := range pods {
			meta.deliver(sdk.OpDelete, p)
		}
		for _, p := range pods {
			deadline := time.Now().Add(30 * time.Second)
			for time.Now().Before(deadline) {
				ps, err := container.GetPodStatus(context.Background(), check, p.UID, p.Name, p.Namespace)
				if err == nil && len(ps.Sandboxes) == 0 && len(ps.Containers) == 0 {
					break
				}
				time.Sleep(200 * time.Millisecond)
			}
		}
	}()
	for _, p := range pods {
		meta.deliver(sdk.OpInsert, p)
	}
	running := func(_ string, s v1.PodStatus) bool {
		return s.Phase == v1.PodRunning && len(s.ContainerStatuses) == 1 && s.ContainerStatuses[0].State.Running != nil
	}
	meta.waitAll(60*time.Second, names, running)
	before := map[string]map[string]string{}
	meta.mu.Lock()
	for _, n := range names {
		before[n] = containerSet(meta.last[n])
	}
	if meta.podQueries != 1 {
		t.Fatalf("pod list queries before the kill: %d", meta.podQueries)
	}
	meta.mu.Unlock()
	runtimeBefore := runtimeContainers(t, check)

	t0 := time.Now()
	if err := syscall.Kill(pid1, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	pid2, restarts := waitPlugin(t, h, 30*time.Second, func(pid, _ int) bool { return pid > 0 && pid != pid1 })
	t.Logf("edged killed (pid %d) and restarted by the host as pid %d in %v (restarts %d)", pid1, pid2, time.Since(t0), restarts)
	if restarts < 1 {
		t.Fatalf("supervisor restarts = %d", restarts)
	}

	// Statuses keep flowing: the new edged reports every pod again, with
	// the same containers and restart counts.
	meta.waitAll(30*time.Second, names, func(n string, s v1.PodStatus) bool { return running(n, s) && meta.gen[n] == 2 })
	t.Logf("all 5 pods reported Running by the new edged %v after the kill", time.Since(t0))
	meta.mu.Lock()
	for _, n := range names {
		if got := containerSet(meta.last[n]); fmt.Sprint(got) != fmt.Sprint(before[n]) {
			t.Errorf("%s: containers before the kill %v, after %v", n, before[n], got)
		}
	}
	meta.mu.Unlock()
	// Nothing new in the runtime: the same containers, none recreated.
	time.Sleep(3 * time.Second)
	if after := runtimeContainers(t, check); fmt.Sprint(after) != fmt.Sprint(runtimeBefore) {
		t.Fatalf("runtime containers changed across the edged restart:\nbefore %v\nafter  %v", runtimeBefore, after)
	}
	// A change after the restart still gets through: a new pod runs.
	extra := pods[0].DeepCopy()
	extra.Name, extra.UID = "it-k9-"+stamp+"-extra", types.UID("uid-it-k9-"+stamp+"-extra")
	pods = append(pods, extra)
	meta.deliver(sdk.OpInsert, extra)
	meta.waitAll(60*time.Second, []string{extra.Name}, running)
}

// runtimeContainers lists the test's containers in the runtime: ID → state.
func runtimeContainers(t *testing.T, rt *cri.Client) map[string]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cs, err := rt.ListContainers(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, c := range cs {
		if strings.HasPrefix(c.GetLabels()[container.LabelPodName], "it-k9-") {
			out[c.GetId()] = c.GetState().String()
		}
	}
	return out
}
