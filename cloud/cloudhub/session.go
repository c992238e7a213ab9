package cloudhub

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/hashicorp/go-hclog"

	"github.com/edgehive/edgehive/sdk"
)

// session is one node's connection. The reader goroutine owns the keepalive
// timer and upstream dispatch; the writer goroutine owns the queue and the
// message waiting for its ACK; acks carries parent_msg_ids between them.
type session struct {
	node   string
	conn   *websocket.Conn
	queue  chan *sdk.Message
	acks   chan string
	ctx    context.Context
	cancel context.CancelCauseFunc
	done   chan struct{} // closed once NodeDisconnected has returned
	logger hclog.Logger
}

func newSession(parent context.Context, node string, conn *websocket.Conn, queueSize int, logger hclog.Logger) *session {
	ctx, cancel := context.WithCancelCause(parent)
	return &session{
		node: node, conn: conn,
		queue: make(chan *sdk.Message, queueSize),
		acks:  make(chan string, 8),
		ctx:   ctx, cancel: cancel,
		done:   make(chan struct{}),
		logger: logger,
	}
}

// Sources of cloud modules: a node sending as one of them is not believed
// (KubeEdge drops these too).
var cloudSources = map[string]bool{
	"cloudhub": true, "cloudStream": true, "devicecontroller": true, "edgecontroller": true, "synccontroller": true,
}

// run serves s until it ends. The predecessor it replaced is finished first,
// so the handler always sees NodeDisconnected before the next NodeConnected.
func (h *Hub) run(s *session, prev *session) {
	defer close(s.done)
	if prev != nil {
		prev.cancel(errReplaced)
		<-prev.done
	}

	// Closing: a close frame with the cause, then the socket, which wakes
	// the reader.
	closed := make(chan struct{})
	go func() {
		defer close(closed)
		<-s.ctx.Done()
		cause := context.Cause(s.ctx)
		code := websocket.CloseNormalClosure
		if errors.Is(cause, errShutdown) {
			code = websocket.CloseGoingAway
		}
		_ = s.conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, truncate(cause.Error(), 120)),
			time.Now().Add(time.Second))
		_ = s.conn.Close()
	}()

	keepalive := time.AfterFunc(h.cfg.KeepaliveTimeout, func() { s.cancel(errKeepaliveTimeout) })
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		h.writeLoop(s)
	}()
	s.logger.Info("node connected")
	go func() { // after the writer runs, so a resync can send at once
		defer wg.Done()
		h.handler.NodeConnected(s.ctx, s.node)
	}()

	h.readLoop(s, keepalive)
	s.cancel(errors.New("connection closed"))
	keepalive.Stop()
	wg.Wait()
	<-closed
	h.detach(s)
	h.handler.NodeDisconnected(s.node)
	s.logger.Info("node disconnected", "cause", context.Cause(s.ctx))
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// readLoop reads frames until the connection fails.
func (h *Hub) readLoop(s *session, keepalive *time.Timer) {
	s.conn.SetReadLimit(h.cfg.MaxFrameBytes)
	for {
		kind, data, err := s.conn.ReadMessage()
		if err != nil {
			switch {
			case errors.Is(err, websocket.ErrReadLimit):
				// Gorilla has sent close 1009 and stopped reading the frame.
				h.metrics.framesRefused.WithLabelValues("oversized").Inc()
				s.cancel(fmt.Errorf("frame larger than %d bytes", h.cfg.MaxFrameBytes))
				s.logger.Warn("refused an oversized frame; closing the session", "max_frame_bytes", h.cfg.MaxFrameBytes)
			case s.ctx.Err() != nil:
			default:
				s.cancel(fmt.Errorf("read: %w", err))
			}
			return
		}
		if kind != websocket.TextMessage && kind != websocket.BinaryMessage {
			continue
		}
		h.metrics.upstream.Inc()
		var m sdk.Message
		if err := json.Unmarshal(data, &m); err != nil || m.Header.ID == "" {
			if err == nil {
				err = errors.New("no msg_id")
			}
			h.metrics.framesRefused.WithLabelValues("malformed").Inc()
			s.logger.Warn("dropped a malformed frame", "bytes", len(data), "error", err)
			continue
		}
		h.dispatchUpstream(s, &m, keepalive)
	}
}

// dispatchUpstream follows KubeEdge's order (wire reference §2.5).
func (h *Hub) dispatchUpstream(s *session, m *sdk.Message, keepalive *time.Timer) {
	switch {
	case m.Router.Operation == sdk.OpKeepalive:
		keepalive.Reset(h.cfg.KeepaliveTimeout)
	case m.Router.Operation == sdk.OpResponse:
		if m.Header.ParentID == "" {
			return
		}
		select {
		case s.acks <- m.Header.ParentID:
		case <-s.ctx.Done():
		}
	case m.Router.Operation == sdk.OpError:
		s.logger.Warn("node reported an error", "parent_msg_id", m.Header.ParentID,
			"resource", m.Router.Resource, "content", truncate(m.ContentString(), 512))
	case m.Router.Resource == "k8s/ca.crt":
		h.answerClusterCA(s, m)
	case cloudSources[m.Router.Source]:
		h.metrics.framesRefused.WithLabelValues("cloud_source").Inc()
		s.logger.Warn("dropped a message claiming a cloud source", "source", m.Router.Source, "msg_id", m.Header.ID)
	default:
		h.handler.HandleUpstream(s.ctx, s.node, m)
	}
}

// answerClusterCA answers the edge's query for the cluster CA with its PEM.
func (h *Hub) answerClusterCA(s *session, req *sdk.Message) {
	resp := sdk.NewMessage(req.Header.ID).BuildRouter(req.Router.Source, req.Router.Group, req.Router.Resource, sdk.OpResponse)
	_ = resp.FillBody(string(h.cfg.ClusterCA))
	// The reader must not block on a full queue (the writer may be waiting
	// for an ACK only this reader can deliver): when full, the answer is
	// dropped and the edge asks again after its request timeout.
	select {
	case s.queue <- resp:
	default:
		s.logger.Warn("send queue full; dropped the k8s/ca.crt answer", "msg_id", req.Header.ID)
	}
}

// writeLoop writes the queue in order until the session ends.
func (h *Hub) writeLoop(s *session) {
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-s.acks: // a late or duplicate ACK: nothing waits for it
		case m := <-s.queue:
			if err := h.deliver(s, m); err != nil {
				s.cancel(err)
				return
			}
		}
	}
}

// wireForm strips the cloud-internal node prefix and the sync flag.
func wireForm(node string, m *sdk.Message) ([]byte, error) {
	m.Router.Resource = strings.TrimPrefix(m.Router.Resource, "node/"+node+"/")
	m.Header.Sync = false
	data, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", m.Header.ID, err)
	}
	return data, nil
}

// deliver writes m; one with a resourceVersion is written again, unchanged,
// every AckTimeout until its ACK comes, at most AckRetries times.
func (h *Hub) deliver(s *session, m *sdk.Message) error {
	data, err := wireForm(s.node, m)
	if err != nil {
		s.logger.Error("dropped an unencodable message", "error", err)
		return nil
	}
	if err := h.write(s, data); err != nil {
		return err
	}
	h.metrics.downstream.Inc()
	if m.Header.ResourceVersion == "" {
		return nil
	}
	timer := time.NewTimer(h.cfg.AckTimeout)
	defer timer.Stop()
	for resends := 0; ; {
		select {
		case <-s.ctx.Done():
			return context.Cause(s.ctx)
		case id := <-s.acks:
			if id == m.Header.ID {
				h.metrics.acks.Inc()
				return nil
			}
		case <-timer.C:
			if resends == h.cfg.AckRetries {
				h.metrics.ackTimeouts.Inc()
				s.logger.Warn("no ACK after every resend; closing the session so that reconnect resyncs the node",
					"msg_id", m.Header.ID, "resource", m.Router.Resource, "resends", resends)
				return fmt.Errorf("%w: %s %s", errAckTimeout, m.Header.ID, m.Router.Resource)
			}
			resends++
			h.metrics.resends.Inc()
			s.logger.Debug("resending unacknowledged message", "msg_id", m.Header.ID, "resend", resends)
			if err := h.write(s, data); err != nil {
				return err
			}
			timer.Reset(h.cfg.AckTimeout)
		}
	}
}

func (h *Hub) write(s *session, data []byte) error {
	_ = s.conn.SetWriteDeadline(time.Now().Add(h.cfg.WriteTimeout))
	if err := s.conn.WriteMessage(websocket.TextMessage, data); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	return nil
}
