package edgecontroller

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/edgehive/edgehive/cloud/nodelink/nodelinktest"
)

// BenchmarkFootprint measures the controller's memory for N edge nodes with
// 10 pods each (Node and Pod caches, indexes; the controller keeps nothing
// else per node) and how long a resync of every node takes through a fake
// link. Run: go test -run x -bench Footprint -benchtime 1x ./cloud/edgecontroller/
func BenchmarkFootprint(b *testing.B) {
	const nodes, podsPerNode = 1000, 10
	for range b.N {
		objs := make([]k8sruntime.Object, 0, nodes*(podsPerNode+1))
		names := make([]string, nodes)
		for i := range nodes {
			name := fmt.Sprintf("edge-%04d", i)
			names[i] = name
			objs = append(objs, &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, UID: types.UID("n-" + name),
				Labels: map[string]string{DefaultEdgeNodeLabel: "", "kubernetes.io/hostname": name}},
				Status: v1.NodeStatus{Conditions: []v1.NodeCondition{{Type: v1.NodeReady, Status: v1.ConditionTrue}}}})
			for j := range podsPerNode {
				objs = append(objs, pod(fmt.Sprintf("p-%s-%d", name, j), name, withConfigMapVolume("cfg")))
			}
		}
		objs = append(objs, configMap("cfg", "1"))
		client := fake.NewClientset(objs...)
		sender := nodelinktest.New(names...)
		noSvc := false
		runtime.GC()
		var before runtime.MemStats
		runtime.ReadMemStats(&before)

		c, err := New(client, sender, hclog.NewNullLogger(), Config{SyncServices: &noSvc})
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- c.Run(ctx) }()
		for !c.pods.HasSynced() || len(c.podsOn(names[nodes-1])) != podsPerNode {
			time.Sleep(10 * time.Millisecond)
		}
		// Wait until the startup sends settle, then measure.
		for last := -1; ; {
			time.Sleep(200 * time.Millisecond)
			n := len(sender.Sent())
			if n == last && c.queue.Len() == 0 {
				break
			}
			last = n
		}
		sender.Reset()
		runtime.GC()
		var after runtime.MemStats
		runtime.ReadMemStats(&after)

		start := time.Now()
		for _, n := range names {
			c.NodeConnected(ctx, n)
		}
		perNode := 1 + 1 + podsPerNode // Node, configMap, pods
		if _, ok := sender.WaitFor(60*time.Second, func(s []nodelinktest.Sent) bool { return len(s) >= nodes*perNode }); !ok {
			b.Fatalf("resync sends: %d of %d", len(sender.Sent()), nodes*perNode)
		}
		resync := time.Since(start)
		cancel()
		<-done
		heap := float64(after.HeapAlloc) - float64(before.HeapAlloc)
		b.ReportMetric(heap/nodes, "heap-bytes/node")
		b.ReportMetric(float64(resync.Microseconds())/nodes, "resync-µs/node")
	}
}
