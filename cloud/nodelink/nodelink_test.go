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
	mux.Handle("twin", twin)
	mux.HandleSource("twin", twin) // registering twice must not double the session calls

	for _, route := range []sdk.MessageRoute{{Group: "resource"}, {Group: "twin"}, {Group: "meta"}, {},
		{Source: "twin", Group: "resource"}, {Source: "edged", Group: "resource"}} {
		msg := sdk.NewMessage("")
		msg.Router = route
		mux.HandleUpstream(context.Background(), "n1", msg)
	}
	mux.NodeConnected(context.Background(), "n1")
	mux.NodeDisconnected("n1")

	if want := []string{"n1:resource", "n1:meta", "n1:", "n1:resource"}; !equal(edge.got, want) {
		t.Fatalf("fallback got %v, want %v", edge.got, want)
	}
	if want := []string{"n1:twin", "n1:resource"}; !equal(twin.got, want) {
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
