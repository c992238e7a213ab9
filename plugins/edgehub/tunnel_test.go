package edgehub

import (
	"bufio"
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
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/edgehive/edgehive/cloud/tunnel"
	"github.com/edgehive/edgehive/internal/testenv"
	"github.com/edgehive/edgehive/internal/tunnelwire"
	"github.com/edgehive/edgehive/sdk/sdktest"
)

// tunnelCloud is cloudhive's real tunnel server on loopback, with an API
// server client CA of its own for the CONNECT side.
type tunnelCloud struct {
	srv         *tunnel.Server
	serials     chan string // of each node certificate a session presented
	nodeAddr    string
	connectAddr string
	apiCert     tls.Certificate
	pool        *x509.CertPool // verifies the server certificate
	stop        func()
}

func startTunnelCloud(t *testing.T, p *testPKI, nodeAddr string) *tunnelCloud {
	t.Helper()
	api := testenv.NewPKI(t)
	key := testenv.NewKey(t)
	apiDER := api.Sign(t, &x509.Certificate{Subject: pkix.Name{CommonName: "kube-apiserver"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}, &key.PublicKey)
	srv, err := tunnel.New(tunnel.DefaultConfig(), hclog.NewNullLogger(), nil)
	if err != nil {
		t.Fatal(err)
	}
	nodeLn, err := net.Listen("tcp", nodeAddr)
	if err != nil {
		t.Fatal(err)
	}
	connLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	serials := make(chan string, 16)
	nodeTLS := tunnel.NodeTLS(p.Server, p.Pool)
	nodeTLS.VerifyConnection = func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) > 0 {
			select {
			case serials <- cs.PeerCertificates[0].SerialNumber.String():
			default:
			}
		}
		return nil
	}
	go func() { defer wg.Done(); _ = srv.ServeNodes(ctx, nodeLn, nodeTLS) }()
	go func() { defer wg.Done(); _ = srv.ServeConnect(ctx, connLn, tunnel.ConnectTLS(p.Server, api.Pool)) }()
	var once sync.Once
	c := &tunnelCloud{srv: srv, serials: serials, nodeAddr: nodeLn.Addr().String(), connectAddr: connLn.Addr().String(),
		apiCert: tls.Certificate{Certificate: [][]byte{apiDER}, PrivateKey: key}, pool: p.Pool,
		stop: func() { once.Do(func() { cancel(); wg.Wait() }) }}
	t.Cleanup(c.stop)
	return c
}

func (c *tunnelCloud) waitConnected(t *testing.T, node string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !c.srv.Connected(node) {
		if time.Now().After(deadline) {
			t.Fatalf("no tunnel session from %s", node)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// get does what kube-apiserver does for a kubelet request through the
// egress selector: CONNECT node:10250 on the proxy, then HTTPS to the
// kubelet inside the tunnel.
func (c *tunnelCloud) get(t *testing.T, target, path string, kubeletCAs *x509.CertPool) (string, error) {
	t.Helper()
	conn, err := tls.Dial("tcp", c.connectAddr, &tls.Config{RootCAs: c.pool, Certificates: []tls.Certificate{c.apiCert}})
	if err != nil {
		return "", err
	}
	defer conn.Close()
	fmt.Fprintf(conn, "CONNECT %s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", target) // as kube-apiserver writes it
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("CONNECT %s: %s", target, resp.Status)
	}
	kc := tls.Client(&bufConn{Conn: conn, r: br}, &tls.Config{RootCAs: kubeletCAs, ServerName: "127.0.0.1"})
	fmt.Fprintf(kc, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", path, target)
	resp, err = http.ReadResponse(bufio.NewReader(kc), nil)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

type bufConn struct {
	net.Conn
	r *bufio.Reader
}

func (b *bufConn) Read(p []byte) (int, error) { return b.r.Read(p) }

// TestTunnelToLocalKubelet: the module's tunnel session reaches an HTTPS
// "kubelet" on the node from a CONNECT at the cloud, TLS end to end, and
// comes back after cloudhive's tunnel restarts.
func TestTunnelToLocalKubelet(t *testing.T) {
	p := newPKI(t)
	kubelet := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "kubelet of %s: %s", node, r.URL.Path)
	}))
	defer kubelet.Close()
	kubeletCAs := x509.NewCertPool()
	kubeletCAs.AddCert(kubelet.Certificate())

	tc := startTunnelCloud(t, p, "127.0.0.1:0")
	cloud := newFakeCloud(t, p)
	extra := fmt.Sprintf(`,"tunnel":{"enabled":true,"server":%q,"local_kubelet":%q}`, tc.nodeAddr, kubelet.Listener.Addr().String())
	startEdge(t, p, cloud, extra)
	tc.waitConnected(t, node)

	var wg sync.WaitGroup
	for i := range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			path := fmt.Sprintf("/containerLogs/default/pod-%d/c", i)
			got, err := tc.get(t, node+":10250", path, kubeletCAs)
			if want := "kubelet of " + node + ": " + path; err != nil || got != want {
				t.Errorf("GET %s = %q, %v; want %q", path, got, err, want)
			}
		}()
	}
	wg.Wait()

	// cloudhive restarts its tunnel on the same address: the module redials.
	addr := tc.nodeAddr
	tc.stop()
	tc2 := startTunnelCloud(t, p, addr)
	tc2.waitConnected(t, node)
	if got, err := tc2.get(t, node+":10250", "/healthz", kubeletCAs); err != nil || got != "kubelet of "+node+": /healthz" {
		t.Fatalf("after the restart: %q, %v", got, err)
	}
}

func TestTunnelOffByDefault(t *testing.T) {
	p := newPKI(t)
	tc := startTunnelCloud(t, p, "127.0.0.1:0")
	cloud := newFakeCloud(t, p)
	// The tunnel block names the server but does not enable it.
	startEdge(t, p, cloud, fmt.Sprintf(`,"tunnel":{"server":%q}`, tc.nodeAddr))
	cloud.accept(t) // the link is up
	time.Sleep(200 * time.Millisecond)
	if tc.srv.Connected(node) {
		t.Fatal("tunnel session without tunnel.enabled")
	}
}

// After a certificate renewal the tunnel session is redialled with the new
// certificate.
func TestTunnelRedialsAfterRotation(t *testing.T) {
	p := newPKI(t)
	cloud := newFakeCloud(t, p)
	rs := newRenewService(t, p, "unused")
	files := shortLivedFiles(t, p, 4*time.Second)
	old := leafOf(t, files)
	tc := startTunnelCloud(t, p, "127.0.0.1:0")
	m := New()
	m.minBackoff, m.maxBackoff = 20*time.Millisecond, 200*time.Millisecond
	m.rotateFraction = func() float64 { return 0.5 } // renew 2 s in
	cfg := fmt.Sprintf(`{"server":%q,"https_server":%q,"tls_ca_file":%q,"tls_cert_file":%q,"tls_private_key_file":%q,"tunnel":{"enabled":true,"server":%q}}`,
		cloud.addr(), rs.srv.URL, files.ca, files.cert, files.key, tc.nodeAddr)
	sdktest.New(t, m, sdktest.Options{ConfigJSON: cfg})

	next := func(what string) string {
		t.Helper()
		select {
		case s := <-tc.serials:
			return s
		case <-time.After(10 * time.Second):
			t.Fatalf("no tunnel session %s", what)
			return ""
		}
	}
	if s := next("at start"); s != old.SerialNumber.String() {
		t.Fatalf("first session with serial %s, want %s", s, old.SerialNumber)
	}
	s := next("after the renewal")
	renewed := leafOf(t, files)
	if renewed.SerialNumber.Cmp(old.SerialNumber) == 0 || s != renewed.SerialNumber.String() {
		t.Fatalf("tunnel redialled with serial %s; stored %s; old %s", s, renewed.SerialNumber, old.SerialNumber)
	}
	tc.waitConnected(t, node)
}

// TestPodTargetAllowed: only addresses in the node's pod ranges that are
// none of the host's own are dialled; everything else is denied.
func TestPodTargetAllowed(t *testing.T) {
	ranges := []netip.Prefix{netip.MustParsePrefix("10.88.0.0/16"), netip.MustParsePrefix("fd00:10::/64")}
	host := []net.Addr{
		&net.IPNet{IP: net.ParseIP("10.88.0.1"), Mask: net.CIDRMask(16, 32)}, // the pod bridge's gateway
		&net.IPNet{IP: net.ParseIP("192.168.1.20"), Mask: net.CIDRMask(24, 32)},
		&net.IPAddr{IP: net.ParseIP("fd00:10::1")},
		&net.IPNet{IP: net.ParseIP("127.0.0.1"), Mask: net.CIDRMask(8, 32)},
	}
	for _, tc := range []struct {
		ip     string
		ranges []netip.Prefix
		want   string // "" allowed
	}{
		{"10.88.0.5", ranges, ""},
		{"fd00:10::5", ranges, ""},
		{"::ffff:10.88.3.4", ranges, ""},
		{"10.88.0.5", nil, "pod_cidrs is empty"},
		{"10.88.0.1", ranges, "an address of this host"},
		{"fd00:10::1", ranges, "an address of this host"},
		{"192.168.1.20", ranges, "outside this node's pod ranges"},
		{"192.168.1.30", ranges, "outside this node's pod ranges"},
		{"10.89.0.5", ranges, "outside"},
		{"127.0.0.1", ranges, "not a pod address"},
		{"0.0.0.0", ranges, "not a pod address"},
		{"169.254.169.254", ranges, "not a pod address"},
		{"255.255.255.255", ranges, "not a pod address"},
		{"224.0.0.1", ranges, "not a pod address"},
		{"::1", ranges, "not a pod address"},
		{"fe80::1", ranges, "not a pod address"},
	} {
		err := podTargetAllowed(netip.MustParseAddr(tc.ip), tc.ranges, host)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v, want allowed", tc.ip, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: err = %v, want %q", tc.ip, err, tc.want)
		case tc.want != "" && !errors.Is(err, tunnelwire.ErrDenied):
			t.Errorf("%s: err = %v, not ErrDenied", tc.ip, err)
		}
	}
}

// connectRefusal sends CONNECT target to the cloud's proxy and returns the
// answer's status and body.
func (c *tunnelCloud) connectRefusal(t *testing.T, target string) (int, string) {
	t.Helper()
	conn, err := tls.Dial("tcp", c.connectAddr, &tls.Config{RootCAs: c.pool, Certificates: []tls.Certificate{c.apiCert}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "CONNECT %s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", target)
	resp, err := http.ReadResponse(bufio.NewReader(conn), &http.Request{Method: http.MethodConnect})
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
	return resp.StatusCode, string(body)
}

// hostAddress is a non-loopback address of this host, or "" when it has none.
func hostAddress(t *testing.T) string {
	t.Helper()
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && n.IP.IsGlobalUnicast() {
			return n.IP.String()
		}
	}
	return ""
}

// TestTunnelRefusesNonPodTargets: the real module refuses pod targets that
// are not in its pod ranges, are the host's own addresses or loopback, even
// when the cloud routes them to it (here: a pod index claiming them); the
// cloud answers 403 with the edge's reason. No test address is dialled.
func TestTunnelRefusesNonPodTargets(t *testing.T) {
	p := newPKI(t)
	tc := startTunnelCloud(t, p, "127.0.0.1:0")
	host := hostAddress(t)
	ips := []string{"127.0.0.1", "192.0.2.10"}
	if host != "" {
		ips = append(ips, host)
	}
	pods := fake.NewClientset()
	for i, ip := range ips {
		pod := &v1.Pod{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("p%d", i), Namespace: "default"},
			Spec: v1.PodSpec{NodeName: node}, Status: v1.PodStatus{Phase: v1.PodRunning, PodIPs: []v1.PodIP{{IP: ip}}}}
		if _, err := pods.CoreV1().Pods("default").Create(context.Background(), pod, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	watched := make(chan struct{})
	go func() { defer close(watched); _ = tc.srv.WatchPods(ctx, pods) }()
	defer func() { cancel(); <-watched }()

	cloud := newFakeCloud(t, p)
	podCIDRs := `["10.200.0.0/16"]`
	if host != "" {
		podCIDRs = fmt.Sprintf(`["10.200.0.0/16","%s/32"]`, host)
	}
	startEdge(t, p, cloud, fmt.Sprintf(`,"tunnel":{"enabled":true,"server":%q,"pod_cidrs":%s}`, tc.nodeAddr, podCIDRs))
	tc.waitConnected(t, node)

	want := map[string]string{
		"127.0.0.1:22":    "127.0.0.1 is not a pod address",
		"192.0.2.10:8080": "outside this node's pod ranges",
	}
	if host != "" {
		want[net.JoinHostPort(host, "39999")] = "an address of this host"
	}
	for target, reason := range want {
		deadline := time.Now().Add(5 * time.Second)
		for {
			code, body := tc.connectRefusal(t, target)
			if code == http.StatusForbidden && strings.Contains(body, reason) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("CONNECT %s = %d %q; want 403 with %q", target, code, body, reason)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	if host == "" {
		t.Log("no non-loopback address on this host: the host-address case was not run")
	}
}
