package tunnel

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/yamux"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/edgehive/edgehive/internal/testenv"
	"github.com/edgehive/edgehive/internal/tunnelwire"
)

func testPod(name, node string, ips ...string) *v1.Pod {
	p := &v1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"}, Spec: v1.PodSpec{NodeName: node},
		Status: v1.PodStatus{Phase: v1.PodRunning}}
	for _, ip := range ips {
		p.Status.PodIPs = append(p.Status.PodIPs, v1.PodIP{IP: ip})
	}
	if len(ips) > 0 {
		p.Status.PodIP = ips[0]
	}
	return p
}

func TestPodAddresses(t *testing.T) {
	hostNet := testPod("h", "node-a", "10.0.0.9")
	hostNet.Spec.HostNetwork = true
	done := testPod("d", "node-a", "10.88.0.6")
	done.Status.Phase = v1.PodSucceeded
	failed := testPod("f", "node-a", "10.88.0.7")
	failed.Status.Phase = v1.PodFailed
	onlyPodIP := testPod("o", "node-a")
	onlyPodIP.Status.PodIP = "10.88.0.3"
	for _, tc := range []struct {
		name string
		pod  any
		want []string
	}{
		{"running", testPod("p", "node-a", "10.88.0.5"), []string{"10.88.0.5"}},
		{"dual stack", testPod("p", "node-a", "10.88.0.5", "fd00:10::0005"), []string{"10.88.0.5", "fd00:10::5"}},
		{"v4-mapped", testPod("p", "node-a", "::ffff:10.88.0.5"), []string{"10.88.0.5"}},
		{"only status.podIP", onlyPodIP, []string{"10.88.0.3"}},
		{"not an address", testPod("p", "node-a", "pod-a"), nil},
		{"unbound", testPod("p", "", "10.88.0.5"), nil},
		{"no address yet", testPod("p", "node-a"), nil},
		{"host network", hostNet, nil},
		{"succeeded", done, nil},
		{"failed", failed, nil},
		{"not a pod", &v1.Node{}, nil},
	} {
		got, err := podAddresses(tc.pod)
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("%s: %v, %v; want %v", tc.name, got, err, tc.want)
		}
	}
	slim, _ := slimPod(&v1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Labels: map[string]string{"a": "b"}},
		Spec: v1.PodSpec{NodeName: "n", Containers: []v1.Container{{Name: "c"}}}, Status: v1.PodStatus{PodIP: "10.0.0.1"}})
	if p := slim.(*v1.Pod); p.Labels != nil || p.Spec.Containers != nil || p.Spec.NodeName != "n" || p.Status.PodIP != "10.0.0.1" {
		t.Fatalf("slim pod keeps %+v", p)
	}
}

// watchPods runs e.srv.WatchPods on client until the test ends.
func watchPods(t *testing.T, e *env, client kubernetes.Interface) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.srv.WatchPods(ctx, client) }()
	t.Cleanup(func() { cancel(); <-done })
}

// podServer is an HTTP server standing in for a pod; it answers with its
// name and the path.
func podServer(t *testing.T, name string) string {
	t.Helper()
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = fmt.Fprintf(w, "%s %s", name, r.URL.Path)
	}))
	t.Cleanup(s.Close)
	return s.Listener.Addr().String()
}

// waitCode waits until a CONNECT to target answers want.
func (e *env) waitCode(target string, want int) {
	e.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		conn, _, code, err := e.connect(e.apiCert(), target)
		if conn != nil {
			conn.Close()
		}
		if err == nil && code == want {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("CONNECT %s = %d, %v; want %d", target, code, err, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestConnectToPods: a CONNECT naming a pod's address goes to the pod's
// node, any port, and the target reaches the edge; addresses that are no
// routable pod's are refused before any node sees them.
func TestConnectToPods(t *testing.T) {
	e := newEnv(t, DefaultConfig())
	e.node("node-a")
	e.node("node-b")
	e.addPod("10.88.0.5:8080", podServer(t, "web"))
	e.addPod("[fd00:10::5]:80", podServer(t, "web6"))
	hostNet := testPod("hostnet", "node-a", "10.0.0.9")
	hostNet.Spec.HostNetwork = true
	done := testPod("done", "node-a", "10.88.0.6")
	done.Status.Phase = v1.PodSucceeded
	client := fake.NewClientset(
		testPod("web", "node-a", "10.88.0.5", "fd00:10::5"),
		testPod("other", "node-b", "10.88.1.7"),
		hostNet, done,
		testPod("twin-a", "node-a", "10.88.0.8"),
		testPod("twin-b", "node-b", "10.88.0.8"),
		testPod("far", "node-c", "10.88.2.2"),
		testPod("late", "node-b"),
	)
	// Before the pod index runs, a pod address is nobody's.
	e.waitCode("10.88.0.5:8080", http.StatusBadGateway)
	watchPods(t, e, client)
	e.waitCode("10.88.0.5:8080", http.StatusOK)

	got, err := e.get("10.88.0.5:8080", "/read")
	if err != nil || got != "web /read" {
		t.Fatalf("pod through its node's tunnel: %q, %v", got, err)
	}
	got, err = e.get("[fd00:10::5]:80", "/v6")
	if err != nil || got != "web6 /v6" {
		t.Fatalf("pod by IPv6: %q, %v", got, err)
	}
	// The stream is on the pod's node's session.
	conn, _, code, err := e.connect(e.apiCert(), "10.88.0.5:8080")
	if err != nil || code != http.StatusOK {
		t.Fatalf("CONNECT: %d, %v", code, err)
	}
	if e.srv.Streams("node-a") != 1 || e.srv.Streams("node-b") != 0 {
		t.Fatalf("streams a=%d b=%d, want the pod's node only", e.srv.Streams("node-a"), e.srv.Streams("node-b"))
	}
	conn.Close()

	for _, tc := range []struct {
		target string
		want   int
	}{
		{"10.88.1.7:8080", http.StatusForbidden},          // node-b's edge denies it (not in its pod map)
		{"10.88.0.5:22", http.StatusForbidden},            // same pod, a port the edge does not serve
		{"10.0.0.9:22", http.StatusBadGateway},            // host-network pod: never a pod target
		{"10.88.0.6:8080", http.StatusBadGateway},         // finished pod
		{"10.88.0.8:8080", http.StatusBadGateway},         // claimed by pods on two nodes
		{"10.88.2.2:8080", http.StatusServiceUnavailable}, // node without a session
		{"127.0.0.1:22", http.StatusBadGateway},           // no pod's
		{"10.88.0.5:0", http.StatusBadRequest},
		{"10.88.0.5:http", http.StatusBadRequest},
	} {
		if _, _, code, err := e.connect(e.apiCert(), tc.target); err != nil || code != tc.want {
			t.Errorf("CONNECT %s = %d, %v; want %d", tc.target, code, err, tc.want)
		}
	}
	// Only pod addresses cloudhive routed reached an edge.
	for _, target := range e.podsDialled() {
		if !slices.Contains([]string{"10.88.0.5:8080", "[fd00:10::5]:80", "10.88.1.7:8080", "10.88.0.5:22"}, target) {
			t.Errorf("an edge was asked for %s", target)
		}
	}

	// A pod that gets its address later becomes reachable; a deleted one
	// stops being.
	ctx := context.Background()
	late := testPod("late", "node-b", "10.88.1.9")
	if _, err := client.CoreV1().Pods("default").UpdateStatus(ctx, late, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	e.addPod("10.88.1.9:9000", podServer(t, "late"))
	e.waitCode("10.88.1.9:9000", http.StatusOK)
	if err := client.CoreV1().Pods("default").Delete(ctx, "web", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	e.waitCode("10.88.0.5:8080", http.StatusBadGateway)
	// Node targets keep the kubelet port rule.
	if _, _, code, _ := e.connect(e.apiCert(), "node-a:8080"); code != http.StatusForbidden {
		t.Errorf("node-a:8080 = %d, want 403", code)
	}
}

// TestPodTargetWithDirectDial: with direct_dial, a pod on a node that has no
// tunnel session is dialled by cloudhive as before; one on a tunnelled node
// goes through the tunnel.
func TestPodTargetWithDirectDial(t *testing.T) {
	cfg := DefaultConfig()
	cfg.DirectDial = true
	e := newEnv(t, cfg)
	e.node("node-a")
	direct := holdingKubelet(t) // echo on 127.0.0.1:<port>
	_, port, _ := net.SplitHostPort(direct)
	e.addPod("10.88.0.5:8080", podServer(t, "web"))
	watchPods(t, e, fake.NewClientset(testPod("web", "node-a", "10.88.0.5"), testPod("cloudside", "cloud-1", "127.0.0.1")))
	e.waitCode("10.88.0.5:8080", http.StatusOK)
	conn, br, code, err := e.connect(e.apiCert(), "127.0.0.1:"+port)
	if err != nil || code != http.StatusOK {
		t.Fatalf("CONNECT to a pod on a node without a tunnel: %d, %v", code, err)
	}
	echo(t, conn, br, "direct")
	conn.Close()
	if d := e.podsDialled(); slices.Contains(d, "127.0.0.1:"+port) {
		t.Fatalf("an edge was asked for the direct pod: %v", d)
	}
}

// TestV1EdgeSession: an edge that speaks edgehive-tunnel/1 (no target line)
// still serves the kubelet; a pod target for it is refused by cloudhive.
func TestV1EdgeSession(t *testing.T) {
	e := newEnv(t, DefaultConfig())
	kubelet := podServer(t, "kubelet-v1")
	conn, err := tlsDialNode(e, "system:node:old-node", tunnelwire.ProtocolV1)
	if err != nil {
		t.Fatal(err)
	}
	sess, err := yamux.Server(conn, tunnelwire.YamuxConfig(hclog.NewNullLogger()))
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	go func() { // the first wire format: answer OK at once, pipe to the kubelet
		for {
			st, err := sess.AcceptStream()
			if err != nil {
				return
			}
			go func() {
				local, err := net.Dial("tcp", kubelet)
				if err != nil {
					_ = st.Close()
					return
				}
				_, _ = io.WriteString(st, "OK\n")
				tunnelwire.Pipe(context.Background(), st, nil, local)
			}()
		}
	}()
	e.waitConnected("old-node", true)
	got, err := e.get("old-node:10250", "/healthz")
	if err != nil || got != "kubelet-v1 /healthz" {
		t.Fatalf("v1 kubelet: %q, %v (no target line may reach the kubelet)", got, err)
	}
	watchPods(t, e, fake.NewClientset(testPod("p", "old-node", "10.88.3.3")))
	deadline := time.Now().Add(5 * time.Second)
	for {
		code, reason := e.refusal("10.88.3.3:80")
		if code == http.StatusBadGateway && strings.Contains(reason, "upgrade edgehive") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("pod on a v1 node = %d %q, want 502 naming the old protocol", code, reason)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if e.srv.Streams("old-node") != 0 {
		t.Fatal("a stream was opened for the refused pod target")
	}
}

// tlsDialNode opens a node connection with cn's certificate offering alpn.
func tlsDialNode(e *env, cn, alpn string) (net.Conn, error) {
	cert := clientCert(e.t, e.pki, cn)
	return tls.Dial("tcp", e.nodeAddr, &tls.Config{RootCAs: e.pki.Pool, Certificates: []tls.Certificate{cert}, NextProtos: []string{alpn}})
}

// TestForwardPodTarget: a CONNECT for a pod whose node's session another
// replica holds is forwarded with the pod's address, and the holder routes
// it from its own pod index.
func TestForwardPodTarget(t *testing.T) {
	pki, apiPKI := testenv.NewPKI(t), testenv.NewPKI(t)
	client := fake.NewClientset()
	a := newReplica(t, "a", pki, apiPKI, client)
	b := newReplica(t, "b", pki, apiPKI, client)
	b.node("edge-1")
	b.addPod("10.88.0.5:8080", podServer(t, "web"))
	pods := fake.NewClientset(testPod("web", "edge-1", "10.88.0.5"), testPod("gone", "edge-1", "10.88.0.6"))
	watchPods(t, a.env, pods)
	watchPods(t, b.env, pods)
	a.waitHolder("edge-1", "b")
	a.waitCode("10.88.0.5:8080", http.StatusOK)
	got, err := a.get("10.88.0.5:8080", "/read")
	if err != nil || got != "web /read" {
		t.Fatalf("pod via a→b: %q, %v", got, err)
	}
	if a.srv.Connected("edge-1") || len(a.podsDialled()) != 0 {
		t.Fatal("a served the pod itself")
	}
	if d := b.podsDialled(); !slices.Contains(d, "10.88.0.5:8080") {
		t.Fatalf("b's edge dialled %v, want the pod's address", d)
	}
	// The holder's refusal is relayed: the edge denies a port it does not serve.
	if _, _, code, _ := a.connect(a.apiCert(), "10.88.0.5:22"); code != http.StatusForbidden {
		t.Fatalf("denied pod port via a→b = %d, want 403", code)
	}
}

// refusal sends CONNECT target and returns the status and the reason in
// the answer's body.
func (e *env) refusal(target string) (int, string) {
	e.t.Helper()
	conn, err := tls.Dial("tcp", e.connectAddr, &tls.Config{RootCAs: e.pki.Pool, Certificates: []tls.Certificate{*e.apiCert()}})
	if err != nil {
		e.t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "CONNECT %s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", target)
	resp, err := http.ReadResponse(bufio.NewReader(conn), &http.Request{Method: http.MethodConnect})
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		return resp.StatusCode, ""
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
	return resp.StatusCode, string(body)
}
