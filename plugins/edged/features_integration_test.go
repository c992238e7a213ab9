//go:build containerd

package edged

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/clock"

	"github.com/edgehive/edgehive/plugins/edged/cri"
	"github.com/edgehive/edgehive/sdk"
	"github.com/edgehive/edgehive/sdk/sdktest"
)

// itMeta answers edged's queries as metamanager would from its store.
type itMeta struct {
	mu         sync.Mutex
	configMaps map[string]*v1.ConfigMap
	secrets    map[string]*v1.Secret
	services   map[string][]v1.Service // by namespace
	pods       []*v1.Pod               // the stored pod list
}

func (m *itMeta) answer(req *sdk.Message) (*sdk.Message, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	resp := sdk.NewMessage(req.Header.ID).BuildRouter(metaManager, sdk.GroupMeta, req.Router.Resource, sdk.OpResponse)
	parts := strings.Split(req.Router.Resource, "/")
	notFound := func() (*sdk.Message, error) {
		e := sdk.NewMessage(req.Header.ID).BuildRouter(metaManager, sdk.GroupMeta, req.Router.Resource, sdk.OpError)
		return e, e.FillBody(req.Router.Resource + " not found")
	}
	switch {
	case len(parts) == 3 && parts[1] == "configmap":
		if cm, ok := m.configMaps[parts[2]]; ok {
			return resp, resp.FillBody(cm)
		}
		return notFound()
	case len(parts) == 3 && parts[1] == "secret":
		if s, ok := m.secrets[parts[2]]; ok {
			return resp, resp.FillBody(s)
		}
		return notFound()
	case len(parts) == 2 && parts[1] == "service":
		items := []string{}
		for _, s := range m.services[parts[0]] {
			b, _ := json.Marshal(s)
			items = append(items, string(b))
		}
		return resp, resp.FillBody(items)
	case req.Router.Resource == "default/pod":
		items := []string{}
		for _, p := range m.pods {
			b, _ := json.Marshal(p)
			items = append(items, string(b))
		}
		return resp, resp.FillBody(items)
	}
	return resp, resp.FillBody([]string{})
}

func itHarness(t *testing.T, meta *itMeta, extraConfig string) (*sdktest.Harness, *cri.Client, string) {
	t.Helper()
	check := itRuntime(t)
	t.Cleanup(func() { check.Close() })
	dataDir := t.TempDir()
	cfg := `{"sandbox_image":"edgehive.local/pause:3.10","http_address":"127.0.0.1:0","register_node":false` + extraConfig + `}`
	h := sdktest.New(t, NewWithRuntime(itRuntime(t), clock.RealClock{}), sdktest.Options{DataDir: dataDir, ConfigJSON: cfg})
	h.OnSync(metaManager, meta.answer)
	return h, check, dataDir
}

func execIn(t *testing.T, rt *cri.Client, containerID string, cmd ...string) (string, int32) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := rt.ExecSync(ctx, strings.TrimPrefix(containerID, "containerd://"), cmd, 5*time.Second)
	if err != nil {
		t.Fatalf("exec %v: %v", cmd, err)
	}
	return string(r.Stdout) + string(r.Stderr), r.ExitCode
}

func statusOf(st v1.PodStatus, name string) *v1.ContainerStatus {
	for i := range st.ContainerStatuses {
		if st.ContainerStatuses[i].Name == name {
			return &st.ContainerStatuses[i]
		}
	}
	for i := range st.InitContainerStatuses {
		if st.InitContainerStatuses[i].Name == name {
			return &st.InitContainerStatuses[i]
		}
	}
	return nil
}

// TestContainerdPodFeatures: an init container and two app containers, a
// configMap volume, env from a secret, a configMap (envFrom), fieldRef and
// resourceFieldRef, service variables, the managed /etc/hosts with
// hostAliases, runAsUser/runAsGroup/fsGroup, a read-only root filesystem,
// QoS and events — all seen inside the containers through ExecSync.
func TestContainerdPodFeatures(t *testing.T) {
	meta := &itMeta{
		configMaps: map[string]*v1.ConfigMap{
			"app-cfg": {Data: map[string]string{"app.conf": "level=debug\n"}},
			"app-env": {Data: map[string]string{"MODE": "edge", "REGION": "north", "data-1": "value-1"}},
		},
		secrets: map[string]*v1.Secret{"app-secret": {Data: map[string][]byte{"password": []byte("s3cret")}}},
		services: map[string][]v1.Service{
			"default": {
				{ObjectMeta: metav1.ObjectMeta{Name: "kubernetes", Namespace: "default"},
					Spec: v1.ServiceSpec{ClusterIP: "10.96.0.1", Ports: []v1.ServicePort{{Name: "https", Port: 443, Protocol: v1.ProtocolTCP}}}},
				{ObjectMeta: metav1.ObjectMeta{Name: "my-db", Namespace: "default"},
					Spec: v1.ServiceSpec{ClusterIP: "10.96.0.20", Ports: []v1.ServicePort{{Port: 5432}}}},
			},
		},
	}
	h, check, _ := itHarness(t, meta, "")
	name := "it-feat-" + time.Now().Format("150405")
	pod := mkPod(name, name, false, "app", "side")
	grace := int64(1)
	uid, gid, fsg := int64(1000), int64(3000), int64(2000)
	pod.Spec.TerminationGracePeriodSeconds = &grace
	pod.Spec.SecurityContext = &v1.PodSecurityContext{RunAsUser: &uid, RunAsGroup: &gid, FSGroup: &fsg}
	pod.Spec.HostAliases = []v1.HostAlias{{IP: "10.1.2.3", Hostnames: []string{"foo.local", "bar.local"}}}
	pod.Spec.Volumes = []v1.Volume{
		{Name: "cfg", VolumeSource: v1.VolumeSource{ConfigMap: &v1.ConfigMapVolumeSource{LocalObjectReference: v1.LocalObjectReference{Name: "app-cfg"}}}},
		{Name: "work", VolumeSource: v1.VolumeSource{EmptyDir: &v1.EmptyDirVolumeSource{}}},
	}
	pod.Spec.InitContainers = []v1.Container{{Name: "init", Image: busybox,
		Command:      []string{"sh", "-c", "echo initialised > /work/init.txt"},
		VolumeMounts: []v1.VolumeMount{{Name: "work", MountPath: "/work"}}}}
	ro := true
	app := &pod.Spec.Containers[0]
	app.Command = []string{"sh", "-c", "exec sleep 300"}
	app.VolumeMounts = []v1.VolumeMount{{Name: "cfg", MountPath: "/etc/app"}, {Name: "work", MountPath: "/work"}}
	app.Resources = v1.ResourceRequirements{
		Requests: v1.ResourceList{v1.ResourceCPU: resource.MustParse("100m"), v1.ResourceMemory: resource.MustParse("32Mi")},
		Limits:   v1.ResourceList{v1.ResourceCPU: resource.MustParse("500m"), v1.ResourceMemory: resource.MustParse("64Mi")}}
	app.EnvFrom = []v1.EnvFromSource{{Prefix: "CFG_", ConfigMapRef: &v1.ConfigMapEnvSource{LocalObjectReference: v1.LocalObjectReference{Name: "app-env"}}}}
	app.Env = []v1.EnvVar{
		{Name: "PASSWORD", ValueFrom: &v1.EnvVarSource{SecretKeyRef: &v1.SecretKeySelector{LocalObjectReference: v1.LocalObjectReference{Name: "app-secret"}, Key: "password"}}},
		{Name: "POD_NAME", ValueFrom: &v1.EnvVarSource{FieldRef: &v1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
		{Name: "POD_IP", ValueFrom: &v1.EnvVarSource{FieldRef: &v1.ObjectFieldSelector{FieldPath: "status.podIP"}}},
		{Name: "MEM_LIMIT_MI", ValueFrom: &v1.EnvVarSource{ResourceFieldRef: &v1.ResourceFieldSelector{Resource: "limits.memory", Divisor: resource.MustParse("1Mi")}}},
		{Name: "GREETING", Value: "hello $(POD_NAME) in $(CFG_REGION)"},
	}
	side := &pod.Spec.Containers[1]
	side.Command = []string{"sh", "-c", "exec sleep 300"}
	root := int64(0)
	// Root, so that only a read-only root filesystem can refuse a write.
	side.SecurityContext = &v1.SecurityContext{RunAsUser: &root, ReadOnlyRootFilesystem: &ro}
	defer deleteAndWait(t, h, check, pod)
	if err := h.Deliver(podMsg(t, sdk.OpInsert, pod)); err != nil {
		t.Fatal(err)
	}
	st := waitStatus(t, h, name, 60*time.Second, func(s v1.PodStatus) bool {
		return s.Phase == v1.PodRunning && len(s.ContainerStatuses) == 2 &&
			s.ContainerStatuses[0].State.Running != nil && s.ContainerStatuses[1].State.Running != nil
	})
	if st.QOSClass != v1.PodQOSBurstable {
		t.Errorf("qosClass %q", st.QOSClass)
	}
	if init := statusOf(st, "init"); init == nil || init.State.Terminated == nil || init.State.Terminated.ExitCode != 0 {
		t.Errorf("init container status %+v", init)
	}
	if len(st.HostIPs) == 0 || st.HostIP == "" {
		t.Errorf("host IPs missing: %q %v", st.HostIP, st.HostIPs)
	}
	appID := statusOf(st, "app").ContainerID
	wantEnv := map[string]string{
		"PASSWORD": "s3cret", "POD_NAME": name, "POD_IP": st.PodIP, "MEM_LIMIT_MI": "64",
		"CFG_MODE": "edge", "CFG_REGION": "north", "GREETING": "hello " + name + " in north",
		// Names that are not shell identifiers are passed too (the
		// conformance tests' "data-1"); run without a shell, env shows them.
		"CFG_data-1":              "value-1",
		"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443", "KUBERNETES_SERVICE_PORT_HTTPS": "443",
		"KUBERNETES_PORT": "tcp://10.96.0.1:443", "MY_DB_SERVICE_HOST": "10.96.0.20", "MY_DB_PORT_5432_TCP_ADDR": "10.96.0.20",
	}
	out, _ := execIn(t, check, appID, "env")
	env := map[string]string{}
	for _, l := range strings.Split(out, "\n") {
		if k, v, ok := strings.Cut(l, "="); ok {
			env[k] = v
		}
	}
	for k, v := range wantEnv {
		if env[k] != v {
			t.Errorf("env %s = %q, want %q", k, env[k], v)
		}
	}
	if got, _ := execIn(t, check, appID, "cat", "/etc/app/app.conf"); got != "level=debug\n" {
		t.Errorf("configMap file %q", got)
	}
	if got, _ := execIn(t, check, appID, "cat", "/work/init.txt"); got != "initialised\n" {
		t.Errorf("init container output %q", got)
	}
	hosts, _ := execIn(t, check, appID, "cat", "/etc/hosts")
	if !strings.Contains(hosts, st.PodIP+"\t"+name) || !strings.Contains(hosts, "10.1.2.3\tfoo.local\tbar.local") {
		t.Errorf("/etc/hosts:\n%s", hosts)
	}
	if got, _ := execIn(t, check, appID, "id"); !strings.Contains(got, "uid=1000") || !strings.Contains(got, "gid=3000") || !strings.Contains(got, "2000") {
		t.Errorf("id: %q", got)
	}
	sideID := statusOf(st, "side").ContainerID
	if got, _ := execIn(t, check, sideID, "id", "-u"); got != "0\n" {
		t.Errorf("side runs as %q, want the container's runAsUser 0", got)
	}
	if out, code := execIn(t, check, sideID, "touch", "/rootfs-write"); code == 0 {
		t.Errorf("read-only root filesystem is writable: %q", out)
	}
	t.Logf("/etc/hosts of the pod:\n%s", hosts)
	if _, code := execIn(t, check, appID, "touch", "/work/ok"); code != 0 {
		t.Error("emptyDir not writable")
	}
	// fsGroup owns the emptyDir; new files inherit the group (setgid).
	if got, _ := execIn(t, check, appID, "stat", "-c", "%g", "/work/ok"); got != "2000\n" {
		t.Errorf("group of a new file in the emptyDir: %q, want the fsGroup 2000", got)
	}
	// Events went upstream: Pulled, Created, Started for the containers.
	seen := map[string]bool{}
	for _, s := range h.Sent() {
		m := s.Message
		if m.Router.Operation != sdk.OpInsert || !strings.HasPrefix(m.Router.Resource, "default/event/"+name+".") {
			continue
		}
		var ev v1.Event
		if err := m.DecodeContent(&ev); err != nil {
			t.Fatalf("event %s: %v", m.Content, err)
		}
		if ev.InvolvedObject.UID != pod.UID || ev.Source.Component != "kubelet" {
			t.Errorf("event %+v", ev)
		}
		seen[ev.Reason+" "+ev.InvolvedObject.FieldPath] = true
	}
	for _, want := range []string{"Pulled spec.initContainers{init}", "Created spec.containers{app}", "Started spec.containers{side}"} {
		if !seen[want] {
			t.Errorf("no event %q; seen %v", want, seen)
		}
	}
}

// TestContainerdTerminationMessage: a message written to the
// terminationMessagePath, and the log tail with FallbackToLogsOnError.
func TestContainerdTerminationMessage(t *testing.T) {
	h, check, _ := itHarness(t, &itMeta{}, "")
	name := "it-term-" + time.Now().Format("150405")
	pod := mkPod(name, name, true, "file", "logs", "nonewline")
	pod.Spec.RestartPolicy = v1.RestartPolicyNever
	// Output cut off without a newline comes back as written.
	pod.Spec.Containers[2].Command = []string{"sh", "-c", "printf DONE; exit 1"}
	pod.Spec.Containers[2].TerminationMessagePolicy = v1.TerminationMessageFallbackToLogsOnError
	pod.Spec.Containers[0].Command = []string{"sh", "-c", "printf 'all done' > /dev/termination-log; exit 0"}
	pod.Spec.Containers[0].TerminationMessagePath = "/dev/termination-log"
	pod.Spec.Containers[1].Command = []string{"sh", "-c", "echo starting; echo 'fatal: no config'; exit 3"}
	pod.Spec.Containers[1].TerminationMessagePath = "/dev/termination-log"
	pod.Spec.Containers[1].TerminationMessagePolicy = v1.TerminationMessageFallbackToLogsOnError
	defer deleteAndWait(t, h, check, pod)
	if err := h.Deliver(podMsg(t, sdk.OpInsert, pod)); err != nil {
		t.Fatal(err)
	}
	st := waitStatus(t, h, name, 60*time.Second, func(s v1.PodStatus) bool { return s.Phase == v1.PodFailed })
	if f := statusOf(st, "file").State.Terminated; f == nil || f.Message != "all done" || f.ExitCode != 0 {
		t.Errorf("file container: %+v", f)
	}
	if l := statusOf(st, "logs").State.Terminated; l == nil || l.Message != "starting\nfatal: no config\n" || l.ExitCode != 3 {
		t.Errorf("logs container: %+v", l)
	}
	if l := statusOf(st, "nonewline").State.Terminated; l == nil || l.Message != "DONE" || l.ExitCode != 1 {
		t.Errorf("nonewline container: %+v", l)
	}
}

// TestContainerdSidecars: a sidecar (an init container with restartPolicy
// Always) starts first and must pass its startup probe before the next init
// container runs; it keeps running beside the app container, and goes when
// the app container of a restartPolicy Never pod ends. The app container
// writes through a subPathExpr mount.
func TestContainerdSidecars(t *testing.T) {
	h, check, _ := itHarness(t, &itMeta{}, "")
	name := "it-sidecar-" + time.Now().Format("150405")
	hostDir := t.TempDir()
	always := v1.ContainerRestartPolicyAlways
	pod := mkPod(name, name, true, "app")
	pod.Spec.RestartPolicy = v1.RestartPolicyNever
	pod.Spec.Volumes = []v1.Volume{{Name: "out", VolumeSource: v1.VolumeSource{HostPath: &v1.HostPathVolumeSource{Path: hostDir}}}}
	out := []v1.VolumeMount{{Name: "out", MountPath: "/out"}}
	pod.Spec.InitContainers = []v1.Container{
		{Name: "side", Image: busybox, RestartPolicy: &always, VolumeMounts: out,
			Command: []string{"sh", "-c", "sleep 1; touch /out/side-up; exec sleep 300"},
			StartupProbe: &v1.Probe{ProbeHandler: v1.ProbeHandler{Exec: &v1.ExecAction{Command: []string{"test", "-f", "/out/side-up"}}},
				PeriodSeconds: 1, FailureThreshold: 30}},
		{Name: "check", Image: busybox, VolumeMounts: out,
			Command: []string{"sh", "-c", "test -f /out/side-up && touch /out/check-saw-side"}},
	}
	app := &pod.Spec.Containers[0]
	app.Env = []v1.EnvVar{{Name: "DIR", Value: "by-expr"}}
	app.VolumeMounts = []v1.VolumeMount{{Name: "out", MountPath: "/data", SubPathExpr: "$(DIR)"}}
	app.Command = []string{"sh", "-c", "echo hi > /data/file; sleep 4"}
	defer deleteAndWait(t, h, check, pod)
	if err := h.Deliver(podMsg(t, sdk.OpInsert, pod)); err != nil {
		t.Fatal(err)
	}
	st := waitStatus(t, h, name, 60*time.Second, func(s v1.PodStatus) bool {
		a := statusOf(s, "app")
		return a != nil && a.State.Running != nil
	})
	if side := statusOf(st, "side"); side.State.Running == nil || side.Started == nil || !*side.Started || !side.Ready {
		t.Fatalf("sidecar while the app runs: %+v", side)
	}
	if c := statusOf(st, "check").State.Terminated; c == nil || c.ExitCode != 0 {
		t.Fatalf("init container after the sidecar: %+v (it ran before the sidecar started?)", statusOf(st, "check").State)
	}
	st = waitStatus(t, h, name, 60*time.Second, func(s v1.PodStatus) bool { return s.Phase == v1.PodSucceeded })
	if side := statusOf(st, "side"); side.State.Running != nil {
		t.Fatalf("sidecar still running after the pod completed: %+v", side)
	}
	if b, err := os.ReadFile(filepath.Join(hostDir, "by-expr", "file")); err != nil || string(b) != "hi\n" {
		t.Fatalf("subPathExpr mount: %q %v", b, err)
	}
}

// TestContainerdPreStopAndGrace: delete runs the preStop hook, the container
// (which ignores SIGTERM) stops within the grace period, and sandbox and
// containers are removed.
func TestContainerdPreStopAndGrace(t *testing.T) {
	h, check, _ := itHarness(t, &itMeta{}, "")
	name := "it-prestop-" + time.Now().Format("150405")
	hostDir := t.TempDir()
	pod := mkPod(name, name, true, "app")
	grace := int64(3)
	pod.Spec.TerminationGracePeriodSeconds = &grace
	pod.Spec.Volumes = []v1.Volume{{Name: "out", VolumeSource: v1.VolumeSource{HostPath: &v1.HostPathVolumeSource{Path: hostDir}}}}
	c := &pod.Spec.Containers[0]
	c.Command = []string{"sh", "-c", "trap '' TERM; echo started > /out/poststart-before; exec sleep 300"}
	c.VolumeMounts = []v1.VolumeMount{{Name: "out", MountPath: "/out"}}
	c.Lifecycle = &v1.Lifecycle{
		PostStart: &v1.LifecycleHandler{Exec: &v1.ExecAction{Command: []string{"sh", "-c", "echo post > /out/poststart"}}},
		PreStop:   &v1.LifecycleHandler{Exec: &v1.ExecAction{Command: []string{"sh", "-c", "echo bye > /out/prestop"}}},
	}
	if err := h.Deliver(podMsg(t, sdk.OpInsert, pod)); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, h, name, 60*time.Second, running)
	if b, err := os.ReadFile(filepath.Join(hostDir, "poststart")); err != nil || string(b) != "post\n" {
		t.Fatalf("postStart hook did not run: %q %v", b, err)
	}
	t0 := time.Now()
	deleteAndWait(t, h, check, pod)
	took := time.Since(t0)
	t.Logf("delete with preStop and a %ds grace period took %v", grace, took)
	if b, err := os.ReadFile(filepath.Join(hostDir, "prestop")); err != nil || string(b) != "bye\n" {
		t.Fatalf("preStop hook did not run: %q %v", b, err)
	}
	if took > time.Duration(grace+3)*time.Second {
		t.Fatalf("stop took %v, grace period %ds", took, grace)
	}
	if took < time.Duration(grace-1)*time.Second {
		t.Fatalf("a container ignoring SIGTERM stopped in %v, before its grace period", took)
	}
}

// TestContainerdMissingImage: ErrImagePull then ImagePullBackOff, no crash.
func TestContainerdMissingImage(t *testing.T) {
	h, check, _ := itHarness(t, &itMeta{}, "")
	name := "it-noimg-" + time.Now().Format("150405")
	pod := mkPod(name, name, true, "app")
	pod.Spec.Containers[0].Image = "edgehive.local/does-not-exist:1.0"
	defer deleteAndWait(t, h, check, pod)
	if err := h.Deliver(podMsg(t, sdk.OpInsert, pod)); err != nil {
		t.Fatal(err)
	}
	waiting := func(reason string) func(v1.PodStatus) bool {
		return func(s v1.PodStatus) bool {
			return s.Phase == v1.PodPending && len(s.ContainerStatuses) == 1 && s.ContainerStatuses[0].State.Waiting != nil &&
				s.ContainerStatuses[0].State.Waiting.Reason == reason
		}
	}
	waitStatus(t, h, name, 60*time.Second, waiting("ErrImagePull"))
	st := waitStatus(t, h, name, 60*time.Second, waiting("ImagePullBackOff"))
	t.Logf("waiting: %+v", st.ContainerStatuses[0].State.Waiting)
	// Another pod still runs: nothing crashed.
	ok := mkPod(name+"-ok", name+"-ok", true, "app")
	defer deleteAndWait(t, h, check, ok)
	if err := h.Deliver(podMsg(t, sdk.OpInsert, ok)); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, h, ok.Name, 60*time.Second, running)
}

// TestContainerdCrashLoopBackOff: a container exiting non-zero restarts with
// a growing back-off (10 s, then 20 s) and shows CrashLoopBackOff.
func TestContainerdCrashLoopBackOff(t *testing.T) {
	h, check, _ := itHarness(t, &itMeta{}, "")
	name := "it-crashloop-" + time.Now().Format("150405")
	pod := mkPod(name, name, true, "app")
	pod.Spec.Containers[0].Command = []string{"sh", "-c", "exit 2"}
	defer deleteAndWait(t, h, check, pod)
	if err := h.Deliver(podMsg(t, sdk.OpInsert, pod)); err != nil {
		t.Fatal(err)
	}
	backOff := func(restarts int32, msg string) func(v1.PodStatus) bool {
		return func(s v1.PodStatus) bool {
			if len(s.ContainerStatuses) != 1 {
				return false
			}
			cs := s.ContainerStatuses[0]
			return cs.RestartCount == restarts && cs.State.Waiting != nil && cs.State.Waiting.Reason == "CrashLoopBackOff" &&
				strings.Contains(cs.State.Waiting.Message, msg) && cs.LastTerminationState.Terminated != nil &&
				cs.LastTerminationState.Terminated.ExitCode == 2
		}
	}
	t0 := time.Now()
	waitStatus(t, h, name, 30*time.Second, backOff(1, "back-off 10s"))
	t1 := time.Now()
	waitStatus(t, h, name, 40*time.Second, backOff(2, "back-off 20s"))
	t2 := time.Now()
	t.Logf("restart 1 back-off seen after %v, restart 2 back-off (20s) after %v more", t1.Sub(t0), t2.Sub(t1))
	if d := t2.Sub(t1); d < 9*time.Second {
		t.Fatalf("second restart came %v after the first back-off: no 10 s back-off", d)
	}
}

// TestContainerdActiveDeadline: a pod past activeDeadlineSeconds is stopped
// and reported Failed with DeadlineExceeded.
func TestContainerdActiveDeadline(t *testing.T) {
	h, check, _ := itHarness(t, &itMeta{}, "")
	name := "it-deadline-" + time.Now().Format("150405")
	pod := mkPod(name, name, true, "app")
	grace, deadline := int64(1), int64(3)
	pod.Spec.TerminationGracePeriodSeconds = &grace
	pod.Spec.ActiveDeadlineSeconds = &deadline
	defer deleteAndWait(t, h, check, pod)
	if err := h.Deliver(podMsg(t, sdk.OpInsert, pod)); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, h, name, 60*time.Second, running)
	t0 := time.Now()
	st := waitStatus(t, h, name, 20*time.Second, func(s v1.PodStatus) bool {
		return s.Phase == v1.PodFailed && s.Reason == "DeadlineExceeded"
	})
	t.Logf("deadline exceeded reported %v after Running", time.Since(t0))
	if cs := st.ContainerStatuses[0]; cs.State.Terminated == nil {
		t.Fatalf("container not stopped: %+v", cs.State)
	}
}

// TestContainerdStaticPod: a manifest in static_pod_dir runs with no cloud
// and no metamanager at all.
func TestContainerdStaticPod(t *testing.T) {
	dir := t.TempDir()
	check := itRuntime(t)
	defer check.Close()
	name := "it-static-" + time.Now().Format("150405")
	manifest := fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata:
  name: %s
spec:
  hostNetwork: true
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: %s
    command: ["sleep", "300"]
`, name, busybox)
	if err := os.WriteFile(filepath.Join(dir, "static.yaml"), []byte(manifest), 0o644); err != nil {
		t.Fatal(err)
	}
	m := NewWithRuntime(itRuntime(t), clock.RealClock{})
	m.staticPeriod = 200 * time.Millisecond
	// No sync handler: every query to metamanager fails, as with none there.
	h := sdktest.New(t, m, sdktest.Options{ConfigJSON: `{"sandbox_image":"edgehive.local/pause:3.10","http_address":"127.0.0.1:0","register_node":false,"static_pod_dir":"` + dir + `"}`})
	full := name + "-" + sdktest.DefaultNodeName
	deadline := time.Now().Add(60 * time.Second)
	var running bool
	for time.Now().Before(deadline) && !running {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		cs, err := check.ListContainers(ctx, nil)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range cs {
			if c.GetLabels()["io.kubernetes.pod.name"] == full && c.GetState().String() == "CONTAINER_RUNNING" {
				running = true
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	if !running {
		t.Fatal("the static pod does not run")
	}
	// Removing the manifest removes the pod.
	if err := os.Remove(filepath.Join(dir, "static.yaml")); err != nil {
		t.Fatal(err)
	}
	for time.Now().Before(deadline.Add(30 * time.Second)) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		sbs, err := check.ListPodSandbox(ctx, nil)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		gone := true
		for _, sb := range sbs {
			if sb.GetMetadata().GetName() == full {
				gone = false
			}
		}
		if gone {
			_ = h
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatal("the static pod was not removed with its manifest")
}

// TestContainerdNoNewPrivileges: allowPrivilegeEscalation false sets
// no_new_privs, so a set-user-ID root binary (the e2e nonewprivs image, which
// make containerd-up imports) runs as the pod's user; true lets it run as root.
func TestContainerdNoNewPrivileges(t *testing.T) {
	h, check, _ := itHarness(t, &itMeta{}, "")
	for _, tt := range []struct {
		allow bool
		want  string
	}{{false, "Effective uid: 1000\n"}, {true, "Effective uid: 0\n"}} {
		name := fmt.Sprintf("it-nnp-%v-%s", tt.allow, time.Now().Format("150405"))
		pod := mkPod(name, name, true, "nnp")
		pod.Spec.RestartPolicy = v1.RestartPolicyNever
		uid, allow := int64(1000), tt.allow
		c := &pod.Spec.Containers[0]
		c.Image, c.Command = "registry.k8s.io/e2e-test-images/nonewprivs:1.4", nil
		c.SecurityContext = &v1.SecurityContext{RunAsUser: &uid, AllowPrivilegeEscalation: &allow}
		if err := h.Deliver(podMsg(t, sdk.OpInsert, pod)); err != nil {
			t.Fatal(err)
		}
		st := waitStatus(t, h, name, 60*time.Second, func(s v1.PodStatus) bool { return s.Phase == v1.PodSucceeded || s.Phase == v1.PodFailed })
		term := statusOf(st, "nnp").State.Terminated
		if term == nil {
			t.Fatalf("allowPrivilegeEscalation %v: %+v", tt.allow, statusOf(st, "nnp").State)
		}
		out := containerOutput(t, check, strings.TrimPrefix(term.ContainerID, "containerd://"))
		if out != tt.want {
			t.Errorf("allowPrivilegeEscalation %v: output %q, want %q", tt.allow, out, tt.want)
		}
		deleteAndWait(t, h, check, pod)
	}
}

// containerOutput is what a container wrote, read from its CRI log file.
func containerOutput(t *testing.T, rt *cri.Client, id string) string {
	t.Helper()
	st, err := rt.ContainerStatus(context.Background(), id, false)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(st.GetStatus().GetLogPath())
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	for _, line := range strings.Split(string(b), "\n") {
		// "<time> <stream> <P|F> <message>"
		if parts := strings.SplitN(line, " ", 4); len(parts) == 4 {
			out.WriteString(parts[3])
			if parts[2] == "F" {
				out.WriteByte('\n')
			}
		}
	}
	return out.String()
}
