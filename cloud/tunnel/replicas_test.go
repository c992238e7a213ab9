package tunnel

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/edgehive/edgehive/internal/nodename"
	"github.com/edgehive/edgehive/internal/testenv"
)

func TestDecideRoute(t *testing.T) {
	live := holder{Identity: "b", PeerAddress: "127.0.0.1:10006", Alive: true}
	for _, tc := range []struct {
		name       string
		local      bool
		forwarded  bool
		replicasOn bool
		h          holder
		want       route
		reason     string
	}{
		{name: "session here", local: true, replicasOn: true, h: live, want: routeLocal},
		{name: "session here, forwarded request", local: true, forwarded: true, replicasOn: true, want: routeLocal},
		{name: "one replica, no session", want: routeRefuse, reason: "no tunnel session"},
		{name: "held by a live replica", replicasOn: true, h: live, want: routeForward},
		{name: "forwarded request is never forwarded again", forwarded: true, replicasOn: true, h: live, want: routeRefuse, reason: "never forwarded again"},
		{name: "no lease", replicasOn: true, want: routeRefuse, reason: "no replica holds"},
		{name: "lease names this replica", replicasOn: true, h: holder{Identity: "a", PeerAddress: "127.0.0.1:1", Alive: true}, want: routeRefuse, reason: "stale"},
		{name: "holder not live", replicasOn: true, h: holder{Identity: "b", PeerAddress: "127.0.0.1:1"}, want: routeRefuse, reason: "not live"},
		{name: "holder without address", replicasOn: true, h: holder{Identity: "b", Alive: true}, want: routeRefuse, reason: "no peer address"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, why := decideRoute(tc.local, tc.forwarded, tc.replicasOn, tc.h, "a")
			if got != tc.want || !strings.Contains(why, tc.reason) {
				t.Fatalf("route %v (%q), want %v (%q)", got, why, tc.want, tc.reason)
			}
		})
	}
}

func TestNodeLeaseName(t *testing.T) {
	long := strings.Repeat("a", 250)
	for _, tc := range []struct{ node, want string }{
		{"edge-1", "tunnel-edge-1"},
		{"edge.example.com", "tunnel-edge.example.com"},
		{long[:246], "tunnel-" + long[:246]},
	} {
		if got := NodeLeaseName(tc.node); got != tc.want {
			t.Errorf("NodeLeaseName(%q) = %q, want %q", tc.node, got, tc.want)
		}
	}
	h := NodeLeaseName(long)
	if !strings.HasPrefix(h, "tunnel-h-") || len(h) > maxObjectName || h == NodeLeaseName(long+"b") {
		t.Errorf("NodeLeaseName(250 chars) = %q: want a distinct tunnel-h-<hash> name", h)
	}
	for _, id := range []string{NewReplicaID(), NewReplicaID()} {
		if !nodename.Valid(id) {
			t.Errorf("NewReplicaID() = %q, not a DNS name", id)
		}
	}
	if NewReplicaID() == NewReplicaID() {
		t.Error("two replica ids are equal")
	}
}

func TestReplicaConfigValidate(t *testing.T) {
	client := fake.NewClientset()
	good := ReplicaConfig{Identity: "a-1", PeerAddress: "127.0.0.1:10006", Namespace: "kubeedge", Client: client}
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		edit func(*ReplicaConfig)
		want string
	}{
		{"identity", func(c *ReplicaConfig) { c.Identity = "A_1" }, "identity"},
		{"address", func(c *ReplicaConfig) { c.PeerAddress = "" }, "peer address"},
		{"namespace", func(c *ReplicaConfig) { c.Namespace = "" }, "namespace"},
		{"client", func(c *ReplicaConfig) { c.Client = nil }, "client"},
		{"lease", func(c *ReplicaConfig) { c.LeaseDuration = time.Second }, "shorter"},
	} {
		c := good
		tc.edit(&c)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error about %s", tc.name, err, tc.want)
		}
	}
}

// The peer TLS takes its replica identity from the server certificate and
// refuses one that a node could also hold.
func TestPeerTLSNeedsAServerCertificate(t *testing.T) {
	pki := testenv.NewPKI(t)
	if _, err := PeerServerTLS(pki.Server, pki.Pool); err != nil {
		t.Fatalf("cloudhive server certificate: %v", err)
	}
	for name, cert := range map[string]tls.Certificate{
		"node subject": clientCert(t, pki, "system:node:edge-1"),
		"no subject":   clientCert(t, pki, ""),
		"none":         {},
	} {
		if _, err := PeerServerTLS(cert, pki.Pool); err == nil {
			t.Errorf("%s: PeerServerTLS accepted it", name)
		}
		if _, err := PeerClientTLS(cert, pki.Pool); err == nil {
			t.Errorf("%s: PeerClientTLS accepted it", name)
		}
	}
}

// replica is one cloudhive replica's tunnel: the env's server plus Leases
// in the shared (fake) API and a peer endpoint.
type replica struct {
	*env
	id       string
	peerAddr string
	replicas *Replicas
	stop     func()
}

const testNamespace = "kubeedge"

// newReplica starts replica id on the shared CAs and API.
func newReplica(t *testing.T, id string, pki, apiPKI *testenv.PKI, client kubernetes.Interface) *replica {
	t.Helper()
	peerLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rs, err := NewReplicas(ReplicaConfig{Identity: id, PeerAddress: peerLn.Addr().String(), Namespace: testNamespace,
		Client: client, LeaseDuration: 3 * time.Second, RetryInterval: 50 * time.Millisecond}, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	dialTLS, err := PeerClientTLS(pki.Server, pki.Pool)
	if err != nil {
		t.Fatal(err)
	}
	e := newEnvWithPKI(t, DefaultConfig(), pki, apiPKI, func(s *Server) {
		if err := s.UseReplicas(rs, dialTLS); err != nil {
			t.Fatal(err)
		}
	})
	serverTLS, err := PeerServerTLS(pki.Server, pki.Pool)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		if err := rs.Run(ctx); err != nil {
			t.Errorf("replica %s: %v", id, err)
		}
	}()
	go func() {
		defer wg.Done()
		if err := e.srv.ServePeers(ctx, peerLn, serverTLS); err != nil {
			t.Errorf("peer endpoint %s: %v", id, err)
		}
	}()
	var once sync.Once
	r := &replica{env: e, id: id, peerAddr: peerLn.Addr().String(), replicas: rs,
		stop: func() { once.Do(func() { cancel(); wg.Wait() }) }}
	t.Cleanup(r.stop)
	return r
}

// waitHolder waits until r's Lease cache names want (or nobody, "") as
// node's live holder.
func (r *replica) waitHolder(node, want string) {
	r.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		h := r.replicas.lookup(node, time.Now())
		got := h.Identity
		if !h.Alive {
			got = ""
		}
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("replica %s sees %q holding %s (alive %v), want %q", r.id, h.Identity, node, h.Alive, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func nodeLease(t *testing.T, client kubernetes.Interface, node string) (*coordinationv1.Lease, bool) {
	t.Helper()
	l, err := client.CoordinationV1().Leases(testNamespace).Get(context.Background(), NodeLeaseName(node), metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, false
	}
	if err != nil {
		t.Fatal(err)
	}
	return l, true
}

// peerConnect sends CONNECT target to a replica's peer endpoint with cert;
// it returns the status, or an error when TLS refuses the certificate.
func peerConnect(t *testing.T, addr string, pool *x509.CertPool, cert tls.Certificate, target string) (int, error) {
	t.Helper()
	conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}})
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(conn, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target)
	resp, err := http.ReadResponse(bufio.NewReader(conn), &http.Request{Method: http.MethodConnect})
	if err != nil {
		return 0, err
	}
	return resp.StatusCode, nil
}

// A CONNECT at a replica without the node's session is forwarded to the
// replica holding it, found through the node's Lease; when the session
// ends, the Lease goes and the CONNECT gets 503.
func TestForwardToHolderReplica(t *testing.T) {
	pki, apiPKI := testenv.NewPKI(t), testenv.NewPKI(t)
	client := fake.NewClientset()
	a := newReplica(t, "a", pki, apiPKI, client)
	b := newReplica(t, "b", pki, apiPKI, client)

	edgeOnB := b.node("edge-1")
	a.waitHolder("edge-1", "b")
	l, ok := nodeLease(t, client, "edge-1")
	if !ok || *l.Spec.HolderIdentity != "b" || l.Annotations[AnnotationPeer] != b.peerAddr || l.Annotations[AnnotationNode] != "edge-1" {
		t.Fatalf("lease of edge-1: %+v", l)
	}
	for i := range 5 {
		body, err := a.get("edge-1:10250", "/healthz")
		if err != nil || body != "edge-1 /healthz" {
			t.Fatalf("CONNECT #%d at a for b's node: %q, %v", i, body, err)
		}
	}
	// A forwarded stream carries large answers too.
	body, err := a.get("edge-1:10250", "/big")
	if err != nil || len(body) != 4<<20 {
		t.Fatalf("4 MiB through a→b: %d bytes, %v", len(body), err)
	}
	if a.srv.Connected("edge-1") || b.srv.Streams("edge-1") != 0 {
		t.Fatalf("a connected %v, b streams %d", a.srv.Connected("edge-1"), b.srv.Streams("edge-1"))
	}

	// The session ends: b releases the Lease, a answers 503.
	edgeOnB.stop()
	b.waitConnected("edge-1", false)
	a.waitHolder("edge-1", "")
	if _, ok := nodeLease(t, client, "edge-1"); ok {
		t.Fatal("lease of edge-1 outlived its session")
	}
	start := time.Now()
	_, _, code, err := a.connect(a.apiCert(), "edge-1:10250")
	if err != nil || code != http.StatusServiceUnavailable || time.Since(start) > time.Second {
		t.Fatalf("CONNECT after the session ended: %d, %v in %v; want a quick 503", code, err, time.Since(start))
	}
}

// The node moves from b to a while b still has its old session: a takes
// the Lease, and b's old session ending leaves a's Lease alone.
func TestLeaseFollowsTheNewestSession(t *testing.T) {
	pki, apiPKI := testenv.NewPKI(t), testenv.NewPKI(t)
	client := fake.NewClientset()
	a := newReplica(t, "a", pki, apiPKI, client)
	b := newReplica(t, "b", pki, apiPKI, client)
	old := b.node("edge-1")
	b.waitHolder("edge-1", "b")
	a.node("edge-1")
	b.waitHolder("edge-1", "a")
	old.stop()
	b.waitConnected("edge-1", false)
	time.Sleep(200 * time.Millisecond) // b's release runs
	l, ok := nodeLease(t, client, "edge-1")
	if !ok || *l.Spec.HolderIdentity != "a" || *l.Spec.LeaseTransitions != 1 {
		t.Fatalf("lease after the move: %+v", l)
	}
	// b forwards to a now.
	if body, err := b.get("edge-1:10250", "/x"); err != nil || body != "edge-1 /x" {
		t.Fatalf("CONNECT at b after the move: %q, %v", body, err)
	}

	// a stops: it releases its Leases and its replica Lease.
	a.stop()
	if _, ok := nodeLease(t, client, "edge-1"); ok {
		t.Fatal("a's node lease outlived a")
	}
	if _, err := client.CoordinationV1().Leases(testNamespace).Get(context.Background(), replicaLeaseName("a"), metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("a's replica lease after a stopped: %v", err)
	}
}

// The peer endpoint takes only replicas: a node's certificate and the API
// server's egress certificate are refused, and what it gets is never
// forwarded again.
func TestPeerEndpointAuthAndLoopGuard(t *testing.T) {
	pki, apiPKI := testenv.NewPKI(t), testenv.NewPKI(t)
	client := fake.NewClientset()
	a := newReplica(t, "a", pki, apiPKI, client)
	b := newReplica(t, "b", pki, apiPKI, client)
	var hits atomic.Int64
	kubelet := holdingKubeletCounting(t, &hits)
	a.startEdge(clientCert(t, pki, "system:node:edge-2"), kubelet, 8)
	a.waitConnected("edge-2", true)
	b.waitHolder("edge-2", "a")

	// A node certificate from the cloud CA, even one with serverAuth and the
	// server's CN would need the certificate service to sign it; here: the
	// node's own, and one with serverAuth but a node's subject.
	nodeKey := testenv.NewKey(t)
	nodeServerAuth := tls.Certificate{Certificate: [][]byte{pki.Sign(t, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "system:node:edge-2", Organization: []string{"system:nodes"}},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}, &nodeKey.PublicKey)}, PrivateKey: nodeKey}
	for name, cert := range map[string]tls.Certificate{
		"node":               clientCert(t, pki, "system:node:edge-2"),
		"node with server":   nodeServerAuth,
		"egress client":      *a.apiCert(),
		"server of other CA": apiPKI.Server,
	} {
		if code, err := peerConnect(t, a.peerAddr, pki.Pool, cert, "edge-2:10250"); err == nil {
			t.Errorf("%s certificate at the peer endpoint: %d, want a TLS refusal", name, code)
		}
	}
	if code, err := peerConnect(t, a.peerAddr, pki.Pool, pki.Server, "edge-2:10250"); err != nil || code != http.StatusOK {
		t.Fatalf("replica certificate at a's peer endpoint: %d, %v; want 200", code, err)
	}
	// b holds no session of edge-2, and the Lease says a does: still b's
	// peer endpoint answers 503 and does not pass it on.
	before := hits.Load()
	code, err := peerConnect(t, b.peerAddr, pki.Pool, pki.Server, "edge-2:10250")
	if err != nil || code != http.StatusServiceUnavailable {
		t.Fatalf("CONNECT at b's peer endpoint for a's node: %d, %v; want 503", code, err)
	}
	time.Sleep(100 * time.Millisecond)
	if hits.Load() != before {
		t.Fatal("a forwarded CONNECT was forwarded again")
	}
}

// holdingKubeletCounting accepts connections and counts them.
func holdingKubeletCounting(t *testing.T, hits *atomic.Int64) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			hits.Add(1)
			go func() { defer c.Close(); _, _ = bufio.NewReader(c).ReadByte() }()
		}
	}()
	return ln.Addr().String()
}

// A holder whose replica Lease is stale, or whose peer endpoint does not
// answer, gets the API server a quick 503.
func TestForwardToDeadHolderIs503(t *testing.T) {
	pki, apiPKI := testenv.NewPKI(t), testenv.NewPKI(t)
	client := fake.NewClientset()
	a := newReplica(t, "a", pki, apiPKI, client)
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := closed.Addr().String()
	_ = closed.Close()
	ctx := context.Background()
	mkLease := func(name, role, holder, node string, renew time.Time) {
		secs := int32(3)
		rt := metav1.NewMicroTime(renew)
		l := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: testNamespace,
			Labels: map[string]string{LabelRole: role}, Annotations: map[string]string{AnnotationPeer: deadAddr, AnnotationNode: node}},
			Spec: coordinationv1.LeaseSpec{HolderIdentity: &holder, LeaseDurationSeconds: &secs, RenewTime: &rt}}
		if _, err := client.CoordinationV1().Leases(testNamespace).Create(ctx, l, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	mkLease(NodeLeaseName("stale"), roleNode, "gone", "stale", time.Now())
	mkLease(replicaLeaseName("gone"), roleReplica, "gone", "", time.Now().Add(-time.Minute))
	mkLease(NodeLeaseName("unreachable"), roleNode, "silent", "unreachable", time.Now())
	mkLease(replicaLeaseName("silent"), roleReplica, "silent", "", time.Now().Add(time.Hour))
	a.waitHolder("unreachable", "silent")
	for _, node := range []string{"stale", "unreachable", "nobody"} {
		start := time.Now()
		_, _, code, err := a.connect(a.apiCert(), node+":10250")
		if err != nil || code != http.StatusServiceUnavailable || time.Since(start) > peerDialTimeout {
			t.Errorf("CONNECT to %s: %d, %v after %v; want a quick 503", node, code, err, time.Since(start))
		}
	}
}
