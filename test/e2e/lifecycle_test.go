//go:build e2e

// Package e2e runs the cloud link end to end on this machine: etcd and a
// real kube-apiserver, cloudhive, the edgehive host with all its plugins and
// a private containerd, behind the guard rails of DESIGN.md §6. Run it with
// `make e2e`; the helpers are in internal/e2eenv.
package e2e

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	coordv1 "k8s.io/api/coordination/v1"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	watchtools "k8s.io/client-go/tools/watch"

	"github.com/edgehive/edgehive/internal/e2eenv"
)

// readyWindow is how long a joined node must stay Ready with fresh
// heartbeats; maxHeartbeatGap is the controller-manager's default
// node-monitor-grace-period, after which a real cluster marks it NotReady.
const (
	readyWindow     = 2 * time.Minute
	maxHeartbeatGap = 40 * time.Second
)

// readyReport is what watching a node for readyWindow found.
type readyReport struct {
	mu         sync.Mutex
	notReady   []string    // events where Ready was not True
	heartbeats []time.Time // when a status heartbeat or lease renewal was seen
}

func (r *readyReport) beat(at time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.heartbeats = append(r.heartbeats, at)
}

// watchReady watches the node and its Lease for d and reports every
// heartbeat (a new Ready heartbeat time or a new lease renew time) and every
// moment the node was not Ready.
func watchReady(ctx context.Context, client kubernetes.Interface, node string, d time.Duration) *readyReport {
	r := &readyReport{}
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	sel := fields.OneTermEqualSelector("metadata.name", node).String()
	var wg sync.WaitGroup
	wg.Go(func() {
		var lastBeat metav1.Time
		lw := &cache.ListWatch{
			ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
				o.FieldSelector = sel
				return client.CoreV1().Nodes().List(ctx, o)
			},
			WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
				o.FieldSelector = sel
				return client.CoreV1().Nodes().Watch(ctx, o)
			},
		}
		_, _ = watchtools.UntilWithSync(ctx, lw, &v1.Node{}, nil, func(ev watch.Event) (bool, error) {
			n, ok := ev.Object.(*v1.Node)
			if !ok {
				return false, nil
			}
			if ev.Type == watch.Deleted || !e2eenv.IsNodeReady(n) {
				r.mu.Lock()
				r.notReady = append(r.notReady, fmt.Sprintf("%s %s: %s", time.Now().Format("15:04:05.000"), ev.Type, e2eenv.DescribeNode(n)))
				r.mu.Unlock()
				return false, nil
			}
			for _, c := range n.Status.Conditions {
				if c.Type == v1.NodeReady && !c.LastHeartbeatTime.Equal(&lastBeat) {
					lastBeat = c.LastHeartbeatTime
					r.beat(time.Now())
				}
			}
			return false, nil
		})
	})
	wg.Go(func() {
		var lastRenew metav1.MicroTime
		lw := &cache.ListWatch{
			ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
				o.FieldSelector = sel
				return client.CoordinationV1().Leases(v1.NamespaceNodeLease).List(ctx, o)
			},
			WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
				o.FieldSelector = sel
				return client.CoordinationV1().Leases(v1.NamespaceNodeLease).Watch(ctx, o)
			},
		}
		_, _ = watchtools.UntilWithSync(ctx, lw, &coordv1.Lease{}, nil, func(ev watch.Event) (bool, error) {
			l, ok := ev.Object.(*coordv1.Lease)
			if ok && l.Spec.RenewTime != nil && !l.Spec.RenewTime.Equal(&lastRenew) {
				lastRenew = *l.Spec.RenewTime
				r.beat(time.Now())
			}
			return false, nil
		})
	})
	wg.Wait()
	return r
}

// check fails t unless the node was Ready throughout and never went longer
// than maxHeartbeatGap without a heartbeat.
func (r *readyReport) check(t *testing.T, start, end time.Time) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.notReady) > 0 {
		t.Errorf("node was not Ready during the %s window: %q", readyWindow, r.notReady)
	}
	prev := start
	for _, b := range append(append([]time.Time{}, r.heartbeats...), end) {
		if gap := b.Sub(prev); gap > maxHeartbeatGap {
			t.Errorf("no heartbeat (node status or lease) for %s (from %s), more than %s", gap.Round(time.Second), prev.Format("15:04:05"), maxHeartbeatGap)
		}
		if b.After(prev) {
			prev = b
		}
	}
	t.Logf("node stayed Ready for %s with %d heartbeats (status and lease)", end.Sub(start).Round(time.Second), len(r.heartbeats))
}

// TestEdgeLifecycle is the main path, one edge on one cloudhive: join and
// stay Ready for two minutes while pods run, are deleted and see configMap
// changes; then cloudhive is away for 60 s with changes made meanwhile; then
// the whole edge restarts with no cloud and brings every pod back.
func TestEdgeLifecycle(t *testing.T) {
	// Not parallel: every edge here shares one containerd, and an edged
	// owns all the pods in it (it removes the others' sandboxes as orphans).
	e := e2eenv.NewEnv(t, false)
	edge := e.StartEdge("main")
	readyAt := time.Now()
	readyDone := make(chan *readyReport, 1)
	go func() { readyDone <- watchReady(context.Background(), e.Client, edge.Node, readyWindow) }()

	n, err := e.Client.CoreV1().Nodes().Get(e.Ctx(10*time.Second), edge.Node, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := n.Labels["node-role.kubernetes.io/edge"]; !ok {
		t.Errorf("node %s lacks the label node-role.kubernetes.io/edge: %v", edge.Node, n.Labels)
	}

	t.Run("pod runs and is deleted", func(t *testing.T) {
		e := e.Sub(t)
		e.CreatePod("web", edge.Node, e2eenv.PodOptions{})
		p := e.WaitRunning("web", 90*time.Second)
		cs := p.Status.ContainerStatuses[0]
		if cs.Name != "main" || cs.Image == "" || !cs.Ready {
			t.Errorf("container status %+v: want main, an image, ready", cs)
		}
		e.DeletePod("web")
		e.WaitDeleted(p, 60*time.Second)
	})

	t.Run("configMap change reaches the container", func(t *testing.T) {
		e := e.Sub(t)
		e.SetConfigMap("conf", "hello-1")
		e.CreatePod("reader", edge.Node, e2eenv.PodOptions{ConfigMap: "conf"})
		p := e.WaitRunning("reader", 90*time.Second)
		e.WaitFile(p, "hello-1", 30*time.Second)
		e.SetConfigMap("conf", "hello-2")
		e.WaitFile(p, "hello-2", 90*time.Second)
	})

	// The offline parts stop the heartbeats: the window ends first.
	rep := <-readyDone
	rep.check(t, readyAt, time.Now())
	if t.Failed() {
		return
	}

	t.Run("cloudhive away for 60s", func(t *testing.T) {
		e := e.Sub(t)
		e.SetConfigMap("offline", "before")
		keep := e.CreatePod("keep", edge.Node, e2eenv.PodOptions{ConfigMap: "offline"})
		doomed := e.CreatePod("doomed", edge.Node, e2eenv.PodOptions{})
		keep = e.WaitRunning("keep", 90*time.Second)
		doomed = e.WaitRunning("doomed", 90*time.Second)
		e.WaitFile(keep, "before", 30*time.Second)
		keepID := keep.Status.ContainerStatuses[0].ContainerID

		e.Cloud.Stop(10 * time.Second)
		back := time.Now().Add(60 * time.Second)
		// Changes the edge cannot hear about until cloudhive returns.
		e.CreatePod("newcomer", edge.Node, e2eenv.PodOptions{})
		e.DeletePod("doomed")
		e.SetConfigMap("offline", "after")
		// Pods keep running meanwhile: checked through the runtime, twice.
		for _, at := range []time.Time{time.Now().Add(30 * time.Second), back} {
			select {
			case <-time.After(time.Until(at)):
			case <-edge.Done():
				t.Fatal("edgehive exited while cloudhive was away")
			}
			c, err := e2eenv.RunningContainer(e.Ctx(10*time.Second), e.CRI, keep.UID, "main")
			if err != nil {
				t.Fatalf("with cloudhive away: %v", err)
			}
			if "containerd://"+c.GetId() != keepID {
				t.Fatalf("with cloudhive away, pod keep's container changed from %s to %s", keepID, c.GetId())
			}
		}
		returned := time.Now()
		e.Cloud.Restart(t)
		if _, err := e2eenv.WaitForNode(e.Ctx(90*time.Second), e.Client, edge.Node, e2eenv.NodeHeartbeatAfter(returned)); err != nil {
			t.Fatalf("after cloudhive returned: %v", err)
		}
		e.WaitRunning("newcomer", 90*time.Second)
		e.WaitDeleted(doomed, 90*time.Second)
		e.WaitFile(keep, "after", 90*time.Second)
		keep = e.WaitRunning("keep", 30*time.Second)
		if got := keep.Status.ContainerStatuses[0]; got.ContainerID != keepID || got.RestartCount != 0 {
			t.Errorf("pod keep after the outage: container %s restarts %d, want %s and 0", got.ContainerID, got.RestartCount, keepID)
		}
	})

	t.Run("edge restarts with no cloud", func(t *testing.T) {
		e := e.Sub(t)
		pods, err := e.Client.CoreV1().Pods("default").List(e.Ctx(10*time.Second), metav1.ListOptions{
			FieldSelector: fields.OneTermEqualSelector("spec.nodeName", edge.Node).String(),
		})
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]bool{}
		for _, p := range pods.Items {
			if p.DeletionTimestamp == nil {
				want[p.Name] = true
			}
		}
		if len(want) < 2 {
			t.Fatalf("only %d pods on the node before the restart; the earlier steps left too few to prove anything", len(want))
		}
		e.Cloud.Stop(10 * time.Second)
		edge.Stop(15 * time.Second)
		edge.Start(t)
		// With no cloud, edged can only know its pods from SQLite.
		got, err := edge.WaitEdgedPods(e.Ctx(90*time.Second), func(ps []v1.Pod) bool {
			running := 0
			for _, p := range ps {
				if want[p.Name] && p.Status.Phase == v1.PodRunning {
					running++
				}
			}
			return running == len(want)
		})
		if err != nil {
			t.Fatalf("after an edge restart without the cloud: %v (want %d pods Running: %v)", err, len(want), want)
		}
		for _, p := range got {
			if !want[p.Name] {
				continue
			}
			c, err := e2eenv.PodContainers(e.Ctx(10*time.Second), e.CRI, p.UID, true)
			if err != nil {
				t.Fatal(err)
			}
			if len(c) != 1 {
				t.Errorf("pod %s has %d running containers after the restart, want 1", p.Name, len(c))
			}
		}
		// And once the cloud is back, the API agrees.
		back := time.Now()
		e.Cloud.Restart(t)
		if _, err := e2eenv.WaitForNode(e.Ctx(90*time.Second), e.Client, edge.Node, e2eenv.NodeHeartbeatAfter(back)); err != nil {
			t.Fatal(err)
		}
		for name := range want {
			e.WaitRunning(name, 90*time.Second)
		}
	})
}
