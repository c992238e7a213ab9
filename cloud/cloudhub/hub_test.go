package cloudhub_test

// Integration tests: cloudhub on loopback with real TLS and websockets, a
// node certificate obtained with edgehub's own Bootstrap and a cloudhive
// token, and a raw gorilla client speaking KubeEdge's protocol. Only the
// Kubernetes API is a fake clientset.

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/edgehive/edgehive/cloud/cloudhub"
	"github.com/edgehive/edgehive/cloud/nodelink"
	"github.com/edgehive/edgehive/internal/testenv"
	"github.com/edgehive/edgehive/plugins/edgehub"
	"github.com/edgehive/edgehive/sdk"
)

// recorder is a nodelink.Handler that records what it is told.
type recorder struct {
	mu     sync.Mutex
	events []string
	msgs   chan *sdk.Message
	change chan struct{}
}

var _ nodelink.Handler = (*recorder)(nil)

func newRecorder() *recorder {
	return &recorder{msgs: make(chan *sdk.Message, 100), change: make(chan struct{}, 100)}
}

func (r *recorder) HandleUpstream(_ context.Context, _ string, m *sdk.Message) { r.msgs <- m }
func (r *recorder) NodeConnected(_ context.Context, node string)               { r.add("connected:" + node) }
func (r *recorder) NodeDisconnected(node string)                               { r.add("disconnected:" + node) }

func (r *recorder) add(e string) {
	r.mu.Lock()
	r.events = append(r.events, e)
	r.mu.Unlock()
	r.change <- struct{}{}
}

func (r *recorder) Events() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.events...)
}

// waitEvents waits until the recorded events equal want.
func (r *recorder) waitEvents(t *testing.T, want ...string) {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		if strings.Join(r.Events(), ",") == strings.Join(want, ",") {
			return
		}
		select {
		case <-r.change:
		case <-deadline:
			t.Fatalf("events %v, want %v", r.Events(), want)
		}
	}
}

type env struct {
	t        *testing.T
	client   *fake.Clientset
	hub      *cloudhub.Hub
	handler  *recorder
	reg      *prometheus.Registry
	ca       *cloudhub.CA
	token    string
	wsAddr   string
	certsURL string
	dir      string
}

const clusterCAPEM = "-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n"

func newEnv(t *testing.T, tune func(*cloudhub.Config)) *env {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	client := fake.NewClientset()
	secrets := cloudhub.Secrets{Client: client, Namespace: "kubeedge"}
	now := time.Now()
	ca, err := secrets.CA(ctx, now)
	if err != nil {
		t.Fatal(err)
	}
	server, _, err := secrets.ServerCert(ctx, ca, []net.IP{net.ParseIP("127.0.0.1")}, nil, now)
	if err != nil {
		t.Fatal(err)
	}
	token, err := secrets.Token(ctx, ca, cloudhub.DefaultTokenTTL, now)
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	metrics := cloudhub.NewMetrics(reg)
	cfg := cloudhub.DefaultConfig()
	cfg.ClusterCA = []byte(clusterCAPEM)
	if tune != nil {
		tune(&cfg)
	}
	hub, err := cloudhub.New(cfg, cloudhub.ServerTLS(server, ca.Pool()), testenvLogger(t), metrics)
	if err != nil {
		t.Fatal(err)
	}
	certs, err := cloudhub.NewCertServer(cloudhub.CertServerOptions{CA: ca, Server: server, Client: client, Metrics: metrics})
	if err != nil {
		t.Fatal(err)
	}
	wsLn, err := cloudhub.Listen(ctx, "127.0.0.1:0", false)
	if err != nil {
		t.Fatal(err)
	}
	bsLn, err := cloudhub.Listen(ctx, "127.0.0.1:0", false)
	if err != nil {
		t.Fatal(err)
	}
	rec := newRecorder()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		if err := hub.Serve(ctx, wsLn, rec); err != nil {
			t.Errorf("hub: %v", err)
		}
	}()
	go func() {
		defer wg.Done()
		if err := certs.Serve(ctx, bsLn); err != nil {
			t.Errorf("certs: %v", err)
		}
	}()
	t.Cleanup(func() { cancel(); wg.Wait() })
	return &env{t: t, client: client, hub: hub, handler: rec, reg: reg, ca: ca, token: token,
		wsAddr: wsLn.Addr().String(), certsURL: "https://" + bsLn.Addr().String(), dir: t.TempDir()}
}

// nodeFiles are a node's bootstrapped credentials.
type nodeFiles struct{ ca, cert, key string }

// bootstrap gets a node certificate the way the edge does.
func (e *env) bootstrap(node string) nodeFiles {
	e.t.Helper()
	d := filepath.Join(e.dir, node)
	f := nodeFiles{ca: filepath.Join(d, "ca.crt"), cert: filepath.Join(d, "node.crt"), key: filepath.Join(d, "node.key")}
	if err := edgehub.Bootstrap(context.Background(), e.certsURL, e.token, node, f.ca, f.cert, f.key); err != nil {
		e.t.Fatalf("bootstrap %s: %v", node, err)
	}
	return f
}

func (f nodeFiles) tls(t *testing.T) *tls.Config {
	t.Helper()
	pair, err := tls.LoadX509KeyPair(f.cert, f.key)
	if err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(f.ca)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	return &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool, Certificates: []tls.Certificate{pair}}
}

// dial connects as node_id node with tlsCfg, as edgehub does.
func (e *env) dial(node string, tlsCfg *tls.Config) (*websocket.Conn, *http.Response, error) {
	d := websocket.Dialer{TLSClientConfig: tlsCfg, HandshakeTimeout: 5 * time.Second}
	h := http.Header{}
	h.Set("node_id", node)
	h.Set("project_id", "e632aba927ea4ac2b575ec1603d56f10")
	h.Set("ConnectionUse", "msg")
	conn, resp, err := d.Dial("wss://"+e.wsAddr+"/e632aba927ea4ac2b575ec1603d56f10/"+node+"/events", h)
	if err == nil {
		e.t.Cleanup(func() { _ = conn.Close() })
	}
	return conn, resp, err
}

// connect bootstraps node, connects and waits for the session.
func (e *env) connect(node string) *websocket.Conn {
	e.t.Helper()
	conn, _, err := e.dial(node, e.bootstrap(node).tls(e.t))
	if err != nil {
		e.t.Fatalf("dial %s: %v", node, err)
	}
	waitFor(e.t, func() bool { return e.hub.Connected(node) })
	return conn
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 5s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (e *env) metric(name string) float64 {
	e.t.Helper()
	families, err := e.reg.Gather()
	if err != nil {
		e.t.Fatal(err)
	}
	var sum float64
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			switch {
			case m.Counter != nil:
				sum += m.Counter.GetValue()
			case m.Gauge != nil:
				sum += m.Gauge.GetValue()
			}
		}
	}
	return sum
}

func send(t *testing.T, conn *websocket.Conn, m *sdk.Message) {
	t.Helper()
	data, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	if err := conn.WriteMessage(websocket.TextMessage, data); err != nil {
		t.Fatal(err)
	}
}

func recv(t *testing.T, conn *websocket.Conn, within time.Duration) *sdk.Message {
	t.Helper()
	_ = conn.SetReadDeadline(time.Now().Add(within))
	_, data, err := conn.ReadMessage()
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	var m sdk.Message
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatalf("frame %q: %v", data, err)
	}
	if strings.Contains(string(data), `"sync"`) {
		t.Fatalf("sync flag on the wire: %s", data)
	}
	return &m
}

// noFrame asserts nothing arrives for d.
func noFrame(t *testing.T, conn *websocket.Conn, d time.Duration) {
	t.Helper()
	_ = conn.SetReadDeadline(time.Now().Add(d))
	_, data, err := conn.ReadMessage()
	if err == nil {
		t.Fatalf("unexpected frame %s", data)
	}
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("read: %v, want a timeout", err)
	}
}

func keepalive() *sdk.Message {
	m := sdk.NewMessage("").BuildRouter("websocket", "resource", "node", "keepalive")
	_ = m.FillBody("ping")
	return m
}

func ack(of *sdk.Message) *sdk.Message {
	m := sdk.NewMessage(of.Header.ID).BuildRouter(of.Router.Source, of.Router.Group, of.Router.Resource, "response")
	_ = m.FillBody("OK")
	return m
}

func podMsg(node, name, rv string) *sdk.Message {
	m := sdk.NewMessage("").BuildRouter("edgecontroller", "resource", "node/"+node+"/default/pod/"+name, "insert")
	m.Header.ResourceVersion = rv
	m.Header.Sync = true
	_ = m.FillBody(map[string]any{"metadata": map[string]any{"name": name, "namespace": "default"}})
	return m
}

func TestSessionLifecycleAndUpstreamDispatch(t *testing.T) {
	e := newEnv(t, nil)
	conn := e.connect("edge-1")
	e.handler.waitEvents(t, "connected:edge-1")
	if got := e.metric("cloudhub_sessions"); got != 1 {
		t.Fatalf("sessions gauge %v", got)
	}

	// Keepalive, ACKs and errors are consumed; a message claiming a cloud
	// source is dropped; the rest reach the handler as received.
	send(t, conn, keepalive())
	send(t, conn, ack(podMsg("edge-1", "x", "1")))
	errMsg := sdk.NewMessage("p").BuildRouter("edged", "resource", "default/pod/x", "error")
	send(t, conn, errMsg)
	send(t, conn, sdk.NewMessage("").BuildRouter("edgecontroller", "resource", "default/pod/x", "update"))
	status := sdk.NewMessage("").BuildRouter("edged", "meta", "default/podpatch/nginx", "patch")
	_ = status.FillBody(`{"status":{}}`)
	send(t, conn, status)
	select {
	case got := <-e.handler.msgs:
		if got.Header.ID != status.Header.ID || got.Router.Resource != "default/podpatch/nginx" {
			t.Fatalf("handler got %s, want the pod patch with its wire resource", got)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("upstream message not delivered")
	}
	select {
	case got := <-e.handler.msgs:
		t.Fatalf("handler got %s, which cloudhub should have consumed", got)
	case <-time.After(100 * time.Millisecond):
	}
	if got := e.metric("cloudhub_frames_refused_total"); got != 1 {
		t.Fatalf("frames refused %v, want 1 (the cloud-source message)", got)
	}

	// k8s/ca.crt is answered with the cluster CA.
	q := sdk.NewMessage("").BuildRouter("edged", "meta", "k8s/ca.crt", "query")
	send(t, conn, q)
	resp := recv(t, conn, 5*time.Second)
	if resp.Header.ParentID != q.Header.ID || resp.Router.Operation != "response" || resp.ContentString() != clusterCAPEM {
		t.Fatalf("ca answer %s content %q", resp, resp.ContentString())
	}

	// Closing the connection ends the session.
	_ = conn.Close()
	e.handler.waitEvents(t, "connected:edge-1", "disconnected:edge-1")
	if e.hub.Connected("edge-1") {
		t.Fatal("still connected")
	}
	err := e.hub.Send(context.Background(), "edge-1", podMsg("edge-1", "p", "1"))
	if !errors.Is(err, nodelink.ErrNotConnected) {
		t.Fatalf("Send after disconnect: %v", err)
	}
}

func TestDownstreamStopAndWaitWithResend(t *testing.T) {
	e := newEnv(t, func(c *cloudhub.Config) { c.AckTimeout = 300 * time.Millisecond; c.AckRetries = 10 })
	conn := e.connect("edge-1")
	ctx := context.Background()

	first := podMsg("edge-1", "a", "10")
	noAck := sdk.NewMessage("").BuildRouter("edgecontroller", "resource", "node/edge-1/default/pod/b", "response")
	second := podMsg("edge-1", "c", "11")
	for _, m := range []*sdk.Message{first, noAck, second} {
		if err := e.hub.Send(ctx, "edge-1", m); err != nil {
			t.Fatal(err)
		}
	}
	got := recv(t, conn, 5*time.Second)
	if got.Header.ID != first.Header.ID || got.Router.Resource != "default/pod/a" || got.Header.ResourceVersion != "10" {
		t.Fatalf("first frame %s rv %q", got, got.Header.ResourceVersion)
	}
	// Unacknowledged: the same message again, and nothing behind it.
	again := recv(t, conn, 2*time.Second)
	if again.Header.ID != first.Header.ID {
		t.Fatalf("resend carries msg_id %s, want %s", again.Header.ID, first.Header.ID)
	}
	if e.metric("cloudhub_resends_total") < 1 {
		t.Fatal("resend not counted")
	}
	// A stray ACK for another message releases nothing.
	send(t, conn, ack(second))
	again = recv(t, conn, 2*time.Second)
	if again.Header.ID != first.Header.ID {
		t.Fatalf("after a stray ACK got %s", again)
	}
	send(t, conn, ack(first))
	// Then the rest in order; a message without resourceVersion needs no ACK.
	if m := recv(t, conn, 2*time.Second); m.Header.ID != noAck.Header.ID || m.Router.Resource != "default/pod/b" {
		t.Fatalf("got %s, want the no-ack message", m)
	}
	if m := recv(t, conn, 2*time.Second); m.Header.ID != second.Header.ID {
		t.Fatalf("got %s, want the second pod", m)
	}
	send(t, conn, ack(second))
	waitFor(t, func() bool { return e.metric("cloudhub_acks_total") == 2 })
	noFrame(t, conn, 500*time.Millisecond) // acknowledged: no more resends
}

func TestUnacknowledgedMessageEndsTheSession(t *testing.T) {
	e := newEnv(t, func(c *cloudhub.Config) { c.AckTimeout = 100 * time.Millisecond; c.AckRetries = 2 })
	conn := e.connect("edge-1")
	if err := e.hub.Send(context.Background(), "edge-1", podMsg("edge-1", "a", "1")); err != nil {
		t.Fatal(err)
	}
	frames := 0
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		_, _, err := conn.ReadMessage()
		if err != nil {
			if !websocket.IsCloseError(err, websocket.CloseNormalClosure) {
				t.Fatalf("read: %v, want a normal close", err)
			}
			break
		}
		frames++
	}
	if frames != 3 {
		t.Fatalf("%d frames, want the message and 2 resends", frames)
	}
	e.handler.waitEvents(t, "connected:edge-1", "disconnected:edge-1")
	if e.metric("cloudhub_ack_timeouts_total") != 1 {
		t.Fatal("ack timeout not counted")
	}
}

func TestSendBlocksOnAFullQueueUntilContextEnds(t *testing.T) {
	e := newEnv(t, func(c *cloudhub.Config) { c.QueueSize = 1; c.AckTimeout = time.Minute })
	conn := e.connect("edge-1")
	ctx := context.Background()
	// The first waits for its ACK in the writer, the second fills the queue.
	for i, rv := range []string{"1", "2"} {
		if err := e.hub.Send(ctx, "edge-1", podMsg("edge-1", "p"+rv, rv)); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
	}
	_ = recv(t, conn, 5*time.Second)
	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := e.hub.Send(short, "edge-1", podMsg("edge-1", "p3", "3"))
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) < 150*time.Millisecond {
		t.Fatalf("Send on a full queue: %v after %v", err, time.Since(start))
	}
	if got := e.metric("cloudhub_queue_depth"); got != 1 {
		t.Fatalf("queue depth %v, want 1", got)
	}
}

func TestKeepaliveTimeout(t *testing.T) {
	e := newEnv(t, func(c *cloudhub.Config) { c.KeepaliveTimeout = 400 * time.Millisecond })
	conn := e.connect("edge-1")
	// Keepalives every 100 ms hold the session past the timeout.
	for range 8 {
		send(t, conn, keepalive())
		time.Sleep(100 * time.Millisecond)
	}
	if !e.hub.Connected("edge-1") {
		t.Fatal("session ended although keepalives came")
	}
	// Other traffic does not count: silence ends it.
	start := time.Now()
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, _, err := conn.ReadMessage()
	if !websocket.IsCloseError(err, websocket.CloseNormalClosure) {
		t.Fatalf("read: %v, want the server's close", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("closed after %v", d)
	}
	e.handler.waitEvents(t, "connected:edge-1", "disconnected:edge-1")
}

func TestNewSessionReplacesTheOld(t *testing.T) {
	e := newEnv(t, nil)
	files := e.bootstrap("edge-1")
	old, _, err := e.dial("edge-1", files.tls(t))
	if err != nil {
		t.Fatal(err)
	}
	e.handler.waitEvents(t, "connected:edge-1")
	fresh, _, err := e.dial("edge-1", files.tls(t))
	if err != nil {
		t.Fatal(err)
	}
	e.handler.waitEvents(t, "connected:edge-1", "disconnected:edge-1", "connected:edge-1")
	_ = old.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, _, err := old.ReadMessage(); !websocket.IsCloseError(err, websocket.CloseNormalClosure) {
		t.Fatalf("old connection: %v, want closed", err)
	}
	if e.hub.Sessions() != 1 || e.metric("cloudhub_sessions") != 1 {
		t.Fatalf("sessions %d gauge %v", e.hub.Sessions(), e.metric("cloudhub_sessions"))
	}
	// Messages go to the new connection.
	m := sdk.NewMessage("").BuildRouter("edgecontroller", "resource", "default/configmap/c", "response")
	if err := e.hub.Send(context.Background(), "edge-1", m); err != nil {
		t.Fatal(err)
	}
	if got := recv(t, fresh, 5*time.Second); got.Header.ID != m.Header.ID {
		t.Fatalf("got %s", got)
	}
}

func TestBadFrames(t *testing.T) {
	e := newEnv(t, func(c *cloudhub.Config) { c.MaxFrameBytes = 4096 })
	conn := e.connect("edge-1")

	// Malformed frames are dropped; the session stays and works.
	for _, frame := range []string{"not json", `{"header":{}}`, `[1,2]`, `{"header":{"msg_id":5}}`} {
		if err := conn.WriteMessage(websocket.TextMessage, []byte(frame)); err != nil {
			t.Fatal(err)
		}
	}
	good := sdk.NewMessage("").BuildRouter("edged", "meta", "null/node/edge-1", "insert")
	send(t, conn, good)
	select {
	case got := <-e.handler.msgs:
		if got.Header.ID != good.Header.ID {
			t.Fatalf("got %s", got)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("session did not survive malformed frames")
	}
	if got := e.metric("cloudhub_frames_refused_total"); got != 4 {
		t.Fatalf("refused %v, want 4", got)
	}

	// An oversized frame closes that connection (1009) and nothing else.
	other := e.connect("edge-2")
	big := strings.Repeat("x", 64<<10)
	_ = conn.WriteMessage(websocket.TextMessage, []byte(`{"header":{"msg_id":"m"},"content":"`+big+`"}`))
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, _, err := conn.ReadMessage(); !websocket.IsCloseError(err, websocket.CloseMessageTooBig) {
		t.Fatalf("read after an oversized frame: %v, want close 1009", err)
	}
	waitFor(t, func() bool { return !e.hub.Connected("edge-1") })
	if !e.hub.Connected("edge-2") {
		t.Fatal("another node's session ended")
	}
	send(t, other, keepalive())
	q := sdk.NewMessage("").BuildRouter("edged", "meta", "k8s/ca.crt", "query")
	send(t, other, q)
	if got := recv(t, other, 5*time.Second); got.Header.ParentID != q.Header.ID {
		t.Fatalf("got %s", got)
	}
	// The node reconnects.
	e.connect("edge-1")
}

func TestConnectionsRefused(t *testing.T) {
	e := newEnv(t, func(c *cloudhub.Config) { c.NodeLimit = 1 })
	files := e.bootstrap("edge-1")

	// A client certificate from another CA fails the TLS handshake.
	foreign := testenv.NewPKI(t)
	key := testenv.NewKey(t)
	der := foreign.Sign(t, &x509.Certificate{Subject: pkix.Name{CommonName: "system:node:edge-1", Organization: []string{"system:nodes"}},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}, &key.PublicKey)
	foreignTLS := files.tls(t)
	foreignTLS.Certificates = []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}

	noCert := files.tls(t)
	noCert.Certificates = nil

	tests := []struct {
		name   string
		node   string
		tls    *tls.Config
		header func(http.Header)
		status int // 0: the handshake itself fails
	}{
		{"certificate from another CA", "edge-1", foreignTLS, nil, 0},
		{"no client certificate", "edge-1", noCert, nil, 0},
		{"CN of another node", "edge-2", files.tls(t), nil, http.StatusForbidden},
		{"node_id not a node name", "Edge/1", files.tls(t), nil, http.StatusBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conn, resp, err := e.dial(tt.node, tt.tls)
			if err == nil {
				_ = conn.Close()
				t.Fatal("connection accepted")
			}
			switch {
			case tt.status == 0 && resp != nil:
				t.Fatalf("got HTTP %d, want a failed handshake", resp.StatusCode)
			case tt.status != 0 && (resp == nil || resp.StatusCode != tt.status):
				t.Fatalf("err %v resp %v, want HTTP %d", err, resp, tt.status)
			}
		})
	}
	if e.hub.Sessions() != 0 {
		t.Fatal("a refused connection got a session")
	}

	// Past node_limit: 503; the same node may still replace its session.
	e.connect("edge-1")
	_, resp, err := e.dial("edge-3", e.bootstrap("edge-3").tls(t))
	if err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("over the limit: err %v resp %v", err, resp)
	}
	if _, _, err := e.dial("edge-1", files.tls(t)); err != nil {
		t.Fatalf("replacing at the limit: %v", err)
	}
	if e.metric("cloudhub_sessions_refused_total") < 3 {
		t.Fatalf("refusals counted %v", e.metric("cloudhub_sessions_refused_total"))
	}
}

func TestReusePortListeners(t *testing.T) {
	ctx := context.Background()
	a, err := cloudhub.Listen(ctx, "127.0.0.1:0", true)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := cloudhub.Listen(ctx, a.Addr().String(), true)
	if err != nil {
		t.Fatalf("second reuse_port listener on %s: %v", a.Addr(), err)
	}
	defer b.Close()
	if _, err := cloudhub.Listen(ctx, a.Addr().String(), false); err == nil {
		t.Fatal("a listener without reuse_port shared the address")
	}
}

// testenvLogger logs to stderr with CLOUDHUB_TEST_LOG=1, else nowhere.
func testenvLogger(t *testing.T) hclog.Logger {
	t.Helper()
	if os.Getenv("CLOUDHUB_TEST_LOG") == "" {
		return hclog.NewNullLogger()
	}
	return hclog.New(&hclog.LoggerOptions{Name: t.Name(), Level: hclog.Trace, Output: os.Stderr})
}

func TestPingIsAnsweredWithPong(t *testing.T) {
	e := newEnv(t, nil)
	conn := e.connect("edge-1")
	pong := make(chan string, 1)
	conn.SetPongHandler(func(data string) error { pong <- data; return nil })
	if err := conn.WriteControl(websocket.PingMessage, []byte("hello"), time.Now().Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(time.Second))
	_, _, _ = conn.ReadMessage() // runs the pong handler, then times out
	select {
	case got := <-pong:
		if got != "hello" {
			t.Fatalf("pong %q", got)
		}
	default:
		t.Fatal("no pong")
	}
}

// Two replicas share one address with SO_REUSEPORT and one set of secrets;
// stopping the one that serves the node moves the node to the other.
func TestNodeMovesToTheOtherReplica(t *testing.T) {
	ctx := context.Background()
	client := fake.NewClientset()
	secrets := cloudhub.Secrets{Client: client, Namespace: "kubeedge"}
	lo := []net.IP{net.ParseIP("127.0.0.1")}
	type replica struct {
		hub    *cloudhub.Hub
		events *recorder
		stop   context.CancelFunc
		done   chan struct{}
	}
	addr := "127.0.0.1:0"
	var replicas []*replica
	var caPool *x509.CertPool
	for range 2 {
		ca, err := secrets.CA(ctx, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		caPool = ca.Pool()
		server, _, err := secrets.ServerCert(ctx, ca, lo, nil, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		hub, err := cloudhub.New(cloudhub.DefaultConfig(), cloudhub.ServerTLS(server, ca.Pool()), testenvLogger(t), nil)
		if err != nil {
			t.Fatal(err)
		}
		ln, err := cloudhub.Listen(ctx, addr, true)
		if err != nil {
			t.Fatal(err)
		}
		addr = ln.Addr().String()
		rctx, stop := context.WithCancel(ctx)
		r := &replica{hub: hub, events: newRecorder(), stop: stop, done: make(chan struct{})}
		go func() {
			defer close(r.done)
			_ = hub.Serve(rctx, ln, r.events)
		}()
		t.Cleanup(func() { stop(); <-r.done })
		replicas = append(replicas, r)
	}

	// The replicas share the CA, so a certificate it signs is good for both.
	ca, err := secrets.CA(ctx, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	key := testenv.NewKey(t)
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: "system:node:edge-1", Organization: []string{"system:nodes"}}}, key)
	if err != nil {
		t.Fatal(err)
	}
	parsed, _ := x509.ParseCertificateRequest(csr)
	der, err := ca.SignNode(parsed, nil, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: caPool,
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
	e := &env{t: t, wsAddr: addr}

	conn, _, err := e.dial("edge-1", tlsCfg)
	if err != nil {
		t.Fatal(err)
	}
	var serving, other *replica
	waitFor(t, func() bool {
		switch {
		case replicas[0].hub.Connected("edge-1"):
			serving, other = replicas[0], replicas[1]
		case replicas[1].hub.Connected("edge-1"):
			serving, other = replicas[1], replicas[0]
		}
		return serving != nil
	})
	serving.stop()
	<-serving.done
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, _, err := conn.ReadMessage(); !websocket.IsCloseError(err, websocket.CloseGoingAway) {
		t.Fatalf("read: %v, want close 1001 from the stopped replica", err)
	}
	serving.events.waitEvents(t, "connected:edge-1", "disconnected:edge-1")
	if _, _, err := e.dial("edge-1", tlsCfg); err != nil {
		t.Fatalf("reconnect: %v", err)
	}
	waitFor(t, func() bool { return other.hub.Connected("edge-1") })
	other.events.waitEvents(t, "connected:edge-1")
}
