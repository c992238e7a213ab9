//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/edgehive/edgehive/internal/e2eenv"
)

// TestKubeletThroughTunnel: a real kube-apiserver whose egress selector
// sends every connection to a node through cloudhive's CONNECT proxy (mTLS)
// reaches an edge node's kubelet API over the node's tunnel session. The
// "kubelet" is an HTTPS server on the edge side on a free port, not 10250,
// so the API server's direct dial of <node>:10250 would fail: only the
// tunnel (which maps 10250 to edgehub's local_kubelet) gets there.
func TestKubeletThroughTunnel(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	// edged reports its read-only API's port as the node's kubelet port
	// (status.daemonEndpoints), so the API server CONNECTs to that port;
	// it is chosen here so cloudhive can allow it beside 10250.
	edgedPort := e2eenv.FreePort(t)
	env := e2eenv.NewTunnelEnv(ctx, t, 10250, edgedPort)
	client := env.Client

	// The node's kubelet API, as a test double on the edge side.
	node := e2eenv.NodeName("tunnel")
	var requests, following atomic.Int64
	kubelet := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		if r.URL.Query().Get("follow") == "true" {
			// kubectl logs -f: a line every 50 ms until the client goes.
			following.Add(1)
			defer following.Add(-1)
			rc := http.NewResponseController(w)
			for i := 0; ; i++ {
				if _, err := fmt.Fprintf(w, "line %d\n", i); err != nil {
					return
				}
				_ = rc.Flush()
				select {
				case <-r.Context().Done():
					return
				case <-time.After(50 * time.Millisecond):
				}
			}
		}
		fmt.Fprintf(w, "kubelet %s: %s %s", node, r.Method, r.URL.Path)
	}))
	defer kubelet.Close()

	edge := e2eenv.JoinEdge(t, env.Bin, env.Cloud, env.Token, node, env.Containerd)
	edge.EnableTunnel(t, e2eenv.TunnelOptions{Server: env.Egress.TunnelAddr, LocalKubelet: kubelet.Listener.Addr().String(),
		EdgedHTTPAddress: fmt.Sprintf("127.0.0.1:%d", edgedPort)})
	edge.Start(t)
	if _, err := e2eenv.WaitForNode(ctx, client, node, e2eenv.NodeReady); err != nil {
		t.Fatal(err)
	}

	// Pod logs: kube-apiserver's pods/log connects to <node>:10250 (the
	// node's Hostname address) through the egress selector: CONNECT at
	// cloudhive, the node's tunnel session, the kubelet. (nodes/<n>/proxy is
	// not used here: kube-apiserver refuses it for a node whose name resolves
	// to loopback, which the guard rails make every test node do.)
	bindPod(ctx, t, client, "tunnel-logs", node)
	want := fmt.Sprintf("kubelet %s: GET /containerLogs/default/tunnel-logs/c", node)
	var logs string
	var err error
	deadline := time.Now().Add(60 * time.Second)
	for {
		logs, err = podLogs(ctx, client, "tunnel-logs")
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(500 * time.Millisecond) // the tunnel session comes up beside the link
	}
	if err != nil || logs != want {
		t.Fatalf("pod logs: %q, %v; want %q", logs, err, want)
	}
	t.Logf("pod logs through the tunnel: %q", logs)
	for i := range 20 { // one stream per request, closed after each
		if logs, err := podLogs(ctx, client, "tunnel-logs"); err != nil || logs != want {
			t.Fatalf("pod logs #%d: %q, %v", i, logs, err)
		}
	}

	// kubectl logs -f: lines arrive as the kubelet writes them, and when the
	// client goes away the close travels back through the API server, the
	// CONNECT, the stream and the node to the kubelet.
	fctx, fcancel := context.WithCancel(ctx)
	stream, err := client.CoreV1().Pods("default").GetLogs("tunnel-logs", &v1.PodLogOptions{Container: "c", Follow: true}).Stream(fctx)
	if err != nil {
		t.Fatalf("logs -f: %v", err)
	}
	lines := bufio.NewScanner(stream)
	for i := range 5 {
		if !lines.Scan() || lines.Text() != fmt.Sprintf("line %d", i) {
			t.Fatalf("logs -f line %d: %q, %v", i, lines.Text(), lines.Err())
		}
	}
	if following.Load() != 1 {
		t.Fatalf("kubelet follows %d log streams, want 1", following.Load())
	}
	fcancel()
	_ = stream.Close()
	deadline = time.Now().Add(10 * time.Second)
	for following.Load() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the kubelet's log stream outlived the client")
		}
		time.Sleep(20 * time.Millisecond)
	}

	// A node with no tunnel session is refused by cloudhive, not dialled.
	ghost := e2eenv.NodeName("ghost")
	e2eenv.ResolveToLoopback(t, ghost)
	if _, err := client.CoreV1().Nodes().Create(ctx, &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: ghost},
		Status: v1.NodeStatus{Addresses: []v1.NodeAddress{{Type: v1.NodeHostName, Address: ghost}}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = client.CoreV1().Nodes().Delete(context.Background(), ghost, metav1.DeleteOptions{}) }()
	bindPod(ctx, t, client, "ghost-logs", ghost)
	before := requests.Load()
	if _, err := podLogs(ctx, client, "ghost-logs"); err == nil || !strings.Contains(err.Error(), "code 503") {
		t.Fatalf("logs of a pod on a node without a tunnel: %v; want cloudhive's 503", err)
	}
	if requests.Load() != before {
		t.Fatal("the request for the ghost node reached a kubelet")
	}

	// The edge goes away: its node is no longer reachable.
	edge.Stop(10 * time.Second)
	deadline = time.Now().Add(30 * time.Second)
	for {
		_, err = podLogs(ctx, client, "tunnel-logs")
		if err != nil && strings.Contains(err.Error(), "code 503") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("pod logs after the edge stopped: %v; want 503", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// bindPod creates a one-container pod already bound to node.
func bindPod(ctx context.Context, t *testing.T, client kubernetes.Interface, name, node string) {
	t.Helper()
	pod := &v1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
		Spec: v1.PodSpec{NodeName: node, Containers: []v1.Container{{Name: "c", Image: e2eenv.BusyboxImage,
			Command: []string{"sleep", "3600"}}}},
	}
	if _, err := client.CoreV1().Pods("default").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = client.CoreV1().Pods("default").Delete(context.Background(), name, metav1.DeleteOptions{GracePeriodSeconds: new(int64)})
	})
}

func podLogs(ctx context.Context, client kubernetes.Interface, pod string) (string, error) {
	b, err := client.CoreV1().Pods("default").GetLogs(pod, &v1.PodLogOptions{Container: "c"}).DoRaw(ctx)
	if err != nil {
		// The API server's Status body says what the proxy answered.
		return "", fmt.Errorf("%w: %s", err, b)
	}
	return string(b), nil
}
