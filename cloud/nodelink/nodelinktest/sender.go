// Package nodelinktest has a fake nodelink.Sender for the cloud controllers'
// unit tests: it records what is sent to which node and lets a test choose
// which nodes are connected.
package nodelinktest

import (
	"context"
	"sync"
	"time"

	"github.com/edgehive/edgehive/cloud/nodelink"
	"github.com/edgehive/edgehive/sdk"
)

// Sent is one recorded Send.
type Sent struct {
	Node string
	Msg  *sdk.Message
}

// Sender is a nodelink.Sender that records messages. Nodes are disconnected
// until Connect is called; Send to a disconnected node returns
// nodelink.ErrNotConnected and records nothing.
type Sender struct {
	mu        sync.Mutex
	connected map[string]bool
	sent      []Sent
	failWith  error
	notify    chan struct{}
}

var _ nodelink.Sender = (*Sender)(nil)

// New returns a Sender with the given nodes connected.
func New(connected ...string) *Sender {
	s := &Sender{connected: map[string]bool{}, notify: make(chan struct{}, 1)}
	for _, n := range connected {
		s.connected[n] = true
	}
	return s
}

// Connect marks node connected.
func (s *Sender) Connect(node string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.connected[node] = true
}

// Disconnect marks node disconnected.
func (s *Sender) Disconnect(node string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.connected, node)
}

// FailWith makes every later Send to a connected node return err (nil to stop).
func (s *Sender) FailWith(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failWith = err
}

// Send implements nodelink.Sender.
func (s *Sender) Send(ctx context.Context, node string, msg *sdk.Message) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.connected[node] {
		return nodelink.ErrNotConnected
	}
	if s.failWith != nil {
		return s.failWith
	}
	s.sent = append(s.sent, Sent{Node: node, Msg: msg.Clone()})
	select {
	case s.notify <- struct{}{}:
	default:
	}
	return nil
}

// Connected implements nodelink.Sender.
func (s *Sender) Connected(node string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.connected[node]
}

// Sent returns a copy of everything sent so far.
func (s *Sender) Sent() []Sent {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Sent(nil), s.sent...)
}

// Reset forgets what was sent.
func (s *Sender) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sent = nil
}

// WaitFor polls until match holds for the messages sent so far or timeout
// passes; it returns the last snapshot and whether match held.
func (s *Sender) WaitFor(timeout time.Duration, match func([]Sent) bool) ([]Sent, bool) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		got := s.Sent()
		if match(got) {
			return got, true
		}
		select {
		case <-deadline.C:
			return s.Sent(), false
		case <-s.notify:
		case <-tick.C:
		}
	}
}
