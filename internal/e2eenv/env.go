//go:build e2e

package e2eenv

import (
	"context"
	"fmt"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/edgehive/edgehive/plugins/edged/cri"
)

// Env is one cluster with one cloudhive, a join token and the test
// containerd: what every e2e test starts from.
type Env struct {
	T          testing.TB
	Bin        string
	Cluster    *Cluster
	Client     kubernetes.Interface
	Cloud      *Cloudhive
	Token      string
	Containerd Containerd
	CRI        *cri.Client
	// made is every pod UID created, for the runtime sweep at cleanup.
	made *sync.Map
}

// NewEnv starts a cluster and a cloudhive (replica "cloudhive") and fetches
// a join token.
func NewEnv(t testing.TB, reusePort bool) *Env {
	t.Helper()
	e := &Env{T: t, Bin: BinDir(t), made: &sync.Map{}}
	e.Containerd = ContainerdFromEnv(t)
	e.CRI = NewCRI(t, e.Containerd)
	e.Cluster = StartCluster(t, ClusterOptions{PodCIDR: e.Containerd.PodCIDR})
	e.Client = e.Cluster.Client
	// Runs after the edges and cloudhive stopped, before the API server
	// does: the shared containerd keeps no pod of this test.
	t.Cleanup(e.sweepRuntime)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := EnsureNamespace(ctx, e.Client, "kubeedge"); err != nil {
		t.Fatal(err)
	}
	e.Cloud = StartCloudhive(t, e.Bin, "cloudhive", e.CloudConfig(reusePort))
	tok, err := e.Cloud.Token(ctx)
	if err != nil {
		t.Fatalf("cloudhive token: %v", err)
	}
	e.Token = tok
	return e
}

func (e *Env) CloudConfig(reusePort bool) CloudhiveConfig {
	return CloudhiveConfig{Kubeconfig: e.Cluster.Kubeconfig, ReusePort: reusePort}
}

// NodeName is unique per test process, so leftovers of a killed run in the
// shared containerd never match.
func NodeName(base string) string {
	return fmt.Sprintf("e2e-%s-%d", base, os.Getpid())
}

// StartEdge joins and starts an edge and waits until its node is Ready.
func (e *Env) StartEdge(base string) *Edge {
	e.T.Helper()
	edge := StartEdgehive(e.T, e.Bin, e.Cloud, e.Token, NodeName(base), e.Containerd)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if _, err := WaitForNode(ctx, e.Client, edge.Node, NodeReady); err != nil {
		e.T.Fatal(err)
	}
	return edge
}

func (e *Env) Ctx(d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	e.T.Cleanup(cancel)
	return ctx
}

// PodOptions shape a test pod.
type PodOptions struct {
	ConfigMap string // mounted at /etc/conf
}

// loopScript ends at once on SIGTERM, so deletions do not wait the grace.
const loopScript = "trap 'exit 0' TERM; while true; do sleep 1; done"

func BusyboxPod(name, node string, o PodOptions) *v1.Pod {
	grace := int64(1)
	p := &v1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", Labels: map[string]string{"app": "e2e"}},
		Spec: v1.PodSpec{
			NodeName:                      node,
			TerminationGracePeriodSeconds: &grace,
			Containers: []v1.Container{{
				Name: "main", Image: BusyboxImage, ImagePullPolicy: v1.PullIfNotPresent,
				Command: []string{"sh", "-c", loopScript},
			}},
		},
	}
	if o.ConfigMap != "" {
		p.Spec.Volumes = []v1.Volume{{Name: "conf", VolumeSource: v1.VolumeSource{
			ConfigMap: &v1.ConfigMapVolumeSource{LocalObjectReference: v1.LocalObjectReference{Name: o.ConfigMap}},
		}}}
		p.Spec.Containers[0].VolumeMounts = []v1.VolumeMount{{Name: "conf", MountPath: "/etc/conf"}}
	}
	return p
}

func (e *Env) CreatePod(name, node string, o PodOptions) *v1.Pod {
	e.T.Helper()
	p, err := e.Client.CoreV1().Pods("default").Create(e.Ctx(30*time.Second), BusyboxPod(name, node, o), metav1.CreateOptions{})
	if err != nil {
		e.T.Fatalf("create pod %s: %v", name, err)
	}
	e.made.Store(p.UID, p.Name)
	return p
}

// WaitRunning waits for the pod to be Running in the API and checks what the
// status says against the runtime.
func (e *Env) WaitRunning(name string, timeout time.Duration) *v1.Pod {
	e.T.Helper()
	p, err := WaitForPod(e.Ctx(timeout), e.Client, "default", name, PodRunning)
	if err != nil {
		e.T.Fatal(err)
	}
	if _, podNet, err := net.ParseCIDR(e.Cluster.PodCIDR); err != nil || !podNet.Contains(net.ParseIP(p.Status.PodIP)) {
		e.T.Errorf("pod %s: IP %q outside the pod CIDR %s", name, p.Status.PodIP, e.Cluster.PodCIDR)
	}
	c, err := RunningContainer(e.Ctx(10*time.Second), e.CRI, p.UID, "main")
	if err != nil {
		e.T.Fatalf("pod %s is Running in the API but not in the runtime: %v", name, err)
	}
	if want := "containerd://" + c.GetId(); p.Status.ContainerStatuses[0].ContainerID != want {
		e.T.Errorf("pod %s: status names container %s, the runtime runs %s", name, p.Status.ContainerStatuses[0].ContainerID, want)
	}
	return p
}

func (e *Env) DeletePod(name string) {
	e.T.Helper()
	if err := e.Client.CoreV1().Pods("default").Delete(e.Ctx(30*time.Second), name, metav1.DeleteOptions{}); err != nil {
		e.T.Fatalf("delete pod %s: %v", name, err)
	}
}

// WaitDeleted waits until the edge confirmed the deletion (the API object is
// gone) and the runtime has nothing of the pod left.
func (e *Env) WaitDeleted(p *v1.Pod, timeout time.Duration) {
	e.T.Helper()
	if _, err := WaitForPod(e.Ctx(timeout), e.Client, "default", p.Name, PodGone); err != nil {
		e.T.Fatal(err)
	}
	if err := WaitRuntimeGone(e.Ctx(timeout), e.CRI, p.UID); err != nil {
		e.T.Fatal(err)
	}
}

func (e *Env) SetConfigMap(name, value string) {
	e.T.Helper()
	ctx := e.Ctx(30 * time.Second)
	cm := &v1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"}, Data: map[string]string{"greeting": value}}
	_, err := e.Client.CoreV1().ConfigMaps("default").Update(ctx, cm, metav1.UpdateOptions{})
	if err != nil {
		_, err = e.Client.CoreV1().ConfigMaps("default").Create(ctx, cm, metav1.CreateOptions{})
	}
	if err != nil {
		e.T.Fatalf("configmap %s: %v", name, err)
	}
}

func (e *Env) WaitFile(p *v1.Pod, want string, timeout time.Duration) {
	e.T.Helper()
	if err := WaitFileContent(e.Ctx(timeout), e.CRI, p.UID, "main", "/etc/conf/greeting", want); err != nil {
		e.T.Fatal(err)
	}
}

// sweepRuntime removes from the runtime every sandbox of every pod this test
// made or the API still has.
func (e *Env) sweepRuntime() {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	uids := map[types.UID]bool{}
	e.made.Range(func(k, _ any) bool { uids[k.(types.UID)] = true; return true })
	if pods, err := e.Client.CoreV1().Pods("").List(ctx, metav1.ListOptions{}); err == nil {
		for _, p := range pods.Items {
			uids[p.UID] = true
		}
	}
	for uid := range uids {
		sbs, err := PodSandboxes(ctx, e.CRI, uid)
		if err != nil {
			e.T.Logf("sweep %s: %v", uid, err)
			continue
		}
		for _, sb := range sbs {
			if err := e.CRI.StopPodSandbox(ctx, sb.GetId()); err != nil {
				e.T.Logf("sweep: stop sandbox %s: %v", sb.GetId(), err)
			}
			if err := e.CRI.RemovePodSandbox(ctx, sb.GetId()); err != nil {
				e.T.Logf("sweep: remove sandbox %s: %v", sb.GetId(), err)
			}
		}
	}
}

// Sub is the env for a subtest: the same processes, the subtest's t.
func (e *Env) Sub(t testing.TB) *Env {
	c := *e
	c.T = t
	return &c
}
