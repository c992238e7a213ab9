//go:build e2e

package e2eenv

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"
)

// TestHarness proves the harness on what runs without cloudhive: etcd and
// kube-apiserver come up behind the guard rails, a Node and a Pod made with
// client-go are seen through watches, and afterwards every process is gone
// and every guard rail removed.
func TestHarness(t *testing.T) {
	nodeName := fmt.Sprintf("e2e-harness-%d", os.Getpid())
	var pids []int
	var ruleTag string
	t.Run("cluster", func(t *testing.T) {
		c := StartCluster(t, ClusterOptions{})
		pids = append(pids, c.Etcd.Pid(), c.APIServer.Pid())
		ResolveToLoopback(t, nodeName)
		ruleTag = fmt.Sprintf("edgehive-e2e-%d-", os.Getpid())
		ifaces, err := ExternalInterfaces()
		if err != nil {
			t.Fatal(err)
		}
		if len(ifaces) > 0 {
			for _, chain := range []string{"OUTPUT", "FORWARD"} {
				rules, err := IptablesRules(chain, ruleTag)
				if err != nil {
					t.Fatal(err)
				}
				// -s and -d for pods and services, per external interface.
				if want := 4 * len(ifaces); len(rules) != want {
					t.Fatalf("%s: %d guard rules, want %d: %q", chain, len(rules), want, rules)
				}
			}
			// The rule is listed, so this connection is refused here and
			// never leaves: the service range has no route but the default.
			d := net.Dialer{Timeout: 3 * time.Second}
			conn, err := d.Dial("tcp", "10.96.77.1:443")
			if err == nil {
				conn.Close()
				t.Fatal("a connection to the service range succeeded; the guard rail does not hold")
			}
			if !errors.Is(err, syscall.ECONNREFUSED) {
				t.Fatalf("dial the service range: %v, want connection refused by the guard rail", err)
			}
		}

		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		cs := c.Client
		// The API server makes its own service shortly after it is ready.
		svcLW := &cache.ListWatch{
			ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
				byName("kubernetes")(&o)
				return cs.CoreV1().Services("default").List(ctx, o)
			},
			WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
				byName("kubernetes")(&o)
				return cs.CoreV1().Services("default").Watch(ctx, o)
			},
		}
		svc, err := WaitFor(ctx, svcLW, &v1.Service{}, func(_ *v1.Service, exists bool) (bool, error) { return exists, nil })
		if err != nil {
			t.Fatalf("kubernetes service: %v", err)
		}
		if !strings.HasPrefix(svc.Spec.ClusterIP, "10.96.77.") {
			t.Fatalf("kubernetes service IP %s is outside %s", svc.Spec.ClusterIP, c.ServiceCIDR)
		}

		// A node, as an edge would register it, then Ready.
		node := &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: nodeName, Labels: map[string]string{"node-role.kubernetes.io/edge": ""}}}
		if _, err := cs.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil {
			t.Fatalf("create node: %v", err)
		}
		n, err := WaitForNode(ctx, cs, nodeName, NodeExists)
		if err != nil {
			t.Fatal(err)
		}
		if IsNodeReady(n) {
			t.Fatal("a node with no status is Ready")
		}
		now := metav1.Now()
		n.Status = v1.NodeStatus{
			Capacity:   v1.ResourceList{v1.ResourceCPU: resource.MustParse("2"), v1.ResourcePods: resource.MustParse("110")},
			Conditions: []v1.NodeCondition{{Type: v1.NodeReady, Status: v1.ConditionTrue, Reason: "KubeletReady", LastHeartbeatTime: now, LastTransitionTime: now}},
			Addresses:  []v1.NodeAddress{{Type: v1.NodeHostName, Address: nodeName}},
		}
		if _, err := cs.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{}); err != nil {
			t.Fatalf("node status: %v", err)
		}
		if _, err := WaitForNode(ctx, cs, nodeName, NodeReady); err != nil {
			t.Fatal(err)
		}

		// A pod bound to it: created, reported Running, deleted.
		pod := &v1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "harness", Namespace: "default"},
			Spec:       v1.PodSpec{NodeName: nodeName, Containers: []v1.Container{{Name: "main", Image: "docker.io/library/busybox:1.36"}}},
		}
		if _, err := cs.CoreV1().Pods("default").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
			t.Fatalf("create pod: %v", err)
		}
		p, err := WaitForPod(ctx, cs, "default", "harness", func(p *v1.Pod, exists bool) (bool, error) { return exists, nil })
		if err != nil {
			t.Fatal(err)
		}
		if ok, _ := PodRunning(p, true); ok {
			t.Fatal("a pod nobody runs is Running")
		}
		p.Status = v1.PodStatus{
			Phase: v1.PodRunning, PodIP: "10.88.77.2", PodIPs: []v1.PodIP{{IP: "10.88.77.2"}}, StartTime: &now,
			ContainerStatuses: []v1.ContainerStatus{{
				Name: "main", Image: "docker.io/library/busybox:1.36", ContainerID: "containerd://abc", Ready: true,
				State: v1.ContainerState{Running: &v1.ContainerStateRunning{StartedAt: now}},
			}},
		}
		if _, err := cs.CoreV1().Pods("default").UpdateStatus(ctx, p, metav1.UpdateOptions{}); err != nil {
			t.Fatalf("pod status: %v", err)
		}
		if _, err := WaitForPod(ctx, cs, "default", "harness", PodRunning); err != nil {
			t.Fatal(err)
		}
		zero := int64(0)
		if err := cs.CoreV1().Pods("default").Delete(ctx, "harness", metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil {
			t.Fatalf("delete pod: %v", err)
		}
		if _, err := WaitForPod(ctx, cs, "default", "harness", PodGone); err != nil {
			t.Fatal(err)
		}
	})

	// After the subtest's cleanup: processes, hosts line and rules are gone.
	for _, pid := range pids {
		if pid == 0 {
			t.Fatal("a process was never started")
		}
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("pid %d still exists after cleanup (kill 0: %v)", pid, err)
		}
	}
	hosts, err := os.ReadFile(hostsFile)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(hosts), nodeName) {
		t.Errorf("%s still names %s after cleanup", hostsFile, nodeName)
	}
	if ruleTag != "" {
		for _, chain := range []string{"OUTPUT", "FORWARD"} {
			rules, err := IptablesRules(chain, ruleTag)
			if err != nil {
				t.Fatal(err)
			}
			if len(rules) != 0 {
				t.Errorf("%s: guard rules left after cleanup: %q", chain, rules)
			}
		}
	}
}
