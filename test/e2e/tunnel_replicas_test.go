//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclwrite"
	"github.com/zclconf/go-cty/cty"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/edgehive/edgehive/cloud/tunnel"
	"github.com/edgehive/edgehive/internal/e2eenv"
)

// TestTunnelAcrossReplicas: two cloudhive replicas on different addresses
// (cloudhub, tunnel, CONNECT and peer endpoints each their own), the real
// kube-apiserver's egress selector pointing at replica A only, and the edge
// connected to replica B. Pod logs through the API server go A → (the
// node's Lease names B) → B's peer endpoint over mTLS → the node's session
// on B. When B stops, the edge reconnects to A and logs work again, now
// served by A's own session.
//
// The edge reaches "the cloud" through an L4 balancer in this test (as a
// LoadBalancer Service would do in a cluster): each new connection goes to
// the first replica that accepts it, B while it runs, then A.
func TestTunnelAcrossReplicas(t *testing.T) {
	bin := e2eenv.BinDir(t)
	ctrd := e2eenv.ContainerdFromEnv(t)
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

	// edged reports its read-only API's port as the kubelet port (see
	// TestKubeletThroughTunnel), so both replicas allow it beside 10250.
	edgedPort := e2eenv.FreePort(t)
	free := func() string { return fmt.Sprintf("127.0.0.1:%d", e2eenv.FreePort(t)) }
	tunnelHCL := func(listen, connect, peer string) string {
		return fmt.Sprintf("tunnel {\n  listen            = %q\n  connect_listen    = %q\n  connect_client_ca = %q\n"+
			"  allowed_ports     = [10250, %d]\n  peer_listen       = %q\n}\n", listen, connect, eg.CA.CertFile, edgedPort, peer)
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
	kubelet := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "kubelet %s: %s %s", node, r.Method, r.URL.Path)
	}))
	defer kubelet.Close()
	edge := e2eenv.JoinEdge(t, bin, b, token, node, ctrd)
	enableTunnel(t, edge.ConfigFile, tunnelLB, kubelet.Listener.Addr().String(), edgedPort)
	setEdgehubServer(t, edge.ConfigFile, hubLB)
	edge.Start(t)
	if _, err := e2eenv.WaitForNode(ctx, client, node, e2eenv.NodeReady); err != nil {
		t.Fatal(err)
	}

	bindPod(ctx, t, client, "replicas-logs", node)
	want := fmt.Sprintf("kubelet %s: GET /containerLogs/default/replicas-logs/c", node)
	start := time.Now()
	waitLogs(ctx, t, client, "replicas-logs", want, 60*time.Second)
	t.Logf("pod logs via A → B after %v", time.Since(start).Round(time.Millisecond))
	if got := leasePeer(ctx, t, client, node); got != bPeer {
		t.Fatalf("node lease names peer %q, want B's %s", got, bPeer)
	}
	for i := range 10 {
		if logs, err := podLogs(ctx, client, "replicas-logs"); err != nil || logs != want {
			t.Fatalf("pod logs #%d via A → B: %q, %v", i, logs, err)
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
	// the balancer to A, and A serves the node from its own session.
	b.Stop(10 * time.Second)
	stopped := time.Now()
	waitLogs(ctx, t, client, "replicas-logs", want, 90*time.Second)
	t.Logf("pod logs through A again %v after B stopped", time.Since(stopped).Round(time.Millisecond))
	if got := leasePeer(ctx, t, client, node); got != aPeer {
		t.Fatalf("node lease names peer %q after B stopped, want A's %s", got, aPeer)
	}
	if n := connects(t, a, "established"); n < 1 {
		t.Fatal("A did not serve the node from its own session after B stopped")
	}
	if exited, err := a.Exited(); exited {
		t.Fatalf("replica A exited: %v", err)
	}
}

// waitLogs polls the pod's logs until they read want.
func waitLogs(ctx context.Context, t *testing.T, client kubernetes.Interface, pod, want string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		logs, err := podLogs(ctx, client, pod)
		if err == nil && logs == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("pod logs: %q, %v; want %q", logs, err, want)
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
