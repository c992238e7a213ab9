//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclwrite"
	"github.com/zclconf/go-cty/cty"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/edgehive/edgehive/cloud/tunnel"
	"github.com/edgehive/edgehive/internal/e2eenv"
)

// TestTunnelAcrossReplicas: two cloudhive replicas on different addresses
// (cloudhub, tunnel, CONNECT and peer endpoints each their own), the real
// kube-apiserver's egress selector pointing at replica A only, and the edge
// connected to replica B. A real container's logs through the API server
// go A → (the node's Lease names B) → B's peer endpoint over mTLS → the
// node's session on B → edged's kubelet API. When B stops, the edge reconnects to A and logs work again, now
// served by A's own session.
//
// The edge reaches "the cloud" through an L4 balancer in this test (as a
// LoadBalancer Service would do in a cluster): each new connection goes to
// the first replica that accepts it, B while it runs, then A.
func TestTunnelAcrossReplicas(t *testing.T) {
	bin := e2eenv.BinDir(t)
	ctrd := e2eenv.ContainerdFromEnv(t)
	rt := e2eenv.NewCRI(t, ctrd)
	dir := t.TempDir()

	eg := e2eenv.NewEgress(t, dir) // its ConnectAddr and TunnelAddr are A's
	cluster := e2eenv.StartCluster(t, e2eenv.ClusterOptions{PodCIDR: ctrd.PodCIDR,
		ExtraAPIServerArgs: []string{eg.APIServerArg()}})
	client := cluster.Client
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := eg.SeedCASecret(ctx, client); err != nil {
		t.Fatal(err)
	}

	// edged's kubelet API on 127.0.0.2:P, P free on 127.0.0.1 where the
	// node's name resolves: only the tunnel reaches it (as in TestKubectl).
	kubeletPort := e2eenv.FreePort(t)
	kubeletAddr := fmt.Sprintf("127.0.0.2:%d", kubeletPort)
	free := func() string { return fmt.Sprintf("127.0.0.1:%d", e2eenv.FreePort(t)) }
	tunnelHCL := func(listen, connect, peer string) string {
		return fmt.Sprintf("tunnel {\n  listen            = %q\n  connect_listen    = %q\n  connect_client_ca = %q\n"+
			"  allowed_ports     = [%d]\n  peer_listen       = %q\n}\n", listen, connect, eg.CA.CertFile, kubeletPort, peer)
	}
	bTunnel, bPeer, aPeer := free(), free(), free()
	b := e2eenv.StartCloudhive(t, bin, "cloudhive-b", e2eenv.CloudhiveConfig{Kubeconfig: cluster.Kubeconfig,
		ExtraHCL: tunnelHCL(bTunnel, free(), bPeer)})
	a := e2eenv.StartCloudhive(t, bin, "cloudhive-a", e2eenv.CloudhiveConfig{Kubeconfig: cluster.Kubeconfig,
		ExtraHCL: tunnelHCL(eg.TunnelAddr, eg.ConnectAddr, aPeer)})
	if a.Config.Listen == b.Config.Listen || a.CloudPort() == b.CloudPort() {
		t.Fatalf("replicas share cloudhub address %s", a.Config.Listen)
	}
	hubLB := startBalancer(t, b.Config.Listen, a.Config.Listen)
	tunnelLB := startBalancer(t, bTunnel, eg.TunnelAddr)

	token, err := b.Token(ctx)
	if err != nil {
		t.Fatal(err)
	}
	node := e2eenv.NodeName("replicas")
	edge := e2eenv.JoinEdge(t, bin, b, token, node, ctrd)
	edge.EnableTunnel(t, e2eenv.TunnelOptions{Server: tunnelLB, LocalKubelet: kubeletAddr, KubeletAPIClientCA: cluster.CA.CertFile})
	setEdgehubServer(t, edge.ConfigFile, hubLB)
	// Registered before the edge starts, so it runs after the edge stopped:
	// the shared containerd keeps no sandbox of this test.
	var uids []types.UID
	t.Cleanup(func() { sweepSandboxes(t, rt, uids) })
	edge.Start(t)
	if _, err := e2eenv.WaitForNode(ctx, client, node, e2eenv.NodeReady); err != nil {
		t.Fatal(err)
	}

	// A container printing numbered lines; its logs come from edged's
	// kubelet API through the API server, A, B and the node's session.
	grace := int64(1)
	pod, err := client.CoreV1().Pods("default").Create(ctx, &v1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "replicas-logs", Namespace: "default"},
		Spec: v1.PodSpec{NodeName: node, TerminationGracePeriodSeconds: &grace, Containers: []v1.Container{{
			Name: "c", Image: e2eenv.BusyboxImage, Command: []string{"sh", "-c",
				"trap 'exit 0' TERM; i=0; while true; do echo line $i; i=$((i+1)); sleep 0.2; done"}}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	uids = append(uids, pod.UID)
	if _, err := e2eenv.WaitForPod(ctx, client, "default", pod.Name, e2eenv.PodRunning); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	first := waitLogs(ctx, t, client, pod.Name, 0, 60*time.Second)
	t.Logf("pod logs via A → B after %v: %d lines", time.Since(start).Round(time.Millisecond), first)
	if got := leasePeer(ctx, t, client, node); got != bPeer {
		t.Fatalf("node lease names peer %q, want B's %s", got, bPeer)
	}
	for i := range 10 {
		if _, err := logLines(ctx, client, pod.Name); err != nil {
			t.Fatalf("pod logs #%d via A → B: %v", i, err)
		}
	}
	// A forwarded every CONNECT (the API server keeps its kubelet
	// connections alive, so there may be fewer than requests); B carried
	// each over the node's session; A served none itself.
	forwarded, carried := connects(t, a, "forwarded"), connects(t, b, "established")
	if forwarded < 1 || carried != forwarded {
		t.Fatalf("A forwarded %d CONNECTs, B established %d; want the same, at least 1", forwarded, carried)
	}
	if n := connects(t, a, "established"); n != 0 {
		t.Fatalf("A served %d CONNECTs itself while B held the session", n)
	}
	t.Logf("A forwarded %d CONNECTs to B", forwarded)

	// B goes away: its Leases go with it, the edge's links come back through
	// the balancer to A, and A serves the node from its own session: the
	// logs go on (more lines than before).
	b.Stop(10 * time.Second)
	stopped := time.Now()
	n := waitLogs(ctx, t, client, pod.Name, first, 90*time.Second)
	t.Logf("pod logs through A again %v after B stopped: %d lines", time.Since(stopped).Round(time.Millisecond), n)
	if got := leasePeer(ctx, t, client, node); got != aPeer {
		t.Fatalf("node lease names peer %q after B stopped, want A's %s", got, aPeer)
	}
	if n := connects(t, a, "established"); n < 1 {
		t.Fatal("A did not serve the node from its own session after B stopped")
	}
	if exited, err := a.Exited(); exited {
		t.Fatalf("replica A exited: %v", err)
	}

	// The edge, now on A, still runs the pod's deletion to the end.
	if err := client.CoreV1().Pods("default").Delete(ctx, pod.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := e2eenv.WaitForPod(ctx, client, "default", pod.Name, e2eenv.PodGone); err != nil {
		t.Fatal(err)
	}
	if err := e2eenv.WaitRuntimeGone(ctx, rt, pod.UID); err != nil {
		t.Fatal(err)
	}
}

// logLines reads the pod's logs and checks they are the container's lines
// from "line 0" on, in order; it returns how many there are.
func logLines(ctx context.Context, client kubernetes.Interface, pod string) (int, error) {
	logs, err := podLogsOf(ctx, client, pod, &v1.PodLogOptions{Container: "c"})
	if err != nil {
		return 0, err
	}
	lines := strings.Split(strings.TrimSuffix(logs, "\n"), "\n")
	for i, l := range lines {
		if l != fmt.Sprintf("line %d", i) {
			return 0, fmt.Errorf("log line %d is %q", i, l)
		}
	}
	return len(lines), nil
}

// waitLogs polls the pod's logs until they hold more than after lines.
func waitLogs(ctx context.Context, t *testing.T, client kubernetes.Interface, pod string, after int, within time.Duration) int {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		n, err := logLines(ctx, client, pod)
		if err == nil && n > after {
			return n
		}
		if time.Now().After(deadline) {
			t.Fatalf("pod logs: %d lines, %v; want more than %d", n, err, after)
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// leasePeer is the peer address on the node's session Lease.
func leasePeer(ctx context.Context, t *testing.T, client kubernetes.Interface, node string) string {
	t.Helper()
	l, err := client.CoordinationV1().Leases("kubeedge").Get(ctx, tunnel.NodeLeaseName(node), metav1.GetOptions{})
	if err != nil {
		t.Fatalf("node lease: %v", err)
	}
	return l.Annotations[tunnel.AnnotationPeer]
}

// connects reads tunnel_connects_total{result} from a replica's /metrics.
func connects(t *testing.T, c *e2eenv.Cloudhive, result string) int {
	t.Helper()
	resp, err := http.Get("http://" + c.Config.AdminListen + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	m := regexp.MustCompile(`(?m)^tunnel_connects_total\{result="` + regexp.QuoteMeta(result) + `"\} (\d+)$`).FindSubmatch(body)
	if m == nil {
		return 0
	}
	n, _ := strconv.Atoi(string(m[1]))
	return n
}

// setEdgehubServer points edgehub's cloud link at server.
func setEdgehubServer(t *testing.T, file, server string) {
	t.Helper()
	src, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	f, diags := hclwrite.ParseConfig(src, file, hcl.InitialPos)
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	pb := f.Body().FirstMatchingBlock("plugin", []string{"edgehub"})
	if pb == nil || pb.Body().FirstMatchingBlock("config", nil) == nil {
		t.Fatalf("%s has no edgehub config block", file)
	}
	pb.Body().FirstMatchingBlock("config", nil).Body().SetAttributeValue("server", cty.StringVal(server))
	if err := os.WriteFile(file, f.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// startBalancer is an L4 balancer on loopback: each connection goes to the
// first backend that accepts it, bytes copied both ways until either side
// ends. It returns its address.
func startBalancer(t *testing.T, backends ...string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	open := map[net.Conn]struct{}{}
	track := func(c net.Conn, add bool) {
		mu.Lock()
		defer mu.Unlock()
		if add {
			open[c] = struct{}{}
		} else {
			delete(open, c)
		}
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			track(c, true)
			wg.Add(1)
			go func() {
				defer wg.Done()
				var up net.Conn
				for _, b := range backends {
					if up, err = net.DialTimeout("tcp", b, time.Second); err == nil {
						break
					}
				}
				if up == nil {
					_ = c.Close()
					track(c, false)
					return
				}
				track(up, true)
				done := make(chan struct{})
				go func() { _, _ = io.Copy(up, c); _ = up.Close(); _ = c.Close(); close(done) }()
				_, _ = io.Copy(c, up)
				_ = c.Close()
				_ = up.Close()
				<-done
				track(c, false)
				track(up, false)
			}()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		for c := range open {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}
