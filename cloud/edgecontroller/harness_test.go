package edgecontroller

import (
	"context"
	"encoding/json"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/edgehive/edgehive/cloud/nodelink/nodelinktest"
	"github.com/edgehive/edgehive/sdk"
)

const (
	edge1   = "edge-1"
	edge2   = "edge-2"
	cloudN  = "cloud-1" // a node without the edge label
	ns      = "default"
	timeout = 5 * time.Second
	// quiet is how long a test waits to see that nothing is sent.
	quiet = 300 * time.Millisecond
)

type harness struct {
	t      *testing.T
	ctx    context.Context
	client *fake.Clientset
	sender *nodelinktest.Sender
	c      *Controller
}

// start runs a controller over a fake clientset holding objs, waits until
// its informers watch, then connects the given nodes. Connecting after the
// start keeps the startup resync (of nodes connected early) out of the tests.
func start(t *testing.T, cfg Config, objs []runtime.Object, connected ...string) *harness {
	t.Helper()
	client := fake.NewClientset(objs...)
	var watches atomic.Int32
	client.PrependWatchReactor("*", func(k8stesting.Action) (bool, watch.Interface, error) {
		watches.Add(1)
		return false, nil, nil
	})
	sender := nodelinktest.New()
	logger := hclog.New(&hclog.LoggerOptions{Level: hclog.Warn, Output: testWriter{t}})
	c, err := New(client, sender, logger, cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(timeout):
			t.Errorf("Run did not return after cancel")
		}
	})
	want := int32(len(c.synced))
	deadline := time.Now().Add(timeout)
	for watches.Load() < want {
		if time.Now().After(deadline) {
			t.Fatalf("informers did not start watching (%d of %d)", watches.Load(), want)
		}
		time.Sleep(5 * time.Millisecond)
	}
	// The fake registers a watch just after the reactor ran.
	time.Sleep(50 * time.Millisecond)
	// Let the startup events drain while nothing is connected.
	for {
		synced := true
		for _, f := range c.synced {
			synced = synced && f()
		}
		if synced && c.queue.Len() == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("startup queue did not drain")
		}
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(20 * time.Millisecond)
	for _, n := range connected {
		sender.Connect(n)
	}
	return &harness{t: t, ctx: ctx, client: client, sender: sender, c: c}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// waitSent waits until a message matching want was sent to node.
func (h *harness) waitSent(node string, want func(*sdk.Message) bool) *sdk.Message {
	h.t.Helper()
	var found *sdk.Message
	_, ok := h.sender.WaitFor(timeout, func(sent []nodelinktest.Sent) bool {
		for _, s := range sent {
			if s.Node == node && want(s.Msg) {
				found = s.Msg
				return true
			}
		}
		return false
	})
	if !ok {
		h.t.Fatalf("no matching message sent to %s; sent: %s", node, describe(h.sender.Sent()))
	}
	return found
}

// expectQuiet checks that nothing matching is sent within quiet.
func (h *harness) expectQuiet(match func(nodelinktest.Sent) bool) {
	h.t.Helper()
	got, _ := h.sender.WaitFor(quiet, func(sent []nodelinktest.Sent) bool {
		for _, s := range sent {
			if match(s) {
				return true
			}
		}
		return false
	})
	for _, s := range got {
		if match(s) {
			h.t.Fatalf("unexpected message to %s: %s", s.Node, s.Msg.String())
		}
	}
}

// request sends msg upstream from node and waits for the answer.
func (h *harness) request(node string, msg *sdk.Message) *sdk.Message {
	h.t.Helper()
	h.c.HandleUpstream(h.ctx, node, msg)
	return h.waitSent(node, func(m *sdk.Message) bool { return m.Header.ParentID == msg.Header.ID })
}

func describe(sent []nodelinktest.Sent) string {
	var b strings.Builder
	for _, s := range sent {
		b.WriteString("\n  " + s.Node + ": " + s.Msg.String())
	}
	return b.String()
}

func isMsg(op, resource string) func(*sdk.Message) bool {
	return func(m *sdk.Message) bool { return m.Router.Operation == op && m.Router.Resource == resource }
}

func upMsg(op, resource string, content any) *sdk.Message {
	m := sdk.NewMessage("").BuildRouter("edged", sdk.GroupMeta, resource, op)
	switch c := content.(type) {
	case nil:
	case json.RawMessage:
		m.Content = c
	default:
		if err := m.FillBody(c); err != nil {
			panic(err)
		}
	}
	return m
}

// --- fixtures -----------------------------------------------------------------

func edgeNode(name string) *v1.Node {
	return &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, UID: types.UID("uid-node-" + name), ResourceVersion: "1",
		Labels: map[string]string{DefaultEdgeNodeLabel: ""}}}
}

func plainNode(name string) *v1.Node {
	return &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, ResourceVersion: "1"}}
}

func pod(name, node string, mutate ...func(*v1.Pod)) *v1.Pod {
	p := &v1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, UID: types.UID("uid-pod-" + name), ResourceVersion: "10"},
		Spec:       v1.PodSpec{NodeName: node, Containers: []v1.Container{{Name: "c", Image: "busybox"}}},
	}
	for _, m := range mutate {
		m(p)
	}
	return p
}

func withConfigMapVolume(cm string) func(*v1.Pod) {
	return func(p *v1.Pod) {
		p.Spec.Volumes = append(p.Spec.Volumes, v1.Volume{Name: cm, VolumeSource: v1.VolumeSource{
			ConfigMap: &v1.ConfigMapVolumeSource{LocalObjectReference: v1.LocalObjectReference{Name: cm}}}})
	}
}

func withSecretEnv(secret string) func(*v1.Pod) {
	return func(p *v1.Pod) {
		p.Spec.Containers[0].Env = append(p.Spec.Containers[0].Env, v1.EnvVar{Name: "X", ValueFrom: &v1.EnvVarSource{
			SecretKeyRef: &v1.SecretKeySelector{LocalObjectReference: v1.LocalObjectReference{Name: secret}, Key: "k"}}})
	}
}

func configMap(name, rv string) *v1.ConfigMap {
	return &v1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, UID: types.UID("uid-cm-" + name), ResourceVersion: rv},
		Data: map[string]string{"k": "v" + rv}}
}

func secret(name, rv string) *v1.Secret {
	return &v1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, ResourceVersion: rv},
		Data: map[string][]byte{"k": []byte("s" + rv)}}
}

// decodeContent decodes a message's content into v or fails the test.
func decodeContent(t *testing.T, m *sdk.Message, v any) {
	t.Helper()
	if err := json.Unmarshal(m.Content, v); err != nil {
		t.Fatalf("content of %s: %v: %s", m.String(), err, m.Content)
	}
}

// objResp is the answer shape as the edge reads it.
type objResp struct {
	Object json.RawMessage
	Err    *struct {
		ErrStatus metav1.Status
	}
}

func (h *harness) objectResp(m *sdk.Message) objResp {
	h.t.Helper()
	var r objResp
	decodeContent(h.t, m, &r)
	var keys map[string]json.RawMessage
	decodeContent(h.t, m, &keys)
	if _, ok := keys["Object"]; !ok {
		h.t.Fatalf("answer %s is not an ObjectResp: %s", m.String(), m.Content)
	}
	if _, ok := keys["Err"]; !ok {
		h.t.Fatalf("answer %s is not an ObjectResp: %s", m.String(), m.Content)
	}
	return r
}

// errStatus decodes an error answer ({"ErrStatus":..}); ok is false for
// any other content.
func errStatus(m *sdk.Message) (metav1.Status, bool) {
	var e struct {
		ErrStatus *metav1.Status
	}
	if json.Unmarshal(m.Content, &e) != nil || e.ErrStatus == nil {
		return metav1.Status{}, false
	}
	return *e.ErrStatus, true
}

func fakeClient() *fake.Clientset { return fake.NewClientset() }

func fakeSender() *nodelinktest.Sender { return nodelinktest.New() }
