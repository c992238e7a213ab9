//go:build e2e

package e2e

import (
	"testing"
	"time"

	"github.com/edgehive/edgehive/internal/e2eenv"
)

// TestTwoReplicas: two cloudhive replicas share one address (SO_REUSEPORT)
// and keep no state outside the API; the edge joined while only the first
// ran, so it is connected to the first. Stopping the first moves the node to
// the second: it stays Ready with fresh heartbeats and a new pod runs.
func TestTwoReplicas(t *testing.T) {
	// Not parallel: every edge here shares one containerd, and an edged
	// owns all the pods in it (it removes the others' sandboxes as orphans).
	e := e2eenv.NewEnv(t, true)
	edge := e.StartEdge("moving")
	cfg := e.Cloud.Config
	cfg.AdminListen = "" // its own health endpoint, the same cloud ports
	second := e2eenv.StartCloudhive(t, e.Bin, "cloudhive-2", cfg)
	if second.CloudPort() != e.Cloud.CloudPort() || second.BootstrapPort() != e.Cloud.BootstrapPort() {
		t.Fatalf("replicas on different ports: %d/%d and %d/%d", e.Cloud.CloudPort(), e.Cloud.BootstrapPort(), second.CloudPort(), second.BootstrapPort())
	}

	first := e.CreatePod("on-first", edge.Node, e2eenv.PodOptions{})
	e.WaitRunning(first.Name, 90*time.Second)

	e.Cloud.Stop(10 * time.Second)
	stopped := time.Now()
	if _, err := e2eenv.WaitForNode(e.Ctx(90*time.Second), e.Client, edge.Node, e2eenv.NodeHeartbeatAfter(stopped)); err != nil {
		t.Fatalf("the node did not move to the second replica: %v", err)
	}
	p := e.CreatePod("on-second", edge.Node, e2eenv.PodOptions{})
	e.WaitRunning(p.Name, 90*time.Second)
	e.DeletePod(first.Name)
	e.WaitDeleted(first, 60*time.Second)
	if exited, err := second.Exited(); exited {
		t.Fatalf("the second replica exited: %v", err)
	}
}
