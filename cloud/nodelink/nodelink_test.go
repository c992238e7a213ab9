package nodelink

import (
	"context"
	"testing"

	"github.com/edgehive/edgehive/sdk"
)

type recorder struct {
	got        []string
	connected  []string
	disconnect []string
}

func (r *recorder) HandleUpstream(_ context.Context, node string, msg *sdk.Message) {
	r.got = append(r.got, node+":"+msg.Router.Group)
}
func (r *recorder) NodeConnected(_ context.Context, node string) {
	r.connected = append(r.connected, node)
}
func (r *recorder) NodeDisconnected(node string) { r.disconnect = append(r.disconnect, node) }

func TestMuxRoutesByGroupAndBroadcastsSessions(t *testing.T) {
	edge, twin := &recorder{}, &recorder{}
	mux := NewMux(edge)
	mux.Handle("twin", twin)
	mux.Handle("twin", twin) // registering twice must not double the session calls

	for _, group := range []string{"resource", "twin", "meta", ""} {
		msg := sdk.NewMessage("")
		msg.Router.Group = group
		mux.HandleUpstream(context.Background(), "n1", msg)
	}
	mux.NodeConnected(context.Background(), "n1")
	mux.NodeDisconnected("n1")

	if want := []string{"n1:resource", "n1:meta", "n1:"}; !equal(edge.got, want) {
		t.Fatalf("fallback got %v, want %v", edge.got, want)
	}
	if want := []string{"n1:twin"}; !equal(twin.got, want) {
		t.Fatalf("twin got %v, want %v", twin.got, want)
	}
	for _, r := range []*recorder{edge, twin} {
		if !equal(r.connected, []string{"n1"}) || !equal(r.disconnect, []string{"n1"}) {
			t.Fatalf("sessions: connected %v disconnected %v", r.connected, r.disconnect)
		}
	}
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
