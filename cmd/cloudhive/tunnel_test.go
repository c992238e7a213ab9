package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/yamux"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/edgehive/edgehive/cloud/cloudhub"
	"github.com/edgehive/edgehive/internal/testenv"
	"github.com/edgehive/edgehive/internal/tunnelwire"
	"github.com/edgehive/edgehive/plugins/edgehub"
)

// loopbackHCL is a config on free loopback ports with the given tunnel
// block body (no tunnel block when it is empty).
func loopbackHCL(tunnelBody string) []byte {
	src := `
cloudhub {
  listen              = "127.0.0.1:0"
  bootstrap_listen    = "127.0.0.1:0"
  advertise_addresses = ["127.0.0.1"]
}
admin { listen = "127.0.0.1:0" }
`
	if tunnelBody != "" {
		src += "tunnel {\n  listen = \"127.0.0.1:0\"\n" + tunnelBody + "}\n"
	}
	return []byte(src)
}

func mustParse(t *testing.T, src []byte) *Config {
	t.Helper()
	cfg, diags := parseConfig("t.hcl", src)
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	return cfg
}

// startServing runs serveWith in-process against client until the returned
// stop (also run at cleanup), which checks that it ends cleanly.
func startServing(t *testing.T, cfg *Config, client kubernetes.Interface) (listening, func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan listening, 1)
	done := make(chan error, 1)
	go func() {
		done <- serveWith(ctx, cfg, controllerConfig{}, client, newDynamicFake(), []byte("pem"), hclog.NewNullLogger(), func(l listening) { ready <- l })
	}()
	var addrs listening
	select {
	case addrs = <-ready:
	case err := <-done:
		cancel()
		t.Fatalf("serve: %v", err)
	case <-time.After(20 * time.Second):
		cancel()
		t.Fatal("not ready")
	}
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("serve: %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Error("serve did not stop")
			}
		})
	}
	t.Cleanup(stop)
	return addrs, stop
}

// bootstrapNode gets node a certificate from cloudhive's certificate
// service with the stored join token, as edgehub does; it returns the cloud
// CA and the node's pair.
func bootstrapNode(ctx context.Context, t *testing.T, client kubernetes.Interface, cfg *Config, bootstrap net.Addr, node string) (*cloudhub.CA, tls.Certificate) {
	t.Helper()
	secrets := cloudhub.Secrets{Client: client, Namespace: "kubeedge"}
	ca, err := secrets.CA(ctx, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	token, err := secrets.Token(ctx, ca, cfg.TokenTTL, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	d := t.TempDir()
	if err := edgehub.Bootstrap(ctx, "https://"+bootstrap.String(), token, node, d+"/ca.crt", d+"/node.crt", d+"/node.key"); err != nil {
		t.Fatal(err)
	}
	pair, err := tls.LoadX509KeyPair(d+"/node.crt", d+"/node.key")
	if err != nil {
		t.Fatal(err)
	}
	return ca, pair
}

// startNodeTunnel opens node's tunnel session to addr with its certificate
// and serves streams to kubelet until ctx ends; the returned channel closes
// when the session is over.
func startNodeTunnel(ctx context.Context, t *testing.T, addr string, ca *cloudhub.CA, pair tls.Certificate, kubelet string) <-chan struct{} {
	t.Helper()
	conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: ca.Pool(), Certificates: []tls.Certificate{pair},
		NextProtos: []string{tunnelwire.Protocol}})
	if err != nil {
		t.Fatal(err)
	}
	sess, err := yamux.Server(conn, tunnelwire.YamuxConfig(hclog.NewNullLogger()))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = tunnelwire.ServeNode(ctx, sess, tunnelwire.NodeOptions{MaxStreams: 8, Logger: hclog.NewNullLogger(),
			Dial: func(ctx context.Context, target tunnelwire.Target) (net.Conn, error) {
				if !target.IsKubelet() {
					return nil, fmt.Errorf("%w: no pods here", tunnelwire.ErrDenied)
				}
				var d net.Dialer
				return d.DialContext(ctx, "tcp", kubelet)
			}})
	}()
	return done
}

// egressCA is the API server's egress client CA, written to dir for
// connect_client_ca.
func egressCA(t *testing.T, dir string) (*testenv.PKI, string) {
	t.Helper()
	api := testenv.NewPKI(t)
	caFile := filepath.Join(dir, "egress-ca.crt")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: api.CA.Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	return api, caFile
}

// egressTLS is the API server's TLS for cloudhive's CONNECT listener: a
// client certificate from api, cloudhive verified with its CA.
func egressTLS(t *testing.T, api *testenv.PKI, ca *cloudhub.CA) *tls.Config {
	t.Helper()
	key := testenv.NewKey(t)
	apiDER := api.Sign(t, &x509.Certificate{Subject: pkix.Name{CommonName: "kube-apiserver"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}, &key.PublicKey)
	return &tls.Config{RootCAs: ca.Pool(), Certificates: []tls.Certificate{{Certificate: [][]byte{apiDER}, PrivateKey: key}}}
}

// connectGetRetry is connectGet until it succeeds or 10 s pass: a session
// registers (and its Lease propagates) right after the handshake.
func connectGetRetry(proxy string, tlsCfg *tls.Config, target, path string) (string, error) {
	deadline := time.Now().Add(10 * time.Second)
	for {
		body, err := connectGet(proxy, tlsCfg, target, path)
		if err == nil || time.Now().After(deadline) {
			return body, err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// The tunnel as cloudhive serves it: a node with a certificate from
// cloudhive's own CA opens a session, and a client with a certificate from
// connect_client_ca reaches the node's kubelet through CONNECT.
func TestServeTunnel(t *testing.T) {
	api, caFile := egressCA(t, t.TempDir())
	cfg := mustParse(t, loopbackHCL(fmt.Sprintf("  connect_listen = \"127.0.0.1:0\"\n  connect_client_ca = %q\n", caFile)))
	// The node as edged registers it: CONNECTs may name its InternalIP.
	// A pod on it: CONNECTs may name the pod's address, and go to edge-1.
	client := fake.NewClientset(&v1.Node{ObjectMeta: metav1.ObjectMeta{Name: "edge-1"},
		Status: v1.NodeStatus{Addresses: []v1.NodeAddress{{Type: v1.NodeInternalIP, Address: "10.20.30.40"}}}},
		&v1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default"}, Spec: v1.PodSpec{NodeName: "edge-1"},
			Status: v1.PodStatus{Phase: v1.PodRunning, PodIPs: []v1.PodIP{{IP: "10.88.0.5"}}}})
	addrs, stop := startServing(t, cfg, client)
	if addrs.tunnel == nil || addrs.connect == nil || addrs.peer != nil {
		t.Fatalf("tunnel listeners: %+v; want node and CONNECT, no peer endpoint", addrs)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ca, pair := bootstrapNode(ctx, t, client, cfg, addrs.bootstrap, "edge-1")
	proxyTLS := egressTLS(t, api, ca)

	kubelet := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "edge-1 "+r.URL.Path)
	}))
	defer kubelet.Close()
	edgeDone := startNodeTunnel(ctx, t, addrs.tunnel.String(), ca, pair, kubelet.Listener.Addr().String())

	body, err := connectGetRetry(addrs.connect.String(), proxyTLS, "edge-1:10250", "/healthz")
	if err != nil || body != "edge-1 /healthz" {
		t.Fatalf("through the tunnel: %q, %v", body, err)
	}
	body, err = connectGet(addrs.connect.String(), proxyTLS, "10.20.30.40:10250", "/pods")
	if err != nil || body != "edge-1 /pods" {
		t.Fatalf("through the tunnel by InternalIP: %q, %v", body, err)
	}
	// The node's certificate is not an egress client certificate.
	nodeAsAPI := &tls.Config{RootCAs: ca.Pool(), Certificates: []tls.Certificate{pair}}
	if _, err := connectGet(addrs.connect.String(), nodeAsAPI, "edge-1:10250", "/healthz"); err == nil {
		t.Fatal("CONNECT with a node certificate succeeded")
	}

	// Port 22 is not the kubelet's.
	if _, err := connectGet(addrs.connect.String(), proxyTLS, "edge-1:22", "/"); err == nil || !strings.Contains(err.Error(), "403") {
		t.Fatalf("CONNECT to port 22: %v, want 403", err)
	}
	// The pod's address reaches edge-1's edge, whose Dial here denies pods:
	// 403 (502 would mean cloudhive knew no such pod).
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := connectGet(addrs.connect.String(), proxyTLS, "10.88.0.5:8080", "/")
		if err != nil && strings.Contains(err.Error(), "403") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("CONNECT to the pod's address: %v, want the edge's 403", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	resp, err := http.Get("http://" + addrs.admin.String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{"\ntunnel_sessions 1\n", "\ntunnel_connects_total{result=\"established\"} 2\n",
		"\ntunnel_connects_total{result=\"port\"} 1\n", "\ntunnel_connects_total{result=\"edge_denied\"} 1\n"} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("metrics lack %q", strings.TrimSpace(want))
		}
	}
	stop()
	<-edgeDone
}

// Two replicas with peer_listen on one fake API: the node's session is on
// b, the API server's CONNECT lands on a, which forwards it to b's peer
// endpoint (mTLS with the server certificate from cloudcoresecret).
func TestServeTunnelTwoReplicas(t *testing.T) {
	api, caFile := egressCA(t, t.TempDir())
	src := loopbackHCL(fmt.Sprintf("  connect_listen = \"127.0.0.1:0\"\n  connect_client_ca = %q\n  peer_listen = \"127.0.0.1:0\"\n", caFile))
	cfg := mustParse(t, src)
	client := fake.NewClientset()
	a, _ := startServing(t, cfg, client)
	b, _ := startServing(t, mustParse(t, src), client)
	if a.peer == nil || b.peer == nil {
		t.Fatalf("peer endpoints: %v, %v", a.peer, b.peer)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ca, pair := bootstrapNode(ctx, t, client, cfg, b.bootstrap, "edge-1")
	kubelet := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "edge-1 "+r.URL.Path)
	}))
	defer kubelet.Close()
	nodeCtx, nodeCancel := context.WithCancel(ctx)
	edgeDone := startNodeTunnel(nodeCtx, t, b.tunnel.String(), ca, pair, kubelet.Listener.Addr().String())

	proxyTLS := egressTLS(t, api, ca)
	body, err := connectGetRetry(a.connect.String(), proxyTLS, "edge-1:10250", "/healthz")
	if err != nil || body != "edge-1 /healthz" {
		t.Fatalf("CONNECT at a for b's node: %q, %v", body, err)
	}
	lease, err := client.CoordinationV1().Leases("kubeedge").Get(ctx, "tunnel-edge-1", metav1.GetOptions{})
	if err != nil || lease.Annotations["tunnel.edgehive.io/peer-address"] != b.peer.String() {
		t.Fatalf("lease of edge-1: %+v, %v; want b's peer address %s", lease, err, b.peer)
	}
	// The node's certificate does not open a's peer endpoint.
	if _, err := connectGet(a.peer.String(), &tls.Config{RootCAs: ca.Pool(), Certificates: []tls.Certificate{pair}}, "edge-1:10250", "/"); err == nil {
		t.Fatal("the peer endpoint served a node certificate")
	}
	nodeCancel()
	<-edgeDone
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err = connectGet(a.connect.String(), proxyTLS, "edge-1:10250", "/healthz")
		if err != nil && strings.Contains(err.Error(), "503") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("CONNECT after the session ended: %v, want 503", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// connectGet sends CONNECT target through the proxy, then GET path.
func connectGet(proxy string, tlsCfg *tls.Config, target, path string) (string, error) {
	conn, err := tls.Dial("tcp", proxy, tlsCfg)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(conn, "CONNECT %s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", target) // as kube-apiserver writes it
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("CONNECT: %s", resp.Status)
	}
	fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", path, target)
	resp, err = http.ReadResponse(br, nil)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// connect_listen = "unix:PATH": the socket is made 0600 and serves CONNECT
// without TLS.
func TestServeTunnelUnixSocket(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "tunnel.sock")
	cfg := mustParse(t, loopbackHCL(fmt.Sprintf("  connect_listen = \"unix:%s\"\n", sock)))
	_, stop := startServing(t, cfg, fake.NewClientset())
	fi, err := os.Stat(sock)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 || fi.Mode()&os.ModeSocket == 0 {
		t.Fatalf("socket mode %v, want 0600 socket", fi.Mode())
	}
	conn, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "CONNECT edge-9:10250 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(conn), &http.Request{Method: http.MethodConnect})
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("CONNECT to a node without a session: %s, want 503", resp.Status)
	}
	stop()
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Errorf("socket left behind: %v", err)
	}
}
