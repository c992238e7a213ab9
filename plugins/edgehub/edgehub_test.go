package edgehub

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/edgehive/edgehive/sdk"
	"github.com/edgehive/edgehive/sdk/sdktest"
)

const node = sdktest.DefaultNodeName

// startEdge starts the module against cloud with short timings.
func startEdge(t *testing.T, p *testPKI, cloud *fakeCloud, extra string) (*EdgeHub, *sdktest.Harness) {
	t.Helper()
	m := New()
	m.minBackoff, m.maxBackoff = 20*time.Millisecond, 200*time.Millisecond
	m.pingInterval, m.readTimeout = 100*time.Millisecond, 2*time.Second
	cfg := `{"server":"` + cloud.addr() + `","heartbeat":"150ms",` + p.nodeFiles(t, node) + extra + `}`
	h := sdktest.New(t, m, sdktest.Options{ConfigJSON: cfg})
	return m, h
}

func waitSent(t *testing.T, h *sdktest.Harness, what string, match func(sdktest.Sent) bool) sdktest.Sent {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, ok := h.WaitSent(ctx, match)
	if !ok {
		t.Fatalf("nothing sent: %s; sent %+v", what, h.Sent())
	}
	return s
}

// event matches the n-th connection event with content state to module.
func event(module, state string, n int) func(sdktest.Sent) bool {
	seen := 0
	return func(s sdktest.Sent) bool {
		if s.Kind != sdktest.KindModule || s.Target != module || s.Message.Router.Resource != resourceConnection ||
			s.Message.Router.Operation != opConnect || s.Message.Router.Source != Name || s.Message.ContentString() != state {
			return false
		}
		seen++
		return seen == n
	}
}

func countEvents(h *sdktest.Harness, module, state string) int {
	n := 0
	for _, s := range h.Sent() {
		if s.Kind == sdktest.KindModule && s.Target == module && s.Message.Router.Resource == resourceConnection && s.Message.ContentString() == state {
			n++
		}
	}
	return n
}

func cloudMsg(group, source, op, res, parent, rv string) *sdk.Message {
	m := sdk.NewMessage(parent).BuildRouter(source, group, res, op)
	m.Header.ResourceVersion = rv
	_ = m.FillBody(map[string]any{"metadata": map[string]string{"name": "x"}})
	return m
}

func delivered(kind, target, id string) func(sdktest.Sent) bool {
	return func(s sdktest.Sent) bool {
		return s.Kind == kind && s.Target == target && s.Message.Header.ID == id
	}
}

func TestLink(t *testing.T) {
	p := newPKI(t)
	cloud := newFakeCloud(t, p)
	m, h := startEdge(t, p, cloud, "")
	cc := cloud.accept(t)

	t.Run("connection", func(t *testing.T) {
		if got := cc.header.Get("node_id"); got != node {
			t.Errorf("node_id = %q", got)
		}
		if got := cc.header.Get("project_id"); got != defaultProjectID {
			t.Errorf("project_id = %q", got)
		}
		if got := cc.header.Get("ConnectionUse"); got != "msg" {
			t.Errorf("ConnectionUse = %q", got)
		}
		if want := "/" + defaultProjectID + "/" + node + "/events"; cc.path != want {
			t.Errorf("path = %q, want %q", cc.path, want)
		}
		if cc.cn != "system:node:"+node {
			t.Errorf("client certificate CN = %q", cc.cn)
		}
		waitSent(t, h, "connected to metamanager", event(moduleMeta, cloudConnected, 1))
		s := waitSent(t, h, "connected to devicetwin", event(moduleTwin, cloudConnected, 1))
		if s.Message.Router.Group != sdk.GroupTwin {
			t.Errorf("twin event group %q", s.Message.Router.Group)
		}
		s = waitSent(t, h, "connected to edged", event(moduleEdged, cloudConnected, 1))
		if s.Message.Router.Group != sdk.GroupEdged {
			t.Errorf("edged event group %q", s.Message.Router.Group)
		}
		if !m.Connected() {
			t.Error("Connected() = false")
		}
	})

	t.Run("keepalive", func(t *testing.T) {
		for i := range 3 { // the first right after connecting, then every heartbeat
			select {
			case k := <-cc.keeps:
				if k.Router.Source != "websocket" || k.Router.Group != "resource" || k.Router.Resource != "node" || k.ContentString() != "ping" {
					t.Fatalf("keepalive %d = %s %s", i, k, k.Content)
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("keepalive %d missing", i)
			}
		}
	})

	t.Run("dispatch", func(t *testing.T) {
		tests := []struct {
			name         string
			msg          *sdk.Message
			kind, target string // target "" = the parent id
		}{
			{"pod insert", cloudMsg("resource", "edgecontroller", "insert", "default/pod/nginx", "", "4711"), sdktest.KindModule, moduleMeta},
			{"func without parent", cloudMsg("func", "edgecontroller", "update", "default/configmap/c", "", "1"), sdktest.KindModule, moduleMeta},
			{"twin", cloudMsg("twin", "devicecontroller", "update", "membership", "", ""), sdktest.KindModule, moduleTwin},
			{"router eventbus", cloudMsg("user", "router_eventbus", "publish", "topic/a", "", ""), sdktest.KindModule, moduleEventBus},
			{"router servicebus", cloudMsg("user", "router_servicebus", "post", "8080:/x", "", ""), sdktest.KindModule, moduleServiceBus},
			{"resource answer", cloudMsg("resource", "edgecontroller", "response", "null/node/n", "req-1", ""), sdktest.KindResponse, "req-1"},
			{"user answer", cloudMsg("user", "router_servicebus", "response", "8080:/x", "req-2", ""), sdktest.KindResponse, "req-2"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				cc.send(t, tt.msg)
				target := tt.target
				s := waitSent(t, h, tt.name, delivered(tt.kind, target, tt.msg.Header.ID))
				if s.Message.Header.ResourceVersion != tt.msg.Header.ResourceVersion || string(s.Message.Content) != string(tt.msg.Content) {
					t.Fatalf("delivered %s %s", s.Message, s.Message.Content)
				}
			})
		}
	})

	t.Run("dropped and malformed frames keep the link", func(t *testing.T) {
		before := len(h.Sent())
		cc.send(t, cloudMsg("taskmanager", "taskmanager", "upgrade", "x", "", ""))
		cc.send(t, cloudMsg("user", "someone", "publish", "x", "", ""))
		if err := cc.ws.WriteMessage(websocket.TextMessage, []byte(`{"header":`)); err != nil {
			t.Fatal(err)
		}
		probe := cloudMsg("resource", "edgecontroller", "update", "default/pod/p", "", "9")
		cc.send(t, probe)
		waitSent(t, h, "probe after the bad frames", delivered(sdktest.KindModule, moduleMeta, probe.Header.ID))
		if got := h.Sent()[before:]; len(got) != 1 {
			t.Fatalf("sent %+v, want only the probe", got)
		}
		if m.connects.Load() != 1 {
			t.Fatalf("reconnected: %d connects", m.connects.Load())
		}
	})

	t.Run("ack from metamanager goes upstream", func(t *testing.T) {
		pod := cloudMsg("resource", "edgecontroller", "insert", "default/pod/a", "", "12")
		ack := sdk.NewAck(pod)
		ack.Router.Source = "edgecontroller" // KubeEdge's ACK copies the downstream source
		if err := h.Deliver(ack); err != nil {
			t.Fatal(err)
		}
		got := cc.next(t)
		if got.Header.ID != ack.Header.ID || got.Header.ParentID != pod.Header.ID || got.Router.Operation != sdk.OpResponse || got.ContentString() != "OK" {
			t.Fatalf("ack on the wire: %s %s", got, got.Content)
		}
	})

	t.Run("sync query answered by the cloud", func(t *testing.T) {
		q := sdk.NewMessage("").BuildRouter("metamanager", sdk.GroupMeta, "default/configmap/cfg", sdk.OpQuery)
		q.Header.Sync = true
		if err := h.Deliver(q); err != nil {
			t.Fatal(err)
		}
		got := cc.next(t)
		if got.Header.ID != q.Header.ID || got.Header.Sync || got.Router.Operation != sdk.OpQuery {
			t.Fatalf("query on the wire: %s", got)
		}
		answer := cloudMsg("resource", "edgecontroller", "response", q.Router.Resource, q.Header.ID, "5001")
		cc.send(t, answer)
		s := waitSent(t, h, "the answer", delivered(sdktest.KindResponse, q.Header.ID, answer.Header.ID))
		if s.Message.Header.ResourceVersion != "5001" {
			t.Fatalf("answer %s", s.Message)
		}
	})
}

func TestReconnectFlushesQueue(t *testing.T) {
	p := newPKI(t)
	cloud := newFakeCloud(t, p)
	m, h := startEdge(t, p, cloud, "")
	cc := cloud.accept(t)
	waitSent(t, h, "connected", event(moduleMeta, cloudConnected, 1))

	cloud.refuse.Store(true)
	_ = cc.ws.Close()
	waitSent(t, h, "disconnected to metamanager", event(moduleMeta, cloudDisconnected, 1))
	waitSent(t, h, "disconnected to devicetwin", event(moduleTwin, cloudDisconnected, 1))
	if m.Connected() {
		t.Fatal("Connected() after the drop")
	}

	var queued []*sdk.Message
	for i := range 3 {
		msg := sdk.NewMessage("").BuildRouter("edged", sdk.GroupMeta, "default/podpatch/p"+string(rune('a'+i)), sdk.OpPatch)
		_ = msg.FillBody(`{"status":{}}`)
		if err := h.Deliver(msg); err != nil {
			t.Fatalf("async while disconnected: %v", err)
		}
		queued = append(queued, msg)
	}
	q := sdk.NewMessage("").BuildRouter("metamanager", sdk.GroupMeta, "default/secret/s", sdk.OpQuery)
	q.Header.Sync = true
	if err := h.Deliver(q); !errors.Is(err, ErrDisconnected) {
		t.Fatalf("sync while disconnected: %v, want ErrDisconnected", err)
	}

	cloud.refuse.Store(false)
	cc2 := cloud.accept(t)
	for _, want := range queued {
		if got := cc2.next(t); got.Header.ID != want.Header.ID {
			t.Fatalf("flushed %s, want %s", got, want)
		}
	}
	waitSent(t, h, "connected again", event(moduleMeta, cloudConnected, 2))
	waitSent(t, h, "connected again to devicetwin", event(moduleTwin, cloudConnected, 2))
}

func TestOversizedFrameRefused(t *testing.T) {
	p := newPKI(t)
	cloud := newFakeCloud(t, p)
	m, h := startEdge(t, p, cloud, `,"max_frame_bytes":1024`)
	cc := cloud.accept(t)
	waitSent(t, h, "connected", event(moduleMeta, cloudConnected, 1))

	big := cloudMsg("resource", "edgecontroller", "insert", "default/pod/big", "", "1")
	_ = big.FillBody(map[string]string{"pad": strings.Repeat("x", 4096)})
	raw, _ := json.Marshal(big)
	// The edge closes the link while the frame arrives: the write may fail.
	_ = cc.ws.WriteMessage(websocket.TextMessage, raw)
	waitSent(t, h, "disconnected", event(moduleMeta, cloudDisconnected, 1))
	cc2 := cloud.accept(t)
	small := cloudMsg("resource", "edgecontroller", "insert", "default/pod/small", "", "2")
	cc2.send(t, small)
	waitSent(t, h, "small frame on the new link", delivered(sdktest.KindModule, moduleMeta, small.Header.ID))
	for _, s := range h.Sent() {
		if s.Message.Header.ID == big.Header.ID {
			t.Fatal("the oversized message was delivered")
		}
	}
	if m.refusedDown.Load() == 0 {
		t.Fatal("refused frame not counted")
	}
}

func TestHalfOpenLinkNoticed(t *testing.T) {
	p := newPKI(t)
	cloud := newFakeCloud(t, p)
	cloud.silent = true // never reads: pings go unanswered
	m := New()
	m.minBackoff, m.maxBackoff = 20*time.Millisecond, 200*time.Millisecond
	m.pingInterval, m.readTimeout = 50*time.Millisecond, 300*time.Millisecond
	h := sdktest.New(t, m, sdktest.Options{ConfigJSON: `{"server":"` + cloud.addr() + `",` + p.nodeFiles(t, node) + `}`})
	cloud.accept(t)
	waitSent(t, h, "connected", event(moduleMeta, cloudConnected, 1))
	waitSent(t, h, "disconnected by the read timeout", event(moduleMeta, cloudDisconnected, 1))
	cloud.accept(t) // and it dials again
}

func TestCloudRequiresClientCert(t *testing.T) {
	p := newPKI(t)
	cloud := newFakeCloud(t, p)
	d := websocket.Dialer{TLSClientConfig: &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: p.Pool}, HandshakeTimeout: 5 * time.Second}
	conn, _, err := d.Dial("wss://"+cloud.addr()+"/p/n/events", nil)
	if err == nil {
		// TLS 1.3 reports the refusal on the first read.
		_, _, err = conn.ReadMessage()
		conn.Close()
	}
	if err == nil {
		t.Fatal("a client without a certificate was accepted")
	}
	select {
	case <-cloud.conns:
		t.Fatal("the cloud upgraded a client without a certificate")
	default:
	}
}

func TestOfflineQueueBound(t *testing.T) {
	m := New()
	m.queueSize = 3
	h := sdktest.New(t, m, sdktest.Options{ConfigJSON: `{"server":"127.0.0.1:1"}`})
	var ids []string
	for range 5 {
		msg := sdk.NewMessage("").BuildRouter("edged", sdk.GroupMeta, "default/podpatch/p", sdk.OpPatch)
		if err := h.Deliver(msg); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, msg.Header.ID)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.queue) != 3 || m.dropped.Load() != 2 {
		t.Fatalf("queue %d, dropped %d", len(m.queue), m.dropped.Load())
	}
	for i, q := range m.queue {
		if q.Header.ID != ids[i+2] {
			t.Fatalf("queue kept %v, want the newest three", q.Header.ID)
		}
	}
}

func TestRoute(t *testing.T) {
	for _, tt := range []struct {
		group, source, parent string
		resp                  bool
		module                string
	}{
		{"resource", "edgecontroller", "", false, moduleMeta},
		{"resource", "edgecontroller", "p", true, ""},
		{"func", "x", "p", true, ""},
		{"twin", "devicecontroller", "p", false, moduleTwin},
		{"user", "router_eventbus", "", false, moduleEventBus},
		{"user", "router_servicebus", "", false, moduleServiceBus},
		{"user", "router_servicebus", "p", true, ""},
		{"user", "other", "", false, ""},
		{"meta", "edgecontroller", "", false, ""},
		{"", "", "", false, ""},
	} {
		m := sdk.NewMessage(tt.parent).BuildRouter(tt.source, tt.group, "r", "op")
		resp, module := route(m)
		if resp != tt.resp || module != tt.module {
			t.Errorf("route(%+v) = %v %q", tt, resp, module)
		}
	}
}

// stallProxy forwards TCP between the edge and the cloud until stall: from
// then on the connections open so far stay open but carry nothing either
// way — the peer stops answering and no FIN comes, a half-open link. New
// connections are forwarded normally.
type stallProxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	links  []*atomic.Bool // one "stalled" flag per accepted connection
}

func newStallProxy(t *testing.T, target string) *stallProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &stallProxy{ln: ln, target: target}
	var conns sync.WaitGroup
	t.Cleanup(func() { ln.Close(); conns.Wait() })
	go func() {
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			out, err := net.Dial("tcp", target)
			if err != nil {
				in.Close()
				continue
			}
			stalled := &atomic.Bool{}
			p.mu.Lock()
			p.links = append(p.links, stalled)
			p.mu.Unlock()
			pipe := func(dst, src net.Conn) {
				defer conns.Done()
				buf := make([]byte, 32<<10)
				for {
					n, err := src.Read(buf)
					if err != nil {
						dst.Close()
						return
					}
					if !stalled.Load() { // stalled: swallow, never answer, never close
						if _, err := dst.Write(buf[:n]); err != nil {
							src.Close()
							return
						}
					}
				}
			}
			conns.Add(2)
			go pipe(out, in)
			go pipe(in, out)
			t.Cleanup(func() { in.Close(); out.Close() })
		}
	}()
	return p
}

func (p *stallProxy) addr() string { return p.ln.Addr().String() }

// stall silences every connection open now.
func (p *stallProxy) stall() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, s := range p.links {
		s.Store(true)
	}
}

// With the module's default timing (ping every 10 s, 30 s read deadline), a
// link whose peer goes silent without closing is noticed within 30 s and
// redialled. KubeEdge's edgehub would keep writing into it for many minutes.
func TestHalfOpenNoticedWithin30s(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	cloud := newFakeCloud(t, p)
	proxy := newStallProxy(t, cloud.addr())
	m := New() // default ping interval and read timeout
	m.minBackoff, m.maxBackoff = 20*time.Millisecond, 200*time.Millisecond
	h := sdktest.New(t, m, sdktest.Options{ConfigJSON: `{"server":"` + proxy.addr() + `",` + p.nodeFiles(t, node) + `}`})
	cloud.accept(t)
	waitSent(t, h, "connected", event(moduleMeta, cloudConnected, 1))
	time.Sleep(2 * time.Second) // some traffic (keepalive, a ping) before the stall
	proxy.stall()
	stalled := time.Now()

	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	if _, ok := h.WaitSent(ctx, event(moduleMeta, cloudDisconnected, 1)); !ok {
		t.Fatal("the half-open link was not noticed in 40 s")
	}
	took := time.Since(stalled)
	t.Logf("half-open link noticed after %s", took.Round(time.Millisecond))
	if took > defaultReadTimeout+500*time.Millisecond {
		t.Fatalf("noticed after %s, want within %s", took, defaultReadTimeout)
	}
	cloud.accept(t) // redialled through the proxy, on a fresh connection
	waitSent(t, h, "connected again", event(moduleMeta, cloudConnected, 2))
}
