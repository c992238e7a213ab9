//go:build e2e

// Package e2e runs the cloud link end to end on this machine: etcd and a
// real kube-apiserver, cloudhive, the edgehive host with all its plugins and
// a private containerd, behind the guard rails of DESIGN.md §6. Run it with
// `make e2e`.
package e2e

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/edgehive/edgehive/internal/e2eenv"
	"github.com/edgehive/edgehive/plugins/edged/cri"
)

// env is one cluster with one cloudhive and the test containerd.
type env struct {
	t       *testing.T
	bin     string
	cluster *e2eenv.Cluster
	client  kubernetes.Interface
	cloud   *e2eenv.Cloudhive
	token   string
	ctrd    e2eenv.Containerd
	cri     *cri.Client
	// made is every pod UID created, for the runtime sweep at cleanup.
	made *sync.Map
}

// newEnv starts a cluster and a cloudhive (replica "cloudhive") and fetches
// a join token.
func newEnv(t *testing.T, reusePort bool) *env {
	t.Helper()
	e := &env{t: t, bin: e2eenv.BinDir(t), made: &sync.Map{}}
	e.ctrd = e2eenv.ContainerdFromEnv(t)
	e.cri = e2eenv.NewCRI(t, e.ctrd)
	e.cluster = e2eenv.StartCluster(t, e2eenv.ClusterOptions{})
	e.client = e.cluster.Client
	// Runs after the edges and cloudhive stopped, before the API server
	// does: the shared containerd keeps no pod of this test.
	t.Cleanup(e.sweepRuntime)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := e2eenv.EnsureNamespace(ctx, e.client, "kubeedge"); err != nil {
		t.Fatal(err)
	}
	e.cloud = e2eenv.StartCloudhive(t, e.bin, "cloudhive", e.cloudConfig(reusePort))
	tok, err := e.cloud.Token(ctx)
	if err != nil {
		t.Fatalf("cloudhive token: %v", err)
	}
	e.token = tok
	return e
}

func (e *env) cloudConfig(reusePort bool) e2eenv.CloudhiveConfig {
	return e2eenv.CloudhiveConfig{Kubeconfig: e.cluster.Kubeconfig, ReusePort: reusePort}
}

// nodeName is unique per test process, so leftovers of a killed run in the
// shared containerd never match.
func nodeName(base string) string {
	return fmt.Sprintf("e2e-%s-%d", base, os.Getpid())
}

// startEdge joins and starts an edge and waits until its node is Ready.
func (e *env) startEdge(base string) *e2eenv.Edge {
	e.t.Helper()
	edge := e2eenv.StartEdgehive(e.t, e.bin, e.cloud, e.token, nodeName(base), e.ctrd)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if _, err := e2eenv.WaitForNode(ctx, e.client, edge.Node, e2eenv.NodeReady); err != nil {
		e.t.Fatal(err)
	}
	return edge
}

func (e *env) ctx(d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	e.t.Cleanup(cancel)
	return ctx
}

// podOpts shape a test pod.
type podOpts struct {
	configMap string // mounted at /etc/conf
}

// loopScript ends at once on SIGTERM, so deletions do not wait the grace.
const loopScript = "trap 'exit 0' TERM; while true; do sleep 1; done"

func testPod(name, node string, o podOpts) *v1.Pod {
	grace := int64(1)
	p := &v1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", Labels: map[string]string{"app": "e2e"}},
		Spec: v1.PodSpec{
			NodeName:                      node,
			TerminationGracePeriodSeconds: &grace,
			Containers: []v1.Container{{
				Name: "main", Image: e2eenv.BusyboxImage, ImagePullPolicy: v1.PullIfNotPresent,
				Command: []string{"sh", "-c", loopScript},
			}},
		},
	}
	if o.configMap != "" {
		p.Spec.Volumes = []v1.Volume{{Name: "conf", VolumeSource: v1.VolumeSource{
			ConfigMap: &v1.ConfigMapVolumeSource{LocalObjectReference: v1.LocalObjectReference{Name: o.configMap}},
		}}}
		p.Spec.Containers[0].VolumeMounts = []v1.VolumeMount{{Name: "conf", MountPath: "/etc/conf"}}
	}
	return p
}

func (e *env) createPod(name, node string, o podOpts) *v1.Pod {
	e.t.Helper()
	p, err := e.client.CoreV1().Pods("default").Create(e.ctx(30*time.Second), testPod(name, node, o), metav1.CreateOptions{})
	if err != nil {
		e.t.Fatalf("create pod %s: %v", name, err)
	}
	e.made.Store(p.UID, p.Name)
	return p
}

// waitRunning waits for the pod to be Running in the API and checks what the
// status says against the runtime.
func (e *env) waitRunning(name string, timeout time.Duration) *v1.Pod {
	e.t.Helper()
	p, err := e2eenv.WaitForPod(e.ctx(timeout), e.client, "default", name, e2eenv.PodRunning)
	if err != nil {
		e.t.Fatal(err)
	}
	if !strings.HasPrefix(p.Status.PodIP, podIPPrefix()) {
		e.t.Errorf("pod %s: IP %q outside the pod CIDR %s", name, p.Status.PodIP, e2eenv.PodCIDR())
	}
	c, err := e2eenv.RunningContainer(e.ctx(10*time.Second), e.cri, p.UID, "main")
	if err != nil {
		e.t.Fatalf("pod %s is Running in the API but not in the runtime: %v", name, err)
	}
	if want := "containerd://" + c.GetId(); p.Status.ContainerStatuses[0].ContainerID != want {
		e.t.Errorf("pod %s: status names container %s, the runtime runs %s", name, p.Status.ContainerStatuses[0].ContainerID, want)
	}
	return p
}

func podIPPrefix() string {
	c := e2eenv.PodCIDR() // a /24: the first three octets
	return c[:strings.LastIndexByte(c, '.')+1]
}

func (e *env) deletePod(name string) {
	e.t.Helper()
	if err := e.client.CoreV1().Pods("default").Delete(e.ctx(30*time.Second), name, metav1.DeleteOptions{}); err != nil {
		e.t.Fatalf("delete pod %s: %v", name, err)
	}
}

// waitDeleted waits until the edge confirmed the deletion (the API object is
// gone) and the runtime has nothing of the pod left.
func (e *env) waitDeleted(p *v1.Pod, timeout time.Duration) {
	e.t.Helper()
	if _, err := e2eenv.WaitForPod(e.ctx(timeout), e.client, "default", p.Name, e2eenv.PodGone); err != nil {
		e.t.Fatal(err)
	}
	if err := e2eenv.WaitRuntimeGone(e.ctx(timeout), e.cri, p.UID); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) setConfigMap(name, value string) {
	e.t.Helper()
	ctx := e.ctx(30 * time.Second)
	cm := &v1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"}, Data: map[string]string{"greeting": value}}
	_, err := e.client.CoreV1().ConfigMaps("default").Update(ctx, cm, metav1.UpdateOptions{})
	if err != nil {
		_, err = e.client.CoreV1().ConfigMaps("default").Create(ctx, cm, metav1.CreateOptions{})
	}
	if err != nil {
		e.t.Fatalf("configmap %s: %v", name, err)
	}
}

func (e *env) waitFile(p *v1.Pod, want string, timeout time.Duration) {
	e.t.Helper()
	if err := e2eenv.WaitFileContent(e.ctx(timeout), e.cri, p.UID, "main", "/etc/conf/greeting", want); err != nil {
		e.t.Fatal(err)
	}
}

// sweepRuntime removes from the runtime every sandbox of every pod this test
// made or the API still has.
func (e *env) sweepRuntime() {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	uids := map[types.UID]bool{}
	e.made.Range(func(k, _ any) bool { uids[k.(types.UID)] = true; return true })
	if pods, err := e.client.CoreV1().Pods("").List(ctx, metav1.ListOptions{}); err == nil {
		for _, p := range pods.Items {
			uids[p.UID] = true
		}
	}
	for uid := range uids {
		sbs, err := e2eenv.PodSandboxes(ctx, e.cri, uid)
		if err != nil {
			e.t.Logf("sweep %s: %v", uid, err)
			continue
		}
		for _, sb := range sbs {
			if err := e.cri.StopPodSandbox(ctx, sb.GetId()); err != nil {
				e.t.Logf("sweep: stop sandbox %s: %v", sb.GetId(), err)
			}
			if err := e.cri.RemovePodSandbox(ctx, sb.GetId()); err != nil {
				e.t.Logf("sweep: remove sandbox %s: %v", sb.GetId(), err)
			}
		}
	}
}
