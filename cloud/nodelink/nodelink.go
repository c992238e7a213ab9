// Package nodelink is what cloudhub and the cloud controllers agree on: how a
// controller sends to an edge node and how the messages a node sends reach the
// controller that handles them. cloudhub implements Sender; edgecontroller and
// devicecontroller implement Handler; Mux joins them.
package nodelink

import (
	"context"
	"errors"
	"sync"

	"github.com/edgehive/edgehive/sdk"
)

// ErrNotConnected is returned by Send when the node has no session on this
// replica. Nothing is queued for it: on reconnect the controllers resync the
// node from the API (NodeConnected), which is how several replicas share the
// load without sharing state.
var ErrNotConnected = errors.New("node not connected to this cloudhive")

// Sender delivers messages to edge nodes.
type Sender interface {
	// Send queues msg for node and returns once it is queued. Messages to one
	// node go out in order. A message with a resourceVersion is resent until
	// the node ACKs it (stop-and-wait per node); cloudhub strips any
	// "node/<node>/" resource prefix. Send blocks while the node's queue is
	// full, until ctx ends.
	Send(ctx context.Context, node string, msg *sdk.Message) error
	// Connected reports whether node has a session on this replica.
	Connected(node string) bool
}

// Handler handles what nodes send and follows their sessions.
type Handler interface {
	// HandleUpstream handles one message from node. Keepalives and ACKs are
	// consumed by cloudhub and never reach a Handler. It must not block for
	// long: slow work (API calls) belongs on the handler's own workers.
	HandleUpstream(ctx context.Context, node string, msg *sdk.Message)
	// NodeConnected is called when node's session starts on this replica;
	// the handler resyncs the node to the current state of the API.
	NodeConnected(ctx context.Context, node string)
	// NodeDisconnected is called when node's session ends.
	NodeDisconnected(node string)
}

// Mux routes upstream messages to handlers by the message's route source
// (as KubeEdge's cloudhub does: source "twin" goes to devicecontroller), then
// by its group, and tells every handler about sessions. A message matching
// neither goes to the fallback handler (edgecontroller).
type Mux struct {
	mu       sync.RWMutex
	bySource map[string]Handler
	byGroup  map[string]Handler
	fallback Handler
	all      []Handler
}

var _ Handler = (*Mux)(nil)

// NewMux returns a Mux whose unmatched messages go to fallback.
func NewMux(fallback Handler) *Mux {
	m := &Mux{bySource: map[string]Handler{}, byGroup: map[string]Handler{}, fallback: fallback}
	if fallback != nil {
		m.all = append(m.all, fallback)
	}
	return m
}

// Handle routes messages of group to h.
func (m *Mux) Handle(group string, h Handler) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.byGroup[group] = h
	m.remember(h)
}

// HandleSource routes messages from the edge module source to h, before any
// group route.
func (m *Mux) HandleSource(source string, h Handler) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.bySource[source] = h
	m.remember(h)
}

func (m *Mux) remember(h Handler) {
	for _, known := range m.all {
		if known == h {
			return
		}
	}
	m.all = append(m.all, h)
}

// HandleUpstream implements Handler.
func (m *Mux) HandleUpstream(ctx context.Context, node string, msg *sdk.Message) {
	m.mu.RLock()
	h, ok := m.bySource[msg.Router.Source]
	if !ok {
		h, ok = m.byGroup[msg.Router.Group]
	}
	if !ok {
		h = m.fallback
	}
	m.mu.RUnlock()
	if h != nil {
		h.HandleUpstream(ctx, node, msg)
	}
}

// NodeConnected implements Handler.
func (m *Mux) NodeConnected(ctx context.Context, node string) {
	m.mu.RLock()
	all := append([]Handler(nil), m.all...)
	m.mu.RUnlock()
	for _, h := range all {
		h.NodeConnected(ctx, node)
	}
}

// NodeDisconnected implements Handler.
func (m *Mux) NodeDisconnected(node string) {
	m.mu.RLock()
	all := append([]Handler(nil), m.all...)
	m.mu.RUnlock()
	for _, h := range all {
		h.NodeDisconnected(node)
	}
}
