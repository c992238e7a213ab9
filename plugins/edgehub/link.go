package edgehub

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"time"

	"github.com/gorilla/websocket"

	"github.com/edgehive/edgehive/sdk"
)

// run keeps the cloud link up until ctx is done: dial, serve, and after a
// failure wait with exponential back-off and jitter before dialling again.
func (e *EdgeHub) run(ctx context.Context) {
	backoff := e.minBackoff
	for ctx.Err() == nil {
		conn, err := e.dial(ctx)
		if err == nil {
			backoff = e.minBackoff
			e.serve(ctx, conn)
			if ctx.Err() != nil {
				return
			}
		} else {
			e.logger.Warn("cloud dial failed", "server", e.cfg.Server, "error", err, "retry_in", backoff)
		}
		// Full jitter in [backoff/2, backoff].
		wait := backoff/2 + time.Duration(rand.Int64N(int64(backoff/2)+1))
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		backoff = min(backoff*2, e.maxBackoff)
	}
}

// url is the cloudhub websocket address for this node.
func (e *EdgeHub) url() string {
	u := url.URL{Scheme: "wss", Host: e.cfg.Server,
		Path: "/" + e.cfg.ProjectID + "/" + e.host.NodeName() + "/events"}
	return u.String()
}

// tlsConfig loads the cloud CA and the node certificate; it runs at every
// dial so a renewed certificate is picked up. With a token and no usable
// certificate it bootstraps one first.
func (e *EdgeHub) tlsConfig(ctx context.Context) (*tls.Config, error) {
	cert, err := e.loadNodeCert()
	if err != nil && e.cfg.Token != "" {
		e.logger.Info("no usable node certificate, bootstrapping with the token", "https_server", e.cfg.HTTPSServer, "reason", err)
		e.certMu.Lock()
		berr := Bootstrap(ctx, e.cfg.HTTPSServer, e.cfg.Token, e.host.NodeName(),
			e.cfg.TLSCAFile, e.cfg.TLSCertFile, e.cfg.TLSPrivateKeyFile)
		e.certMu.Unlock()
		if berr != nil {
			return nil, fmt.Errorf("bootstrap: %w", berr)
		}
		cert, err = e.loadNodeCert()
	}
	if err != nil {
		return nil, fmt.Errorf("node certificate: %w", err)
	}
	caPEM, err := os.ReadFile(e.cfg.TLSCAFile)
	if err != nil {
		return nil, fmt.Errorf("cloud CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("cloud CA %s: no PEM certificate", e.cfg.TLSCAFile)
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		RootCAs:      pool,
		Certificates: []tls.Certificate{cert},
	}, nil
}

func (e *EdgeHub) dial(ctx context.Context) (*websocket.Conn, error) {
	tlsCfg, err := e.tlsConfig(ctx)
	if err != nil {
		return nil, err
	}
	d := websocket.Dialer{TLSClientConfig: tlsCfg, HandshakeTimeout: handshakeTimeout, Proxy: http.ProxyFromEnvironment}
	h := http.Header{}
	h.Set("node_id", e.host.NodeName())
	h.Set("project_id", e.cfg.ProjectID)
	h.Set("ConnectionUse", "msg")
	conn, resp, err := d.DialContext(ctx, e.url(), h)
	if resp != nil && resp.Body != nil {
		_ = resp.Body.Close()
	}
	if err != nil {
		return nil, err
	}
	return conn, nil
}

// serve runs one connection: flush the offline queue, announce the link,
// keep it alive, and dispatch what the cloud sends until it fails.
func (e *EdgeHub) serve(ctx context.Context, conn *websocket.Conn) {
	n := e.connects.Add(1)
	e.logger.Info("cloud connected", "server", e.cfg.Server, "connects", n)
	conn.SetReadLimit(int64(e.cfg.MaxFrameBytes))
	_ = conn.SetReadDeadline(time.Now().Add(e.readTimeout))
	conn.SetPongHandler(func(string) error {
		return conn.SetReadDeadline(time.Now().Add(e.readTimeout))
	})

	connCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() { // Stop, or the end of this connection, closes it
		<-connCtx.Done()
		_ = conn.Close()
	}()

	// Keepalive first, as KubeEdge does right after connecting.
	if err := e.write(conn, keepalive()); err != nil {
		e.logger.Warn("keepalive failed", "error", err)
		return
	}
	e.mu.Lock()
	e.conn = conn
	e.mu.Unlock()
	if err := e.flush(conn); err != nil {
		e.logger.Warn("flushing the offline queue failed", "error", err)
		e.disconnected()
		return
	}
	e.announce(ctx, cloudConnected)
	go e.keepalive(connCtx, conn)

read:
	for {
		kind, data, err := conn.ReadMessage()
		if err != nil {
			switch {
			case errors.Is(err, websocket.ErrReadLimit):
				e.refusedDown.Add(1)
				e.logger.Error("refused a frame larger than max_frame_bytes; reconnecting", "max_frame_bytes", e.cfg.MaxFrameBytes)
			case ctx.Err() != nil:
			default:
				e.logger.Warn("cloud connection lost", "error", err)
			}
			break read
		}
		_ = conn.SetReadDeadline(time.Now().Add(e.readTimeout))
		if kind != websocket.TextMessage && kind != websocket.BinaryMessage {
			continue
		}
		e.dispatch(ctx, data)
	}
	e.disconnected()
	if ctx.Err() == nil {
		e.announce(ctx, cloudDisconnected)
	} else {
		// Shutting down: tell the modules anyway, briefly.
		sctx, scancel := context.WithTimeout(context.Background(), time.Second)
		e.announce(sctx, cloudDisconnected)
		scancel()
	}
}

// flush writes the offline queue in order; messages Handle queues meanwhile
// are written too, and the link counts as connected once the queue is empty.
func (e *EdgeHub) flush(conn *websocket.Conn) error {
	sent := 0
	for {
		e.mu.Lock()
		if len(e.queue) == 0 {
			e.connected = true
			e.queue = nil
			e.mu.Unlock()
			if sent > 0 {
				e.logger.Info("offline queue flushed", "messages", sent)
			}
			return nil
		}
		msg := e.queue[0]
		e.mu.Unlock()
		if err := e.write(conn, msg); err != nil {
			return err
		}
		e.mu.Lock()
		if len(e.queue) > 0 && e.queue[0] == msg {
			e.queue[0] = nil
			e.queue = e.queue[1:]
		}
		e.mu.Unlock()
		sent++
	}
}

func (e *EdgeHub) disconnected() {
	e.mu.Lock()
	conn := e.conn
	e.conn, e.connected = nil, false
	e.mu.Unlock()
	if conn != nil {
		_ = conn.Close()
	}
}

// keepalive sends KubeEdge's keepalive every heartbeat and a websocket ping
// every ping interval; the pongs extend the read deadline.
func (e *EdgeHub) keepalive(ctx context.Context, conn *websocket.Conn) {
	beat := time.NewTicker(e.cfg.Heartbeat.D())
	defer beat.Stop()
	ping := time.NewTicker(e.pingInterval)
	defer ping.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-beat.C:
			if err := e.write(conn, keepalive()); err != nil {
				e.logger.Warn("keepalive failed", "error", err)
				_ = conn.Close()
				return
			}
		case <-ping.C:
			if err := conn.WriteControl(websocket.PingMessage, nil, time.Now().Add(writeTimeout)); err != nil {
				e.logger.Warn("ping failed", "error", err)
				_ = conn.Close()
				return
			}
		}
	}
}

// keepalive is KubeEdge's edge keepalive message.
func keepalive() *sdk.Message {
	m := sdk.NewMessage("").BuildRouter("websocket", sdk.WireGroupResource, "node", sdk.OpKeepalive)
	_ = m.FillBody("ping")
	return m
}

// write puts one message on the wire as one text frame.
func (e *EdgeHub) write(conn *websocket.Conn, msg *sdk.Message) error {
	data, err := json.Marshal(msg)
	if err != nil {
		return fmt.Errorf("encode %s: %w", msg, err)
	}
	e.writeMu.Lock()
	defer e.writeMu.Unlock()
	_ = conn.SetWriteDeadline(time.Now().Add(writeTimeout))
	return conn.WriteMessage(websocket.TextMessage, data)
}

// announce tells metamanager, devicetwin and edged that the link changed
// (edged resends pod statuses when it comes back).
func (e *EdgeHub) announce(ctx context.Context, state string) {
	for _, t := range []struct{ module, group string }{{moduleMeta, sdk.GroupMeta}, {moduleTwin, sdk.GroupTwin}, {moduleEdged, sdk.GroupEdged}} {
		m := sdk.NewMessage("").BuildRouter(Name, t.group, resourceConnection, opConnect)
		_ = m.FillBody(state)
		sctx, cancel := context.WithTimeout(ctx, deliverTimeout)
		err := e.host.Send(sctx, t.module, m)
		cancel()
		if err != nil {
			if errors.Is(err, sdk.ErrUnknownDestination) {
				e.logger.Debug("connection event not delivered", "module", t.module, "error", err)
			} else {
				e.logger.Warn("connection event not delivered", "module", t.module, "error", err)
			}
		}
	}
}

// route decides where a downstream message goes: response (to the waiting
// requester) or a module name; "" means drop.
func route(m *sdk.Message) (response bool, module string) {
	switch m.Router.Group {
	case sdk.WireGroupResource, sdk.WireGroupFunc:
		if m.Header.ParentID != "" {
			return true, ""
		}
		return false, moduleMeta
	case sdk.WireGroupTwin:
		return false, moduleTwin
	case sdk.WireGroupUser:
		if m.Header.ParentID != "" {
			return true, ""
		}
		switch m.Router.Source {
		case "router_eventbus":
			return false, moduleEventBus
		case "router_servicebus":
			return false, moduleServiceBus
		}
	}
	return false, ""
}

// dispatch decodes one downstream frame and delivers it.
func (e *EdgeHub) dispatch(ctx context.Context, data []byte) {
	var m sdk.Message
	if err := json.Unmarshal(data, &m); err != nil || m.Header.ID == "" {
		e.refusedDown.Add(1)
		if err == nil {
			err = errors.New("no msg_id")
		}
		e.logger.Warn("dropped a malformed frame from the cloud", "bytes", len(data), "error", err)
		return
	}
	m.Header.Sync = false
	response, module := route(&m)
	sctx, cancel := context.WithTimeout(ctx, deliverTimeout)
	defer cancel()
	switch {
	case response:
		if err := e.host.Response(sctx, &m); err != nil {
			e.logger.Debug("cloud answer has no waiter, dropped", "msg", m.String(), "error", err)
		}
	case module != "":
		if err := e.host.Send(sctx, module, &m); err != nil {
			e.logger.Warn("downstream message not delivered", "module", module, "msg", m.String(), "error", err)
		}
	default:
		e.refusedDown.Add(1)
		e.logger.Info("dropped a downstream message nobody handles", "group", m.Router.Group, "msg", m.String())
	}
}
