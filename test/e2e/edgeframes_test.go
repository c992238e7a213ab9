//go:build e2e

package e2e

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/zclconf/go-cty/cty"

	"github.com/edgehive/edgehive/internal/e2eenv"
)

// fakeCloudhub is a websocket server with mTLS, enough of cloudhub for the
// edge to connect to; the test writes whatever frames it likes.
type fakeCloudhub struct {
	addr  string
	conns chan *fakeConn
}

type fakeConn struct {
	node string
	conn *websocket.Conn
	p    *pinger
}

func startFakeCloudhub(t *testing.T, ca *e2eenv.CA, serving e2eenv.CertFiles) *fakeCloudhub {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(serving.CertFile, serving.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	f := &fakeCloudhub{conns: make(chan *fakeConn, 8)}
	up := websocket.Upgrader{}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		fc := &fakeConn{node: r.Header.Get("node_id"), conn: conn, p: newPinger(conn)}
		select {
		case f.conns <- fc:
		default:
			conn.Close()
		}
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12}
	srv.StartTLS()
	t.Cleanup(func() {
		for {
			select {
			case c := <-f.conns:
				c.conn.Close()
			default:
				srv.Close()
				return
			}
		}
	})
	f.addr = srv.Listener.Addr().String()
	return f
}

func (f *fakeCloudhub) next(t *testing.T, timeout time.Duration) *fakeConn {
	t.Helper()
	select {
	case c := <-f.conns:
		t.Cleanup(func() { c.conn.Close() })
		return c
	case <-time.After(timeout):
		t.Fatalf("the edge did not connect within %s", timeout)
		return nil
	}
}

// TestEdgeSurvivesBadFrames is the edge half of "an oversized or malformed
// frame does not crash either side": the whole edge host runs against a
// stand-in cloudhub that sends garbage. Malformed frames are dropped with
// the connection kept; an oversized frame is refused (the link is dropped
// and made again), and no plugin restarts.
func TestEdgeSurvivesBadFrames(t *testing.T) {
	// Not parallel: every edge here shares one containerd, and an edged
	// owns all the pods in it (it removes the others' sandboxes as orphans).
	ctrd := e2eenv.ContainerdFromEnv(t)
	dir := t.TempDir()
	ca, err := e2eenv.NewCA(dir, "cloud-ca")
	if err != nil {
		t.Fatal(err)
	}
	serving, err := ca.Issue(dir, "cloudhub", e2eenv.CertSpec{CommonName: "cloudhub", Server: true, IPs: []net.IP{net.ParseIP("127.0.0.1")}})
	if err != nil {
		t.Fatal(err)
	}
	fake := startFakeCloudhub(t, ca, serving)

	edge := e2eenv.NewEdge(t, e2eenv.BinDir(t), e2eenv.NodeName("frames"), ctrd)
	certs := filepath.Join(edge.DataDir, "certs")
	if err := os.MkdirAll(certs, 0o700); err != nil {
		t.Fatal(err)
	}
	node, err := ca.Issue(certs, "node", e2eenv.CertSpec{CommonName: "system:node:" + edge.Node, Organization: []string{"system:nodes"}, Client: true})
	if err != nil {
		t.Fatal(err)
	}
	const limit = 1 << 20
	cfg := e2eenv.JoinedConfig(edge.Node, edge.DataDir, fake.addr, "https://"+fake.addr, ca.CertFile, node.CertFile, node.KeyFile)
	if err := edge.WriteConfig(t, []byte(cfg), map[string]map[string]cty.Value{
		"edgehub": {"max_frame_bytes": cty.NumberIntVal(limit)},
	}); err != nil {
		t.Fatal(err)
	}
	edge.Start(t)

	c1 := fake.next(t, 60*time.Second)
	if c1.node != edge.Node {
		t.Errorf("node_id header %q, want %q", c1.node, edge.Node)
	}
	if err := c1.p.alive(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []struct {
		kind int
		data []byte
	}{
		{websocket.TextMessage, []byte("{not json")},
		{websocket.TextMessage, []byte(`{"header":42,"route":"x"}`)},
		{websocket.TextMessage, []byte(`{"header":{"msg_id":"m1"},"route":{"source":"x","group":"nonsense","operation":"insert","resource":"a/b/c"},"content":{}}`)},
		{websocket.BinaryMessage, []byte{0xff, 0xfe, 0x00, 0x01}},
	} {
		if err := c1.conn.WriteMessage(bad.kind, bad.data); err != nil {
			t.Fatalf("write %q: %v", bad.data, err)
		}
	}
	if err := c1.p.alive(10 * time.Second); err != nil {
		t.Fatalf("the edge dropped the link after malformed frames: %v", err)
	}

	// Over the limit: refused, the link is made again, nothing restarts.
	_ = c1.conn.SetWriteDeadline(time.Now().Add(20 * time.Second))
	_ = c1.conn.WriteMessage(websocket.TextMessage, bytes.Repeat([]byte("x"), 2*limit))
	if err := c1.p.alive(5 * time.Second); err == nil {
		t.Errorf("the edge kept a link that carried a %d-byte frame over its %d-byte limit", 2*limit, limit)
	}
	c2 := fake.next(t, 60*time.Second)
	if err := c2.p.alive(10 * time.Second); err != nil {
		t.Fatalf("after reconnecting: %v", err)
	}
	if exited, err := edge.Exited(); exited {
		t.Fatalf("edgehive exited: %v", err)
	}
	st, err := edge.Status(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(st) != 6 {
		t.Errorf("%d plugins in status, want 6: %+v", len(st), st)
	}
	for _, p := range st {
		if p.State != "running" || p.Restarts != 0 {
			t.Errorf("plugin %s: state %s, restarts %d; want running, 0", p.Name, p.State, p.Restarts)
		}
	}
}
