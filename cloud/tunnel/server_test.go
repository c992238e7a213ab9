package tunnel

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/yamux"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/edgehive/edgehive/internal/testenv"
	"github.com/edgehive/edgehive/internal/tunnelwire"
)

// env is a tunnel server on loopback with real TLS: the cloud CA signs the
// server and node certificates; a second CA signs the API server's client
// certificate for the CONNECT listener.
type env struct {
	t           testing.TB
	pki         *testenv.PKI // cloud CA
	apiPKI      *testenv.PKI // the API server's egress client CA
	srv         *Server
	nodeAddr    string
	connectAddr string

	podMu sync.Mutex
	// pods: pod target (ip:port) → the local address the test edges dial
	// for it; the edges deny every other pod target. Under podMu.
	pods    map[string]string
	dialled []string // pod targets the edges were asked for, under podMu
}

// addPod makes the edges serve pod target ip:port from local.
func (e *env) addPod(target, local string) {
	e.podMu.Lock()
	defer e.podMu.Unlock()
	if e.pods == nil {
		e.pods = map[string]string{}
	}
	e.pods[target] = local
}

// podsDialled are the pod targets the edges were asked for.
func (e *env) podsDialled() []string {
	e.podMu.Lock()
	defer e.podMu.Unlock()
	return slices.Clone(e.dialled)
}

// dialFor is a test edge's Dial: the kubelet at local, a pod from e.pods.
func (e *env) dialFor(local string) func(ctx context.Context, target tunnelwire.Target) (net.Conn, error) {
	return func(ctx context.Context, target tunnelwire.Target) (net.Conn, error) {
		addr := local
		if !target.IsKubelet() {
			e.podMu.Lock()
			e.dialled = append(e.dialled, target.String())
			a, ok := e.pods[target.String()]
			e.podMu.Unlock()
			if !ok {
				return nil, fmt.Errorf("%w: %s is not a pod on this node", tunnelwire.ErrDenied, target)
			}
			addr = a
		}
		var d net.Dialer
		return d.DialContext(ctx, "tcp", addr)
	}
}

func newEnv(t testing.TB, cfg Config) *env {
	t.Helper()
	return newEnvWithPKI(t, cfg, testenv.NewPKI(t), testenv.NewPKI(t), nil)
}

// newEnvWithPKI is newEnv with given CAs; before serving, setup (when not
// nil) may configure the server, e.g. for several replicas.
func newEnvWithPKI(t testing.TB, cfg Config, pki, apiPKI *testenv.PKI, setup func(*Server)) *env {
	t.Helper()
	e := &env{t: t, pki: pki, apiPKI: apiPKI}
	srv, err := New(cfg, hclog.NewNullLogger(), nil)
	if err != nil {
		t.Fatal(err)
	}
	e.srv = srv
	if setup != nil {
		setup(srv)
	}
	nodeLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	connLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.nodeAddr, e.connectAddr = nodeLn.Addr().String(), connLn.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		if err := srv.ServeNodes(ctx, nodeLn, NodeTLS(e.pki.Server, e.pki.Pool)); err != nil {
			t.Errorf("ServeNodes: %v", err)
		}
	}()
	go func() {
		defer wg.Done()
		if err := srv.ServeConnect(ctx, connLn, ConnectTLS(e.pki.Server, e.apiPKI.Pool)); err != nil {
			t.Errorf("ServeConnect: %v", err)
		}
	}()
	t.Cleanup(func() { cancel(); wg.Wait() })
	return e
}

// clientCert is a certificate from p with CN cn and clientAuth.
func clientCert(t testing.TB, p *testenv.PKI, cn string) tls.Certificate {
	t.Helper()
	key := testenv.NewKey(t)
	der := p.Sign(t, &x509.Certificate{
		Subject:     pkix.Name{CommonName: cn, Organization: []string{"system:nodes"}},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, &key.PublicKey)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// edge is one node's tunnel client: the real session serving code
// (tunnelwire.ServeNode) over a TLS connection with the node's certificate.
type edge struct {
	cancel context.CancelFunc
	done   chan struct{}
}

func (e *env) startEdge(cert tls.Certificate, local string, maxStreams int) *edge {
	e.t.Helper()
	conn, err := tls.Dial("tcp", e.nodeAddr, &tls.Config{
		RootCAs: e.pki.Pool, Certificates: []tls.Certificate{cert}, NextProtos: []string{tunnelwire.Protocol},
	})
	if err != nil {
		e.t.Fatalf("edge dial: %v", err)
	}
	sess, err := yamux.Server(conn, tunnelwire.YamuxConfig(hclog.NewNullLogger()))
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ed := &edge{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(ed.done)
		_ = tunnelwire.ServeNode(ctx, sess, tunnelwire.NodeOptions{
			Dial:       e.dialFor(local),
			MaxStreams: maxStreams, Logger: hclog.NewNullLogger(),
		})
	}()
	e.t.Cleanup(ed.stop)
	return ed
}

func (ed *edge) stop() { ed.cancel(); <-ed.done }

// node starts a fake kubelet answering with the node's name and an edge for
// it, and waits for the session.
func (e *env) node(name string) *edge {
	e.t.Helper()
	kubelet := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/big":
			_, _ = w.Write(bytes.Repeat([]byte("x"), 4<<20))
			return
		case "/huge": // more than every window and buffer on the way
			chunk := bytes.Repeat([]byte("y"), 1<<20)
			for range hugeMiB {
				if _, err := w.Write(chunk); err != nil {
					return
				}
			}
			return
		}
		fmt.Fprintf(w, "%s %s", name, r.URL.Path)
	}))
	e.t.Cleanup(kubelet.Close)
	ed := e.startEdge(clientCert(e.t, e.pki, "system:node:"+name), kubelet.Listener.Addr().String(), 256)
	e.waitConnected(name, true)
	return ed
}

func (e *env) waitConnected(node string, want bool) {
	e.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for e.srv.Connected(node) != want {
		if time.Now().After(deadline) {
			e.t.Fatalf("node %s connected = %v, want %v", node, !want, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// connect sends CONNECT target as the API server would; it returns the
// connection (after a 200) and the status code.
func (e *env) connect(cert *tls.Certificate, target string) (net.Conn, *bufio.Reader, int, error) {
	cfg := &tls.Config{RootCAs: e.pki.Pool}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	conn, err := tls.Dial("tcp", e.connectAddr, cfg)
	if err != nil {
		return nil, nil, 0, err
	}
	fmt.Fprintf(conn, "CONNECT %s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", target) // as kube-apiserver writes it
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		_ = conn.Close()
		return nil, nil, 0, err
	}
	if resp.StatusCode != http.StatusOK {
		_ = conn.Close()
		return nil, nil, resp.StatusCode, nil
	}
	return conn, br, resp.StatusCode, nil
}

func (e *env) apiCert() *tls.Certificate {
	c := clientCert(e.t, e.apiPKI, "kube-apiserver-egress")
	return &c
}

// get does CONNECT target then GET path through it.
func (e *env) get(target, path string) (string, error) {
	conn, br, code, err := e.connect(e.apiCert(), target)
	if err != nil {
		return "", err
	}
	if code != http.StatusOK {
		return "", fmt.Errorf("CONNECT %s: status %d", target, code)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", path, target)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

func TestConnectReachesEachNodesKubelet(t *testing.T) {
	e := newEnv(t, DefaultConfig())
	e.node("node-a")
	e.node("node-b")
	for _, tc := range []struct{ target, path, want string }{
		{"node-a:10250", "/healthz", "node-a /healthz"},
		{"node-b:10250", "/containerLogs/default/p/c", "node-b /containerLogs/default/p/c"},
	} {
		got, err := e.get(tc.target, tc.path)
		if err != nil || got != tc.want {
			t.Errorf("GET %s via %s = %q, %v; want %q", tc.path, tc.target, got, err, tc.want)
		}
	}
}

func TestManyConcurrentStreams(t *testing.T) {
	e := newEnv(t, DefaultConfig())
	e.node("node-a")
	const n = 40
	var wg sync.WaitGroup
	errs := make(chan error, n+1)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			path := fmt.Sprintf("/pods/%d", i)
			got, err := e.get("node-a:10250", path)
			if err != nil || got != "node-a "+path {
				errs <- fmt.Errorf("stream %d: %q, %v", i, got, err)
			}
		}()
	}
	// One large answer beside the small ones: flow control carries it whole.
	wg.Add(1)
	go func() {
		defer wg.Done()
		got, err := e.get("node-a:10250", "/big")
		if err != nil || len(got) != 4<<20 {
			errs <- fmt.Errorf("big: %d bytes, %v", len(got), err)
		}
	}()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for e.srv.Streams("node-a") != 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if s := e.srv.Streams("node-a"); s != 0 {
		t.Errorf("streams left open: %d", s)
	}
}

const hugeMiB = 32

// A client that stops reading holds up its own stream only: flow control
// stops the node's reads for it, and other streams go on.
func TestStalledStreamDoesNotBlockOthers(t *testing.T) {
	e := newEnv(t, DefaultConfig())
	e.node("node-a")
	conn, br, code, err := e.connect(e.apiCert(), "node-a:10250")
	if err != nil || code != http.StatusOK {
		t.Fatalf("CONNECT: %d, %v", code, err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET /huge HTTP/1.1\r\nHost: node-a\r\nConnection: close\r\n\r\n")
	time.Sleep(300 * time.Millisecond) // the windows fill; nothing reads

	start := time.Now()
	for i := range 5 {
		got, err := e.get("node-a:10250", "/healthz")
		if err != nil || got != "node-a /healthz" {
			t.Fatalf("request %d beside the stalled stream: %q, %v", i, got, err)
		}
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("5 requests beside a stalled stream took %v", d)
	}
	// The stalled stream lost nothing.
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	n, err := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil || n != hugeMiB<<20 {
		t.Fatalf("stalled stream delivered %d bytes, %v; want %d", n, err, hugeMiB<<20)
	}
}

func TestRefusedConnects(t *testing.T) {
	e := newEnv(t, DefaultConfig())
	e.node("node-a")
	e.srv.SetNodeAddresses("node-a", []string{"10.1.2.3"})
	for _, tc := range []struct {
		name, target string
		want         int
	}{
		{"other port", "node-a:22", http.StatusForbidden},
		{"not a port", "node-a:kubelet", http.StatusBadRequest},
		{"unknown node", "node-z:10250", http.StatusServiceUnavailable},
		{"not a node name", "Node_A:10250", http.StatusBadGateway},
		{"known address", "10.1.2.3:10250", http.StatusOK},
		{"unknown address", "10.9.9.9:10250", http.StatusBadGateway},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn, _, code, err := e.connect(e.apiCert(), tc.target)
			if err != nil {
				t.Fatal(err)
			}
			if conn != nil {
				conn.Close()
			}
			if code != tc.want {
				t.Errorf("CONNECT %s = %d, want %d", tc.target, code, tc.want)
			}
		})
	}
	got, err := e.get("10.1.2.3:10250", "/healthz")
	if err != nil || got != "node-a /healthz" {
		t.Errorf("by address: %q, %v", got, err)
	}
}

func TestNonConnectMethodRefused(t *testing.T) {
	e := newEnv(t, DefaultConfig())
	c := e.apiCert()
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{
		RootCAs: e.pki.Pool, Certificates: []tls.Certificate{*c}}}}
	resp, err := client.Get("https://" + e.connectAddr + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET = %d, want 405", resp.StatusCode)
	}
}

func TestConnectClientNeedsTheRightCertificate(t *testing.T) {
	e := newEnv(t, DefaultConfig())
	e.node("node-a")
	nodeCert := clientCert(t, e.pki, "system:node:node-a") // the cloud CA, not the API server's
	for _, tc := range []struct {
		name string
		cert *tls.Certificate
	}{
		{"no certificate", nil},
		{"certificate from another CA", &nodeCert},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn, _, code, err := e.connect(tc.cert, "node-a:10250")
			if conn != nil {
				conn.Close()
			}
			if err == nil {
				t.Fatalf("CONNECT succeeded with status %d", code)
			}
		})
	}
}

func TestNodeSessionsOnlyForTheirOwnName(t *testing.T) {
	e := newEnv(t, DefaultConfig())
	e.node("node-a")
	// A's session serves only A: B has no path although A is connected.
	if _, _, code, err := e.connect(e.apiCert(), "node-b:10250"); err != nil || code != http.StatusServiceUnavailable {
		t.Fatalf("CONNECT node-b through A's link: %d, %v; want 503", code, err)
	}
	other := testenv.NewPKI(t)
	for _, tc := range []struct {
		name  string
		cert  tls.Certificate
		alpn  []string
		claim string
	}{
		{"not a node certificate", clientCert(t, e.pki, "admin"), []string{tunnelwire.Protocol}, "admin"},
		{"bad node name", clientCert(t, e.pki, "system:node:Node_B"), []string{tunnelwire.Protocol}, "Node_B"},
		{"another CA", clientCert(t, other, "system:node:node-b"), []string{tunnelwire.Protocol}, "node-b"},
		{"no ALPN", clientCert(t, e.pki, "system:node:node-b"), nil, "node-b"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := tls.Dial("tcp", e.nodeAddr, &tls.Config{RootCAs: e.pki.Pool,
				Certificates: []tls.Certificate{tc.cert}, NextProtos: tc.alpn})
			if err == nil {
				// TLS 1.3 reports a refused client certificate on the first read.
				_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
				_, err = conn.Read(make([]byte, 1))
				conn.Close()
			}
			if err == nil {
				t.Fatal("session was not closed")
			}
			if e.srv.Connected(tc.claim) {
				t.Errorf("%s registered", tc.claim)
			}
		})
	}
}

// holdingKubelet is a local TCP service that echoes and keeps connections
// open.
func holdingKubelet(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	return ln.Addr().String()
}

// echo checks one round trip through an established CONNECT.
func echo(t *testing.T, conn net.Conn, br *bufio.Reader, msg string) {
	t.Helper()
	if _, err := io.WriteString(conn, msg); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, len(msg))
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(br, buf); err != nil || string(buf) != msg {
		t.Fatalf("echo = %q, %v", buf, err)
	}
	_ = conn.SetReadDeadline(time.Time{})
}

func TestNodeDisconnectClosesStreams(t *testing.T) {
	e := newEnv(t, DefaultConfig())
	ed := e.startEdge(clientCert(t, e.pki, "system:node:node-a"), holdingKubelet(t), 16)
	e.waitConnected("node-a", true)
	conn, br, code, err := e.connect(e.apiCert(), "node-a:10250")
	if err != nil || code != http.StatusOK {
		t.Fatalf("CONNECT: %d, %v", code, err)
	}
	defer conn.Close()
	echo(t, conn, br, "hello")
	ed.stop()
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := br.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Fatalf("read after node disconnect = %d, %v; want the connection closed", n, err)
	}
	e.waitConnected("node-a", false)
	if _, _, code, _ := e.connect(e.apiCert(), "node-a:10250"); code != http.StatusServiceUnavailable {
		t.Errorf("CONNECT to a disconnected node = %d, want 503", code)
	}
}

func TestClientDisconnectClosesStream(t *testing.T) {
	e := newEnv(t, DefaultConfig())
	e.startEdge(clientCert(t, e.pki, "system:node:node-a"), holdingKubelet(t), 16)
	e.waitConnected("node-a", true)
	conn, br, _, err := e.connect(e.apiCert(), "node-a:10250")
	if err != nil {
		t.Fatal(err)
	}
	echo(t, conn, br, "x")
	if s := e.srv.Streams("node-a"); s != 1 {
		t.Fatalf("streams = %d, want 1", s)
	}
	conn.Close()
	deadline := time.Now().Add(5 * time.Second)
	for e.srv.Streams("node-a") != 0 {
		if time.Now().After(deadline) {
			t.Fatal("stream still open after the client went away")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestStreamLimitPerNode(t *testing.T) {
	cfg := DefaultConfig()
	cfg.MaxStreamsPerNode = 2
	e := newEnv(t, cfg)
	e.startEdge(clientCert(t, e.pki, "system:node:node-a"), holdingKubelet(t), 16)
	e.waitConnected("node-a", true)
	var open []net.Conn
	for i := range 2 {
		conn, br, code, err := e.connect(e.apiCert(), "node-a:10250")
		if err != nil || code != http.StatusOK {
			t.Fatalf("stream %d: %d, %v", i, code, err)
		}
		echo(t, conn, br, "hi")
		open = append(open, conn)
	}
	if _, _, code, _ := e.connect(e.apiCert(), "node-a:10250"); code != http.StatusTooManyRequests {
		t.Fatalf("third stream = %d, want 429", code)
	}
	open[0].Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		conn, _, code, err := e.connect(e.apiCert(), "node-a:10250")
		if err == nil && code == http.StatusOK {
			conn.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after closing one, CONNECT = %d, %v", code, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	open[1].Close()
}

func TestEdgeRefusesWhenLocalServiceIsDown(t *testing.T) {
	e := newEnv(t, DefaultConfig())
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := ln.Addr().String()
	ln.Close()
	e.startEdge(clientCert(t, e.pki, "system:node:node-a"), dead, 16)
	e.waitConnected("node-a", true)
	if _, _, code, err := e.connect(e.apiCert(), "node-a:10250"); err != nil || code != http.StatusBadGateway {
		t.Fatalf("CONNECT with the kubelet down = %d, %v; want 502", code, err)
	}
}

func TestNewerSessionReplacesOlder(t *testing.T) {
	e := newEnv(t, DefaultConfig())
	first := e.startEdge(clientCert(t, e.pki, "system:node:node-a"), holdingKubelet(t), 16)
	e.waitConnected("node-a", true)
	e.node("node-a") // a second session, with an HTTP kubelet
	select {
	case <-first.done:
	case <-time.After(5 * time.Second):
		t.Fatal("the older session was not closed")
	}
	got, err := e.get("node-a:10250", "/healthz")
	if err != nil || got != "node-a /healthz" {
		t.Errorf("through the newer session: %q, %v", got, err)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{MaxStreamsPerNode: 0, AllowedPorts: []int{1}}, "max_streams_per_node"},
		{Config{MaxStreamsPerNode: 1}, "allowed_ports is empty"},
		{Config{MaxStreamsPerNode: 1, AllowedPorts: []int{70000}}, "70000 is not a port"},
	} {
		if err := tc.cfg.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Validate(%+v) = %v, want %q", tc.cfg, err, tc.want)
		}
	}
	if err := DefaultConfig().Validate(); err != nil {
		t.Error(err)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func TestNodeAddresses(t *testing.T) {
	srv, err := New(DefaultConfig(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	type step struct {
		node  string
		addrs []string
	}
	for _, tc := range []struct {
		name  string
		steps []step
		host  string
		want  string // "" means refused
	}{
		{"internal IP", []step{{"a", []string{"10.0.0.1"}}}, "10.0.0.1", "a"},
		{"unknown IP", []step{{"a", []string{"10.0.0.1"}}}, "10.0.0.2", ""},
		{"IPv6 in another spelling", []step{{"a", []string{"fd00::0001"}}}, "fd00::1", "a"},
		{"claimed twice", []step{{"a", []string{"10.0.0.1"}}, {"b", []string{"10.0.0.1"}}}, "10.0.0.1", ""},
		{"the other claim withdrawn", []step{{"a", []string{"10.0.0.1"}}, {"b", []string{"10.0.0.1"}}, {"b", nil}}, "10.0.0.1", "a"},
		{"moved", []step{{"a", []string{"10.0.0.1"}}, {"a", []string{"10.0.0.9"}}}, "10.0.0.1", ""},
		{"a name is never an address", []step{{"a", []string{"b", "10.0.0.1"}}}, "b", "b"},
		{"node name", nil, "node-a", "node-a"},
		{"not a name", nil, "Node_A", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, n := range []string{"a", "b"} {
				srv.SetNodeAddresses(n, nil)
			}
			for _, st := range tc.steps {
				srv.SetNodeAddresses(st.node, st.addrs)
			}
			if got, _ := srv.resolve(tc.host); got != tc.want {
				t.Errorf("resolve(%q) = %q, want %q", tc.host, got, tc.want)
			}
		})
	}
	srv.SetNodeAddresses("a", nil)
	srv.SetNodeAddresses("b", nil)
	if len(srv.addrOwners) != 0 || len(srv.nodeAddrs) != 0 {
		t.Errorf("left behind: %v %v", srv.addrOwners, srv.nodeAddrs)
	}
}

func TestWatchNodeAddresses(t *testing.T) {
	e := newEnv(t, DefaultConfig())
	e.node("node-a")
	client := fake.NewClientset(&v1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-a"},
		Status: v1.NodeStatus{Addresses: []v1.NodeAddress{{Type: v1.NodeInternalIP, Address: "10.1.2.3"}, {Type: v1.NodeHostName, Address: "node-a"}}}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.srv.WatchNodeAddresses(ctx, client) }()
	defer func() { cancel(); <-done }()

	status := func() int {
		conn, _, code, err := e.connect(e.apiCert(), "10.1.2.3:10250")
		if err != nil {
			t.Fatal(err)
		}
		if conn != nil {
			conn.Close()
		}
		return code
	}
	waitStatus := func(want int) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for status() != want {
			if time.Now().After(deadline) {
				t.Fatalf("CONNECT 10.1.2.3:10250 never answered %d", want)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitStatus(http.StatusOK)
	got, err := e.get("10.1.2.3:10250", "/healthz")
	if err != nil || got != "node-a /healthz" {
		t.Fatalf("by InternalIP: %q, %v", got, err)
	}
	// Another node listing the same address makes it ambiguous.
	other := &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-b"},
		Status: v1.NodeStatus{Addresses: []v1.NodeAddress{{Type: v1.NodeInternalIP, Address: "10.1.2.3"}}}}
	if _, err := client.CoreV1().Nodes().Create(ctx, other, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitStatus(http.StatusBadGateway)
	if err := client.CoreV1().Nodes().Delete(ctx, "node-b", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitStatus(http.StatusOK)
}

// BenchmarkStreamThroughput: bytes from the node's kubelet to the CONNECT
// client through one stream (TLS on both legs, yamux in between).
func BenchmarkStreamThroughput(b *testing.B) {
	e := newEnv(b, DefaultConfig())
	e.node("node-a")
	b.SetBytes(hugeMiB << 20)
	b.ResetTimer()
	for range b.N {
		got, err := e.get("node-a:10250", "/huge")
		if err != nil || len(got) != hugeMiB<<20 {
			b.Fatalf("%d bytes, %v", len(got), err)
		}
	}
}

// BenchmarkConnectRoundTrip: a new CONNECT (TLS handshake with the proxy,
// stream open, the node's dial and OK) plus one small HTTP exchange.
func BenchmarkConnectRoundTrip(b *testing.B) {
	e := newEnv(b, DefaultConfig())
	e.node("node-a")
	cert := e.apiCert()
	b.ResetTimer()
	for range b.N {
		conn, br, code, err := e.connect(cert, "node-a:10250")
		if err != nil || code != http.StatusOK {
			b.Fatalf("%d, %v", code, err)
		}
		fmt.Fprintf(conn, "GET /healthz HTTP/1.1\r\nHost: node-a\r\nConnection: close\r\n\r\n")
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		conn.Close()
	}
}

// The CONNECT proxy on a unix socket: no TLS, the file mode guards it. A TCP
// listener without TLS is refused.
func TestConnectOverUnixSocket(t *testing.T) {
	e := newEnv(t, DefaultConfig())
	e.node("node-a")
	sock := filepath.Join(t.TempDir(), "tunnel.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.srv.ServeConnect(ctx, ln, nil) }()
	defer func() { cancel(); <-done }()

	conn, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "CONNECT node-a:10250 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("CONNECT over the socket: %v, %v", resp, err)
	}
	fmt.Fprintf(conn, "GET /healthz HTTP/1.1\r\nHost: node-a\r\nConnection: close\r\n\r\n")
	resp, err = http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "node-a /healthz" {
		t.Fatalf("body %q", body)
	}

	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer tcp.Close()
	if err := e.srv.ServeConnect(ctx, tcp, nil); err == nil || !strings.Contains(err.Error(), "needs TLS") {
		t.Fatalf("ServeConnect on TCP without TLS: %v", err)
	}
	if err := e.srv.ServeNodes(ctx, tcp, &tls.Config{}); err == nil {
		t.Fatal("ServeNodes without client certificates accepted")
	}
}

// direct_dial: an IP address that is no node's is dialled by cloudhive (the
// API server's webhook calls); node names and node addresses still go
// through tunnels only.
func TestDirectDial(t *testing.T) {
	cfg := DefaultConfig()
	cfg.DirectDial = true
	e := newEnv(t, cfg)
	e.node("node-a")
	service := holdingKubelet(t) // an echo service on loopback, any port
	conn, br, code, err := e.connect(e.apiCert(), service)
	if err != nil || code != http.StatusOK {
		t.Fatalf("CONNECT %s: %d, %v", service, code, err)
	}
	echo(t, conn, br, "webhook")
	conn.Close()

	e.srv.SetNodeAddresses("node-a", []string{"127.0.0.1"})
	e.srv.SetNodeAddresses("node-b", []string{"127.0.0.1"}) // claimed twice: nobody's, and not dialled
	for _, tc := range []struct {
		target string
		want   int
	}{
		{service, http.StatusBadGateway},           // an ambiguous node address, any port: not dialled
		{"127.0.0.1:10250", http.StatusBadGateway}, // an ambiguous node address
		{"node-a:22", http.StatusForbidden},
		{"node-z:10250", http.StatusServiceUnavailable},
	} {
		if _, _, code, err := e.connect(e.apiCert(), tc.target); err != nil || code != tc.want {
			t.Errorf("CONNECT %s = %d, %v; want %d", tc.target, code, err, tc.want)
		}
	}
	got, err := e.get("node-a:10250", "/healthz")
	if err != nil || got != "node-a /healthz" {
		t.Errorf("node through its tunnel: %q, %v", got, err)
	}
}
