//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/edgehive/edgehive/internal/e2eenv"
)

// TestPodProxy: kube-apiserver's pods/<p>/proxy and services/<s>/proxy
// reach a busybox httpd in a real container on an edge node through the
// egress selector, cloudhive's CONNECT proxy (the pod's address mapped to
// its node) and the node's tunnel session (edgehub dials the pod because
// its address is in tunnel.pod_cidrs). CONNECTs to addresses that are no
// pod's (loopback, the host's address on the pod bridge) are refused.
func TestPodProxy(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	kubeletPort := e2eenv.FreePort(t)
	kubeletAddr := fmt.Sprintf("127.0.0.2:%d", kubeletPort)
	env := e2eenv.NewTunnelEnv(ctx, t, kubeletPort)
	cluster, client, eg := env.Cluster, env.Client, env.Egress
	rt := e2eenv.NewCRI(t, env.Containerd)

	node := e2eenv.NodeName("podproxy")
	edge := e2eenv.JoinEdge(t, env.Bin, env.Cloud, env.Token, node, env.Containerd)
	edge.EnableTunnel(t, e2eenv.TunnelOptions{Server: eg.TunnelAddr, LocalKubelet: kubeletAddr,
		KubeletAPIClientCA: cluster.CA.CertFile, PodCIDRs: []string{env.Containerd.PodCIDR}})
	var uids []types.UID
	t.Cleanup(func() { sweepSandboxes(t, rt, uids) })
	edge.Start(t)
	if _, err := e2eenv.WaitForNode(ctx, client, node, e2eenv.NodeReady); err != nil {
		t.Fatal(err)
	}

	grace := int64(1)
	pod := &v1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "podproxy-web", Namespace: "default", Labels: map[string]string{"app": "podproxy-web"}},
		Spec: v1.PodSpec{NodeName: node, TerminationGracePeriodSeconds: &grace, Containers: []v1.Container{
			{Name: "web", Image: e2eenv.BusyboxImage, Command: []string{"sh", "-c",
				"mkdir -p /www && echo served by $HOSTNAME > /www/index.html && echo read-ok > /www/read && exec httpd -f -p 8080 -h /www"},
				Ports: []v1.ContainerPort{{ContainerPort: 8080}}},
		}},
	}
	made, err := client.CoreV1().Pods("default").Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	uids = append(uids, made.UID)
	t.Cleanup(func() {
		_ = client.CoreV1().Pods("default").Delete(context.Background(), pod.Name, metav1.DeleteOptions{GracePeriodSeconds: new(int64)})
	})
	running, err := e2eenv.WaitForPod(ctx, client, "default", pod.Name, e2eenv.PodRunning) // Running, with an IP
	if err != nil {
		t.Fatal(err)
	}
	podIP := running.Status.PodIP
	t.Logf("pod %s at %s on %s", pod.Name, podIP, node)

	// pods/<p>:8080/proxy/ through the API server. The first answer waits
	// for the tunnel session and cloudhive's pod index.
	want := "served by " + pod.Name + "\n"
	var body []byte
	deadline := time.Now().Add(30 * time.Second)
	for {
		body, err = client.CoreV1().Pods("default").ProxyGet("http", pod.Name, "8080", "/", nil).DoRaw(ctx)
		if err == nil && string(body) == want || time.Now().After(deadline) {
			break
		}
		time.Sleep(300 * time.Millisecond)
	}
	if err != nil || string(body) != want {
		t.Fatalf("pods/%s:8080/proxy/: %q, %v; want %q", pod.Name, body, err, want)
	}
	start := time.Now()
	for range 10 {
		body, err = client.CoreV1().Pods("default").ProxyGet("http", pod.Name, "8080", "/read", nil).DoRaw(ctx)
		if err != nil || string(body) != "read-ok\n" {
			t.Fatalf("pods/%s:8080/proxy/read: %q, %v", pod.Name, body, err)
		}
	}
	t.Logf("pods/<p>/proxy through the tunnel: %v per request (10 sequential)", time.Since(start)/10)
	// The same path as the conformance test's "pods/server:8080/proxy/read".
	body, err = client.CoreV1().RESTClient().Get().AbsPath("/api/v1/namespaces/default/pods/" + pod.Name + ":8080/proxy/read").DoRaw(ctx)
	if err != nil || string(body) != "read-ok\n" {
		t.Fatalf("GET pods/%s:8080/proxy/read: %q, %v", pod.Name, body, err)
	}

	// services/<s>:8080/proxy/: the API server picks an endpoint address
	// of the Service. No controller-manager runs here, so the test writes
	// the Endpoints and EndpointSlice the endpoint controllers would.
	svc := &v1.Service{ObjectMeta: metav1.ObjectMeta{Name: "podproxy-svc", Namespace: "default"},
		Spec: v1.ServiceSpec{Selector: map[string]string{"app": "podproxy-web"},
			Ports: []v1.ServicePort{{Name: "http", Port: 8080, TargetPort: intstr.FromInt32(8080)}}}}
	if _, err := client.CoreV1().Services("default").Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = client.CoreV1().Services("default").Delete(context.Background(), svc.Name, metav1.DeleteOptions{})
	})
	ref := &v1.ObjectReference{Kind: "Pod", Namespace: "default", Name: pod.Name, UID: made.UID}
	nodeName := node
	if _, err := client.CoreV1().Endpoints("default").Create(ctx, &v1.Endpoints{ //nolint:staticcheck // the API server's service proxy may read either
		ObjectMeta: metav1.ObjectMeta{Name: svc.Name, Namespace: "default"},
		Subsets: []v1.EndpointSubset{{Addresses: []v1.EndpointAddress{{IP: podIP, NodeName: &nodeName, TargetRef: ref}},
			Ports: []v1.EndpointPort{{Name: "http", Port: 8080}}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	portName, port, ready := "http", int32(8080), true
	if _, err := client.DiscoveryV1().EndpointSlices("default").Create(ctx, &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Name: svc.Name + "-1", Namespace: "default",
			Labels: map[string]string{discoveryv1.LabelServiceName: svc.Name, discoveryv1.LabelManagedBy: "e2e.edgehive.io"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints: []discoveryv1.Endpoint{{Addresses: []string{podIP}, NodeName: &nodeName, TargetRef: ref,
			Conditions: discoveryv1.EndpointConditions{Ready: &ready}}},
		Ports: []discoveryv1.EndpointPort{{Name: &portName, Port: &port}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	body, err = client.CoreV1().Services("default").ProxyGet("http", svc.Name, "8080", "/", nil).DoRaw(ctx)
	if err != nil || string(body) != want {
		t.Fatalf("services/%s:8080/proxy/: %q, %v; want %q", svc.Name, body, err, want)
	}
	body, err = client.CoreV1().RESTClient().Get().AbsPath("/api/v1/namespaces/default/services/" + svc.Name + ":8080/proxy/read").DoRaw(ctx)
	if err != nil || string(body) != "read-ok\n" {
		t.Fatalf("GET services/%s:8080/proxy/read: %q, %v", svc.Name, body, err)
	}

	// Addresses that are no pod's, asked of cloudhive directly with the API
	// server's egress certificate: refused, never dialled from the node.
	gateway := bridgeGateway(t, env.Containerd.PodCIDR)
	for _, tc := range []struct {
		target string
		status int
	}{
		{"127.0.0.1:22", http.StatusBadGateway},                                            // no pod's: cloudhive refuses
		{net.JoinHostPort(gateway, fmt.Sprint(e2eenv.FreePort(t))), http.StatusBadGateway}, // the host on the pod bridge
		{net.JoinHostPort(podIP, "8081"), http.StatusBadGateway},                           // the pod, a port nobody serves: the edge's dial fails
	} {
		code, reason, err := connectStatus(ctx, eg.ConnectAddr, eg.CloudCAFile, eg.Client, tc.target)
		if err != nil || code != tc.status {
			t.Errorf("CONNECT %s = %d %q, %v; want %d", tc.target, code, reason, err, tc.status)
		}
		t.Logf("CONNECT %s: %d %s", tc.target, code, strings.TrimSpace(reason))
	}
	// The pod's own address through the same door works.
	if code, reason, err := connectStatus(ctx, eg.ConnectAddr, eg.CloudCAFile, eg.Client, net.JoinHostPort(podIP, "8080")); err != nil || code != http.StatusOK {
		t.Fatalf("CONNECT to the pod: %d %q, %v", code, reason, err)
	}

	// After the pod is gone its address is nobody's.
	if err := client.CoreV1().Pods("default").Delete(ctx, pod.Name, metav1.DeleteOptions{GracePeriodSeconds: new(int64)}); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(30 * time.Second)
	for {
		code, reason, err := connectStatus(ctx, eg.ConnectAddr, eg.CloudCAFile, eg.Client, net.JoinHostPort(podIP, "8080"))
		if err == nil && code == http.StatusBadGateway && strings.Contains(reason, "neither") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("CONNECT to a deleted pod's address: %d %q, %v; want 502", code, reason, err)
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// bridgeGateway is the first address of the pod subnet: the host's own
// address on the CNI bridge (host-local's default gateway).
func bridgeGateway(t *testing.T, cidr string) string {
	t.Helper()
	ip, _, err := net.ParseCIDR(cidr)
	if err != nil {
		t.Fatal(err)
	}
	ip = ip.To4()
	if ip == nil {
		t.Fatalf("pod subnet %s is not IPv4", cidr)
	}
	gw := make(net.IP, 4)
	copy(gw, ip)
	gw[3]++
	return gw.String()
}

// connectStatus sends CONNECT target to cloudhive's CONNECT proxy with the
// egress client certificate, as kube-apiserver does, and returns the
// status and, for a refusal, its reason.
func connectStatus(ctx context.Context, connectAddr, cloudCAFile string, egress e2eenv.CertFiles, target string) (int, string, error) {
	caPEM, err := os.ReadFile(cloudCAFile)
	if err != nil {
		return 0, "", err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	kp, err := tls.LoadX509KeyPair(egress.CertFile, egress.KeyFile)
	if err != nil {
		return 0, "", err
	}
	dctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	conn, err := (&tls.Dialer{Config: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{kp}, MinVersion: tls.VersionTLS12}}).DialContext(dctx, "tcp", connectAddr)
	if err != nil {
		return 0, "", err
	}
	defer conn.Close()
	if dl, ok := dctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	if _, err := fmt.Fprintf(conn, "CONNECT %s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", target); err != nil {
		return 0, "", err
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), &http.Request{Method: http.MethodConnect})
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		return resp.StatusCode, "", nil
	}
	reason, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
	return resp.StatusCode, string(reason), nil
}
