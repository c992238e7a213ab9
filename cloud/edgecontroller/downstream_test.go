package edgecontroller

import (
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/edgehive/edgehive/cloud/nodelink/nodelinktest"
	"github.com/edgehive/edgehive/sdk"
)

func TestDownstreamPods(t *testing.T) {
	noSvc := false
	cfg := Config{SyncServices: &noSvc}
	cases := []struct {
		name string
		// act changes the API; want is the message expected on edge-1, or
		// "" for none at all.
		act    func(h *harness)
		wantOp string
		check  func(t *testing.T, m *sdk.Message)
	}{
		{
			name: "pod created on an edge node is inserted",
			act: func(h *harness) {
				mustCreatePod(h, pod("web", edge1))
			},
			wantOp: sdk.OpInsert,
			check: func(t *testing.T, m *sdk.Message) {
				var p v1.Pod
				decodeContent(t, m, &p)
				if p.APIVersion != "v1" || p.Kind != "Pod" || p.Spec.NodeName != edge1 {
					t.Fatalf("content: %s", m.Content)
				}
				if m.Header.ResourceVersion == "" || m.Header.ResourceVersion != p.ResourceVersion {
					t.Fatalf("header resourceversion %q, object %q", m.Header.ResourceVersion, p.ResourceVersion)
				}
				if m.Router.Source != ModuleName || m.Router.Group != sdk.WireGroupResource {
					t.Fatalf("route %+v", m.Router)
				}
			},
		},
		{
			name: "pod created on a cloud node is not sent",
			act: func(h *harness) {
				mustCreatePod(h, pod("web", cloudN))
			},
		},
		{
			name: "spec change is sent as update",
			act: func(h *harness) {
				p := mustCreatePod(h, pod("web", edge1))
				h.waitSent(edge1, isMsg(sdk.OpInsert, "default/pod/web"))
				h.sender.Reset()
				p.Labels = map[string]string{"v": "2"}
				p.ResourceVersion = "11"
				mustUpdatePod(h, p)
			},
			wantOp: sdk.OpUpdate,
			check: func(t *testing.T, m *sdk.Message) {
				var p v1.Pod
				decodeContent(t, m, &p)
				if p.Labels["v"] != "2" {
					t.Fatalf("labels not in the update: %s", m.Content)
				}
			},
		},
		{
			name: "status-only change is not sent",
			act: func(h *harness) {
				p := mustCreatePod(h, pod("web", edge1))
				h.waitSent(edge1, isMsg(sdk.OpInsert, "default/pod/web"))
				h.sender.Reset()
				p.Status.Phase = v1.PodRunning
				p.ResourceVersion = "11"
				mustUpdatePod(h, p)
			},
		},
		{
			name: "graceful delete (deletionTimestamp) is sent as update",
			act: func(h *harness) {
				p := mustCreatePod(h, pod("web", edge1))
				h.waitSent(edge1, isMsg(sdk.OpInsert, "default/pod/web"))
				h.sender.Reset()
				now := metav1.Now()
				grace := int64(30)
				p.DeletionTimestamp, p.DeletionGracePeriodSeconds = &now, &grace
				p.ResourceVersion = "11"
				mustUpdatePod(h, p)
			},
			wantOp: sdk.OpUpdate,
			check: func(t *testing.T, m *sdk.Message) {
				var p v1.Pod
				decodeContent(t, m, &p)
				if p.DeletionTimestamp == nil {
					t.Fatalf("no deletionTimestamp: %s", m.Content)
				}
			},
		},
		{
			name: "pod removed from the API is deleted with its last state",
			act: func(h *harness) {
				mustCreatePod(h, pod("web", edge1))
				h.waitSent(edge1, isMsg(sdk.OpInsert, "default/pod/web"))
				h.sender.Reset()
				if err := h.client.CoreV1().Pods(ns).Delete(h.ctx, "web", metav1.DeleteOptions{}); err != nil {
					t.Fatal(err)
				}
			},
			wantOp: sdk.OpDelete,
			check: func(t *testing.T, m *sdk.Message) {
				var p v1.Pod
				decodeContent(t, m, &p)
				if p.UID != "uid-pod-web" || p.Kind != "Pod" {
					t.Fatalf("delete content: %s", m.Content)
				}
			},
		},
		{
			name: "pod deleted from a cloud node is not sent",
			act: func(h *harness) {
				mustCreatePod(h, pod("web", cloudN))
				if err := h.client.CoreV1().Pods(ns).Delete(h.ctx, "web", metav1.DeleteOptions{}); err != nil {
					t.Fatal(err)
				}
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := start(t, cfg, []runtime.Object{edgeNode(edge1), plainNode(cloudN)}, edge1, cloudN)
			tc.act(h)
			if tc.wantOp == "" {
				h.expectQuiet(func(s nodelinktest.Sent) bool { return strings.Contains(s.Msg.Router.Resource, "/pod/") })
				return
			}
			m := h.waitSent(edge1, isMsg(tc.wantOp, "default/pod/web"))
			if tc.check != nil {
				tc.check(t, m)
			}
		})
	}
}

func mustCreatePod(h *harness, p *v1.Pod) *v1.Pod {
	h.t.Helper()
	out, err := h.client.CoreV1().Pods(p.Namespace).Create(h.ctx, p, metav1.CreateOptions{})
	if err != nil {
		h.t.Fatal(err)
	}
	return out
}

func mustUpdatePod(h *harness, p *v1.Pod) {
	h.t.Helper()
	if _, err := h.client.CoreV1().Pods(p.Namespace).Update(h.ctx, p, metav1.UpdateOptions{}); err != nil {
		h.t.Fatal(err)
	}
}

func TestConfigMapAndSecretReachOnlyNodesUsingThem(t *testing.T) {
	noSvc := false
	objs := []runtime.Object{
		edgeNode(edge1), edgeNode(edge2), plainNode(cloudN),
		pod("a", edge1, withConfigMapVolume("cfg")),
		pod("b", edge2, withSecretEnv("creds")),
		pod("c", cloudN, withConfigMapVolume("cfg"), withSecretEnv("creds")),
		configMap("cfg", "5"), secret("creds", "6"), configMap("unused", "7"),
	}
	h := start(t, Config{SyncServices: &noSvc}, objs, edge1, edge2, cloudN)

	cm := configMap("cfg", "8")
	if _, err := h.client.CoreV1().ConfigMaps(ns).Update(h.ctx, cm, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	m := h.waitSent(edge1, isMsg(sdk.OpUpdate, "default/configmap/cfg"))
	var got v1.ConfigMap
	decodeContent(t, m, &got)
	if got.Data["k"] != "v8" || got.Kind != "ConfigMap" || m.Header.ResourceVersion != "8" {
		t.Fatalf("configmap update: rv %q content %s", m.Header.ResourceVersion, m.Content)
	}

	s := secret("creds", "9")
	if _, err := h.client.CoreV1().Secrets(ns).Update(h.ctx, s, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	h.waitSent(edge2, isMsg(sdk.OpUpdate, "default/secret/creds"))
	// A new secret goes as update too (KubeEdge never inserts secrets).
	if _, err := h.client.CoreV1().Secrets(ns).Create(h.ctx, secret("later", "3"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.client.CoreV1().Pods(ns).Create(h.ctx, pod("d", edge2, withSecretEnv("late2")), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	h.waitSent(edge2, isMsg(sdk.OpInsert, "default/pod/d"))
	if _, err := h.client.CoreV1().Secrets(ns).Create(h.ctx, secret("late2", "4"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	h.waitSent(edge2, isMsg(sdk.OpUpdate, "default/secret/late2"))

	if err := h.client.CoreV1().ConfigMaps(ns).Delete(h.ctx, "cfg", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	h.waitSent(edge1, isMsg(sdk.OpDelete, "default/configmap/cfg"))
	if _, err := h.client.CoreV1().ConfigMaps(ns).Update(h.ctx, configMap("unused", "12"), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}

	h.expectQuiet(func(s nodelinktest.Sent) bool {
		r := s.Msg.Router.Resource
		switch {
		case s.Node == cloudN:
			return true // never anything to a cloud node
		case strings.Contains(r, "/configmap/") && s.Node != edge1:
			return true
		case strings.Contains(r, "/secret/") && s.Node != edge2:
			return true
		case strings.Contains(r, "unused"), strings.Contains(r, "/later"):
			return true
		}
		return false
	})
}

func TestServicesGoToEveryConnectedEdgeNode(t *testing.T) {
	svc := &v1.Service{ObjectMeta: metav1.ObjectMeta{Name: "api", Namespace: ns, ResourceVersion: "3"}}
	h := start(t, Config{}, []runtime.Object{edgeNode(edge1), edgeNode(edge2), plainNode(cloudN)}, edge1, cloudN)
	if _, err := h.client.CoreV1().Services(ns).Create(h.ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	//nolint:staticcheck // v1 Endpoints are what the edge serves
	ep := &v1.Endpoints{ObjectMeta: metav1.ObjectMeta{Name: "api", Namespace: ns, ResourceVersion: "4"}}
	if _, err := h.client.CoreV1().Endpoints(ns).Create(h.ctx, ep, metav1.CreateOptions{}); err != nil { //nolint:staticcheck
		t.Fatal(err)
	}
	m := h.waitSent(edge1, isMsg(sdk.OpInsert, "default/service/api"))
	if m.Header.ResourceVersion != "3" {
		t.Fatalf("service rv %q", m.Header.ResourceVersion)
	}
	h.waitSent(edge1, isMsg(sdk.OpInsert, "default/endpoints/api"))
	h.expectQuiet(func(s nodelinktest.Sent) bool { return s.Node != edge1 })
}

func TestNodeUpdatesReachTheNodeButStatusDoesNot(t *testing.T) {
	noSvc := false
	h := start(t, Config{SyncServices: &noSvc}, []runtime.Object{edgeNode(edge1)}, edge1)
	n := edgeNode(edge1)
	n.Status.Phase = v1.NodeRunning
	n.ResourceVersion = "2"
	if _, err := h.client.CoreV1().Nodes().UpdateStatus(h.ctx, n, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	h.expectQuiet(func(s nodelinktest.Sent) bool {
		return s.Msg.Router.Resource == "null/node/"+edge1 && s.Msg.Router.Operation == sdk.OpUpdate
	})
	n.Spec.Unschedulable = true
	n.ResourceVersion = "3"
	if _, err := h.client.CoreV1().Nodes().Update(h.ctx, n, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	m := h.waitSent(edge1, isMsg(sdk.OpUpdate, "null/node/"+edge1))
	var got v1.Node
	decodeContent(t, m, &got)
	if !got.Spec.Unschedulable || got.Kind != "Node" {
		t.Fatalf("node update content %s", m.Content)
	}
}

func TestResyncOnConnect(t *testing.T) {
	objs := []runtime.Object{
		edgeNode(edge1), edgeNode(edge2),
		pod("a", edge1, withConfigMapVolume("cfg"), withSecretEnv("creds")),
		pod("b", edge1, func(p *v1.Pod) {
			now := metav1.Now()
			p.DeletionTimestamp = &now
		}),
		pod("other", edge2, withConfigMapVolume("cfg2")),
		configMap("cfg", "5"), configMap("cfg2", "6"), secret("creds", "7"),
		&v1.Service{ObjectMeta: metav1.ObjectMeta{Name: "kubernetes", Namespace: ns, ResourceVersion: "2"}},
	}
	h := start(t, Config{}, objs) // nothing connected: startup sends nothing
	if got := h.sender.Sent(); len(got) != 0 {
		t.Fatalf("sent to disconnected nodes: %s", describe(got))
	}
	h.sender.Connect(edge1)
	h.c.NodeConnected(h.ctx, edge1)
	want := []string{
		"update null/node/" + edge1,
		"update default/configmap/cfg",
		"update default/secret/creds",
		"update default/service/kubernetes",
		"update default/pod/a",
		"update default/pod/b", // graceful delete pending: the edge finishes it
	}
	sent, ok := h.sender.WaitFor(timeout, func(sent []nodelinktest.Sent) bool {
		got := map[string]bool{}
		for _, s := range sent {
			got[s.Msg.Router.Operation+" "+s.Msg.Router.Resource] = true
		}
		for _, w := range want {
			if !got[w] {
				return false
			}
		}
		return true
	})
	if !ok {
		t.Fatalf("resync sent %s", describe(sent))
	}
	got := map[string]bool{}
	for _, s := range sent {
		if s.Node != edge1 {
			t.Fatalf("resync of %s sent to %s: %s", edge1, s.Node, s.Msg.String())
		}
		if s.Msg.Header.ResourceVersion == "" {
			t.Fatalf("no resourceversion on %s", s.Msg.String())
		}
		got[s.Msg.Router.Operation+" "+s.Msg.Router.Resource] = true
	}
	for _, w := range want {
		if !got[w] {
			t.Fatalf("resync lacks %q; sent %s", w, describe(sent))
		}
	}
	// In the resync, configMaps go before the pods that use them. (Pod
	// inserts queued at startup may also arrive, before or after.)
	cmAt, podAt := -1, -1
	for i, s := range sent {
		switch r := s.Msg.Router.Resource; {
		case r == "default/configmap/cfg" && cmAt < 0:
			cmAt = i
		case r == "default/pod/a" && s.Msg.Router.Operation == sdk.OpUpdate:
			podAt = i
		}
	}
	if cmAt > podAt {
		t.Fatalf("resync sent the pod before its configmap: %s", describe(sent))
	}
	h.expectQuiet(func(s nodelinktest.Sent) bool {
		return strings.Contains(s.Msg.Router.Resource, "other") || strings.Contains(s.Msg.Router.Resource, "cfg2")
	})

	// A node that is not connected here is skipped without retries.
	h.sender.Reset()
	h.c.NodeConnected(h.ctx, edge2)
	h.expectQuiet(func(nodelinktest.Sent) bool { return true })
}

func TestDownstreamSendErrorIsRetried(t *testing.T) {
	noSvc := false
	h := start(t, Config{SyncServices: &noSvc}, []runtime.Object{edgeNode(edge1)}, edge1)
	h.sender.FailWith(errTest)
	mustCreatePod(h, pod("web", edge1))
	h.expectQuiet(func(nodelinktest.Sent) bool { return true })
	h.sender.FailWith(nil)
	h.waitSent(edge1, isMsg(sdk.OpInsert, "default/pod/web"))
}

type testErr string

func (e testErr) Error() string { return string(e) }

const errTest = testErr("link broken")
