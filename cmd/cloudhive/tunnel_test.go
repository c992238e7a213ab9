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
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/yamux"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/edgehive/edgehive/cloud/cloudhub"
	"github.com/edgehive/edgehive/internal/testenv"
	"github.com/edgehive/edgehive/internal/tunnelwire"
	"github.com/edgehive/edgehive/plugins/edgehub"
)

// The tunnel as cloudhive serves it: a node with a certificate from
// cloudhive's own CA opens a session, and a client with a certificate from
// connect_client_ca reaches the node's kubelet through CONNECT.
func TestServeTunnel(t *testing.T) {
	dir := t.TempDir()
	api := testenv.NewPKI(t) // the API server's egress client CA
	caFile := filepath.Join(dir, "egress-ca.crt")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: api.CA.Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, diags := parseConfig("t.hcl", fmt.Appendf(nil, `
cloudhub {
  listen              = "127.0.0.1:0"
  bootstrap_listen    = "127.0.0.1:0"
  advertise_addresses = ["127.0.0.1"]
}
admin { listen = "127.0.0.1:0" }
tunnel {
  listen            = "127.0.0.1:0"
  connect_listen    = "127.0.0.1:0"
  connect_client_ca = %q
}
`, caFile))
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	// The node as edged registers it: CONNECTs may name its InternalIP.
	client := fake.NewClientset(&v1.Node{ObjectMeta: metav1.ObjectMeta{Name: "edge-1"},
		Status: v1.NodeStatus{Addresses: []v1.NodeAddress{{Type: v1.NodeInternalIP, Address: "10.20.30.40"}}}})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ready := make(chan listening, 1)
	done := make(chan error, 1)
	go func() {
		done <- serveWith(ctx, cfg, controllerConfig{}, client, newDynamicFake(), []byte("pem"), hclog.NewNullLogger(), func(l listening) { ready <- l })
	}()
	var addrs listening
	select {
	case addrs = <-ready:
	case err := <-done:
		t.Fatalf("serve: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("not ready")
	}
	if addrs.tunnel == nil || addrs.connect == nil {
		t.Fatalf("tunnel not listening: %+v", addrs)
	}

	// The node's certificate, by token bootstrap as edgehub gets it.
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
	if err := edgehub.Bootstrap(ctx, "https://"+addrs.bootstrap.String(), token, "edge-1", d+"/ca.crt", d+"/node.crt", d+"/node.key"); err != nil {
		t.Fatal(err)
	}
	pair, err := tls.LoadX509KeyPair(d+"/node.crt", d+"/node.key")
	if err != nil {
		t.Fatal(err)
	}

	kubelet := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "edge-1 "+r.URL.Path)
	}))
	defer kubelet.Close()
	conn, err := tls.Dial("tcp", addrs.tunnel.String(), &tls.Config{RootCAs: ca.Pool(), Certificates: []tls.Certificate{pair},
		NextProtos: []string{tunnelwire.Protocol}})
	if err != nil {
		t.Fatal(err)
	}
	sess, err := yamux.Server(conn, tunnelwire.YamuxConfig(hclog.NewNullLogger()))
	if err != nil {
		t.Fatal(err)
	}
	edgeDone := make(chan struct{})
	go func() {
		defer close(edgeDone)
		_ = tunnelwire.ServeNode(ctx, sess, tunnelwire.NodeOptions{MaxStreams: 8, Logger: hclog.NewNullLogger(),
			Dial: func(ctx context.Context) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "tcp", kubelet.Listener.Addr().String())
			}})
	}()

	key := testenv.NewKey(t)
	apiDER := api.Sign(t, &x509.Certificate{Subject: pkix.Name{CommonName: "kube-apiserver"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}, &key.PublicKey)
	apiCert := tls.Certificate{Certificate: [][]byte{apiDER}, PrivateKey: key}
	// The egress selector verifies cloudhive with its CA, as for cloudhub.
	proxyTLS := &tls.Config{RootCAs: ca.Pool(), Certificates: []tls.Certificate{apiCert}}

	var body string
	deadline := time.Now().Add(10 * time.Second)
	for {
		body, err = connectGet(addrs.connect.String(), proxyTLS, "edge-1:10250", "/healthz")
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond) // the session registers right after the handshake
	}
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
	resp, err := http.Get("http://" + addrs.admin.String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{"\ntunnel_sessions 1\n", "\ntunnel_connects_total{result=\"established\"} 2\n",
		"\ntunnel_connects_total{result=\"port\"} 1\n"} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("metrics lack %q", strings.TrimSpace(want))
		}
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serve: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("serve did not stop")
	}
	<-edgeDone
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
	cfg, diags := parseConfig("t.hcl", fmt.Appendf(nil, `
cloudhub {
  listen              = "127.0.0.1:0"
  bootstrap_listen    = "127.0.0.1:0"
  advertise_addresses = ["127.0.0.1"]
}
admin { listen = "127.0.0.1:0" }
tunnel {
  listen         = "127.0.0.1:0"
  connect_listen = "unix:%s"
}
`, sock))
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ready := make(chan listening, 1)
	done := make(chan error, 1)
	go func() {
		done <- serveWith(ctx, cfg, controllerConfig{}, fake.NewClientset(), newDynamicFake(), []byte("pem"), hclog.NewNullLogger(), func(l listening) { ready <- l })
	}()
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("serve: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("not ready")
	}
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
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serve: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("serve did not stop")
	}
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Errorf("socket left behind: %v", err)
	}
}
