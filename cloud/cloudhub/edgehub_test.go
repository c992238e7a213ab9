package cloudhub_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/edgehive/edgehive/cloud/cloudhub"
	"github.com/edgehive/edgehive/plugins/edgehub"
	"github.com/edgehive/edgehive/sdk"
	"github.com/edgehive/edgehive/sdk/sdktest"
)

// Our own edgehub plugin, in-process, against cloudhub: it bootstraps its
// certificate with the token, connects, gets a pod, and its ACK releases the
// cloud's stop-and-wait.
func TestEdgehubPluginAgainstCloudhub(t *testing.T) {
	e := newEnv(t, func(c *cloudhub.Config) { c.AckTimeout = 2 * time.Second })
	node := sdktest.DefaultNodeName
	dir := t.TempDir()
	cfg := `{"server":"` + e.wsAddr + `","https_server":"` + e.certsURL + `","token":"` + e.token + `",` +
		`"heartbeat":"200ms","tls_ca_file":"` + filepath.Join(dir, "ca.crt") + `","tls_cert_file":"` + filepath.Join(dir, "node.crt") +
		`","tls_private_key_file":"` + filepath.Join(dir, "node.key") + `"}`
	h := sdktest.New(t, edgehub.New(), sdktest.Options{ConfigJSON: cfg})
	defer h.Stop()
	waitFor(t, func() bool { return e.hub.Connected(node) })
	e.handler.waitEvents(t, "connected:"+node)

	pod := podMsg(node, "nginx", "42")
	if err := e.hub.Send(context.Background(), node, pod); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	got, ok := h.WaitSent(ctx, func(s sdktest.Sent) bool {
		return s.Kind == sdktest.KindModule && s.Target == "metamanager" && s.Message.Header.ID == pod.Header.ID
	})
	if !ok {
		t.Fatalf("pod not delivered to metamanager; sent %+v", h.Sent())
	}
	if got.Message.Router.Resource != "default/pod/nginx" || got.Message.Header.ResourceVersion != "42" {
		t.Fatalf("edge got %s rv %q", got.Message, got.Message.Header.ResourceVersion)
	}
	// metamanager's ACK, through edgehub.
	ackMsg := sdk.NewMessage(pod.Header.ID).BuildRouter("metamanager", "resource", "default/pod/nginx", "response")
	_ = ackMsg.FillBody("OK")
	if err := h.Deliver(ackMsg); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return e.metric("cloudhub_acks_total") == 1 })
	if r := e.metric("cloudhub_resends_total"); r != 0 {
		t.Fatalf("%v resends although the edge ACKed", r)
	}

	// Upstream: a node status patch from edged reaches the handler.
	patch := sdk.NewMessage("").BuildRouter("edged", "meta", "null/nodepatch/"+node, "patch")
	_ = patch.FillBody(`{"status":{}}`)
	if err := h.Deliver(patch); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-e.handler.msgs:
		if m.Header.ID != patch.Header.ID || m.Router.Resource != "null/nodepatch/"+node {
			t.Fatalf("handler got %s", m)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("node patch not delivered")
	}
	// Keepalives (every 200 ms) hold the session well past a few heartbeats.
	time.Sleep(700 * time.Millisecond)
	if !e.hub.Connected(node) || len(e.handler.Events()) != 1 {
		t.Fatalf("session events %v", e.handler.Events())
	}
}
