package edgecontroller

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	authv1 "k8s.io/api/authentication/v1"
	coordv1 "k8s.io/api/coordination/v1"
	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	k8stesting "k8s.io/client-go/testing"

	"github.com/edgehive/edgehive/cloud/nodelink/nodelinktest"
	"github.com/edgehive/edgehive/sdk"
)

// expect helpers for answers --------------------------------------------------

func wantObject(check func(t *testing.T, h *harness, obj json.RawMessage)) func(*testing.T, *harness, *sdk.Message) {
	return func(t *testing.T, h *harness, m *sdk.Message) {
		t.Helper()
		r := h.objectResp(m)
		if r.Err != nil {
			t.Fatalf("answer has an error: %s", m.Content)
		}
		if string(r.Object) == "null" || len(r.Object) == 0 {
			t.Fatalf("answer has no object: %s", m.Content)
		}
		if m.Header.ResourceVersion != "" {
			t.Fatalf("ObjectResp answers carry no resourceversion (no ACK expected); got %q", m.Header.ResourceVersion)
		}
		if check != nil {
			check(t, h, r.Object)
		}
	}
}

func wantObjectErr(code int32) func(*testing.T, *harness, *sdk.Message) {
	return func(t *testing.T, h *harness, m *sdk.Message) {
		t.Helper()
		r := h.objectResp(m)
		if r.Err == nil {
			t.Fatalf("want error %d, got %s", code, m.Content)
		}
		if r.Err.ErrStatus.Code != code || r.Err.ErrStatus.Status != metav1.StatusFailure || r.Err.ErrStatus.Message == "" {
			t.Fatalf("want error %d, got %s", code, m.Content)
		}
	}
}

func wantOK(after func(t *testing.T, h *harness)) func(*testing.T, *harness, *sdk.Message) {
	return func(t *testing.T, h *harness, m *sdk.Message) {
		t.Helper()
		if string(m.Content) != `"OK"` {
			t.Fatalf("want \"OK\", got %s", m.Content)
		}
		if after != nil {
			after(t, h)
		}
	}
}

func wantErrStatus(code int32) func(*testing.T, *harness, *sdk.Message) {
	return func(t *testing.T, h *harness, m *sdk.Message) {
		t.Helper()
		st, ok := errStatus(m)
		if !ok || st.Code != code || st.Message == "" {
			t.Fatalf("want ErrStatus %d, got %s", code, m.Content)
		}
		if m.Header.ResourceVersion != "" {
			t.Fatalf("error answers carry no resourceversion; got %q", m.Header.ResourceVersion)
		}
	}
}

func then(a, b func(*testing.T, *harness, *sdk.Message)) func(*testing.T, *harness, *sdk.Message) {
	return func(t *testing.T, h *harness, m *sdk.Message) {
		t.Helper()
		a(t, h, m)
		b(t, h, m)
	}
}

func apiCheck(f func(t *testing.T, h *harness)) func(*testing.T, *harness, *sdk.Message) {
	return func(t *testing.T, h *harness, _ *sdk.Message) {
		t.Helper()
		f(t, h)
	}
}

// podDeletedOnEdge waits for the delete stub of pod default/name, with uid,
// sent to edge1.
func podDeletedOnEdge(name, uid string) func(*testing.T, *harness, *sdk.Message) {
	return func(t *testing.T, h *harness, _ *sdk.Message) {
		m := h.waitSent(edge1, isMsg(sdk.OpDelete, ns+"/pod/"+name))
		var p v1.Pod
		decodeContent(t, m, &p)
		if string(p.UID) != uid || p.Name != name || p.Namespace != ns {
			t.Fatalf("delete stub %s", m.Content)
		}
	}
}

func raw(s string) json.RawMessage { return json.RawMessage(s) }

func getPod(t *testing.T, h *harness, name string) (*v1.Pod, error) {
	t.Helper()
	return h.client.CoreV1().Pods(ns).Get(context.Background(), name, metav1.GetOptions{})
}

func TestUpstream(t *testing.T) {
	registration := &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: edge1, Labels: map[string]string{"kubernetes.io/hostname": edge1}},
		Status: v1.NodeStatus{Capacity: v1.ResourceList{}, Conditions: []v1.NodeCondition{{Type: v1.NodeReady, Status: v1.ConditionTrue}}}}
	lease := func(name string) *coordv1.Lease {
		holder, d := name, int32(40)
		now := metav1.NewMicroTime(time.Now())
		return &coordv1.Lease{TypeMeta: metav1.TypeMeta{APIVersion: "coordination.k8s.io/v1", Kind: "Lease"},
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: leaseNamespace, ResourceVersion: "999"},
			Spec:       coordv1.LeaseSpec{HolderIdentity: &holder, LeaseDurationSeconds: &d, RenewTime: &now}}
	}
	statusPatchText := func(uid, phase string) string {
		return `{"metadata":{"uid":"` + uid + `"},"status":{"phase":"` + phase + `","podIP":"10.88.0.5"}}`
	}
	base := []runtime.Object{edgeNode(edge1), edgeNode(edge2), plainNode(cloudN),
		pod("mine", edge1, withConfigMapVolume("cfg"), withSecretEnv("creds")),
		pod("theirs", edge2, withConfigMapVolume("cfg2"), withSecretEnv("creds2")),
		pod("nocfg", edge1, withConfigMapVolume("missing")),
		configMap("cfg", "5"), configMap("cfg2", "6"), secret("creds", "7"), secret("creds2", "8"),
		&v1.Service{ObjectMeta: metav1.ObjectMeta{Name: "api", Namespace: ns, ResourceVersion: "3"}},
	}

	cases := []struct {
		name    string
		objs    []runtime.Object // replaces base when set
		msg     *sdk.Message
		check   func(*testing.T, *harness, *sdk.Message)
		noReply bool
	}{
		// --- node registration and updates
		{name: "node insert creates the node with the edge label", objs: []runtime.Object{},
			msg: upMsg(sdk.OpInsert, "null/node/"+edge1, registration),
			check: wantObject(func(t *testing.T, h *harness, obj json.RawMessage) {
				var n v1.Node
				if err := json.Unmarshal(obj, &n); err != nil || n.Kind != "Node" || n.APIVersion != "v1" {
					t.Fatalf("object %s (%v)", obj, err)
				}
				got, err := h.client.CoreV1().Nodes().Get(context.Background(), edge1, metav1.GetOptions{})
				if err != nil {
					t.Fatal(err)
				}
				if _, ok := got.Labels[DefaultEdgeNodeLabel]; !ok || got.Labels["kubernetes.io/hostname"] != edge1 {
					t.Fatalf("labels %v", got.Labels)
				}
			})},
		{name: "node insert on an existing edge node merges labels",
			msg: upMsg(sdk.OpInsert, "null/node/"+edge1, registration),
			check: wantObject(func(t *testing.T, h *harness, _ json.RawMessage) {
				got, _ := h.client.CoreV1().Nodes().Get(context.Background(), edge1, metav1.GetOptions{})
				if _, ok := got.Labels[DefaultEdgeNodeLabel]; !ok || got.Labels["kubernetes.io/hostname"] != edge1 {
					t.Fatalf("labels %v", got.Labels)
				}
			})},
		{name: "node insert over a cloud node is refused",
			msg:   upMsg(sdk.OpInsert, "null/node/"+cloudN, &v1.Node{}),
			check: wantObjectErr(http.StatusForbidden)},
		{name: "node insert for another node is refused",
			msg:   upMsg(sdk.OpInsert, "null/node/"+edge2, registration),
			check: wantObjectErr(http.StatusForbidden)},
		{name: "node insert with a non-object content is a bad request",
			msg:   upMsg(sdk.OpInsert, "null/node/"+edge1, raw(`[1,2]`)),
			check: wantObjectErr(http.StatusBadRequest)},
		{name: "legacy nodestatus insert answers OK",
			objs: []runtime.Object{},
			msg:  upMsg(sdk.OpInsert, "null/nodestatus/"+edge1, registration),
			check: wantOK(func(t *testing.T, h *harness) {
				if _, err := h.client.CoreV1().Nodes().Get(context.Background(), edge1, metav1.GetOptions{}); err != nil {
					t.Fatal(err)
				}
			})},
		{name: "node update merges labels and answers OK",
			msg: upMsg(sdk.OpUpdate, "null/node/"+edge1, &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: edge1, Labels: map[string]string{"zone": "a"}}}),
			check: wantOK(func(t *testing.T, h *harness) {
				got, _ := h.client.CoreV1().Nodes().Get(context.Background(), edge1, metav1.GetOptions{})
				if got.Labels["zone"] != "a" {
					t.Fatalf("labels %v", got.Labels)
				}
				if _, ok := got.Labels[DefaultEdgeNodeLabel]; !ok {
					t.Fatalf("edge label lost: %v", got.Labels)
				}
			})},
		{name: "node update of another node is refused",
			msg:   upMsg(sdk.OpUpdate, "null/node/"+edge2, &v1.Node{}),
			check: wantErrStatus(http.StatusForbidden)},
		{name: "nodepatch merges status conditions (as a JSON string, like KubeEdge)",
			msg: upMsg(sdk.OpPatch, "null/nodepatch/"+edge1, `{"status":{"conditions":[{"type":"Ready","status":"True","reason":"KubeletReady"}]}}`),
			check: wantObject(func(t *testing.T, h *harness, obj json.RawMessage) {
				got, _ := h.client.CoreV1().Nodes().Get(context.Background(), edge1, metav1.GetOptions{})
				if len(got.Status.Conditions) != 1 || got.Status.Conditions[0].Reason != "KubeletReady" {
					t.Fatalf("conditions %+v", got.Status.Conditions)
				}
			})},
		{name: "nodepatch as an embedded object works too",
			msg:   upMsg(sdk.OpPatch, "null/nodepatch/"+edge1, raw(`{"status":{"phase":"Running"}}`)),
			check: wantObject(nil)},
		{name: "nodepatch touching the spec is refused",
			msg:   upMsg(sdk.OpPatch, "null/nodepatch/"+edge1, `{"spec":{"unschedulable":true},"status":{}}`),
			check: wantObjectErr(http.StatusBadRequest)},
		{name: "nodepatch of another node is refused",
			msg:   upMsg(sdk.OpPatch, "null/nodepatch/"+edge2, `{"status":{}}`),
			check: wantObjectErr(http.StatusForbidden)},
		{name: "nodepatch with malformed JSON is a bad request",
			msg:   upMsg(sdk.OpPatch, "null/nodepatch/"+edge1, `{"status":`),
			check: wantObjectErr(http.StatusBadRequest)},
		{name: "nodepatch without content is a bad request",
			msg:   upMsg(sdk.OpPatch, "null/nodepatch/"+edge1, nil),
			check: wantObjectErr(http.StatusBadRequest)},
		{name: "legacy nodestatus update answers OK",
			msg: upMsg(sdk.OpUpdate, "null/nodestatus/"+edge1, map[string]any{"UID": "x", "Status": v1.NodeStatus{Phase: v1.NodeRunning}}),
			check: wantOK(func(t *testing.T, h *harness) {
				got, _ := h.client.CoreV1().Nodes().Get(context.Background(), edge1, metav1.GetOptions{})
				if got.Status.Phase != v1.NodeRunning {
					t.Fatalf("status %+v", got.Status)
				}
			})},

		// --- leases
		{name: "lease query of a missing lease is NotFound in an ObjectResp",
			msg: upMsg(sdk.OpQuery, "kube-node-lease/lease/"+edge1, nil), check: wantObjectErr(http.StatusNotFound)},
		{name: "lease insert creates it",
			msg: upMsg(sdk.OpInsert, "kube-node-lease/lease/"+edge1, lease(edge1)),
			check: wantObject(func(t *testing.T, h *harness, _ json.RawMessage) {
				l, err := h.client.CoordinationV1().Leases(leaseNamespace).Get(context.Background(), edge1, metav1.GetOptions{})
				if err != nil || *l.Spec.HolderIdentity != edge1 {
					t.Fatalf("lease %+v %v", l, err)
				}
			})},
		{name: "lease insert of an existing lease renews it",
			objs: append([]runtime.Object{&coordv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: edge1, Namespace: leaseNamespace}}}, edgeNode(edge1)),
			msg:  upMsg(sdk.OpInsert, "kube-node-lease/lease/"+edge1, lease(edge1)),
			check: wantObject(func(t *testing.T, h *harness, _ json.RawMessage) {
				l, _ := h.client.CoordinationV1().Leases(leaseNamespace).Get(context.Background(), edge1, metav1.GetOptions{})
				if l.Spec.RenewTime == nil {
					t.Fatalf("lease not renewed: %+v", l.Spec)
				}
			})},
		{name: "lease update with a stale resourceVersion still renews",
			objs: append([]runtime.Object{&coordv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: edge1, Namespace: leaseNamespace, ResourceVersion: "5"}}}, edgeNode(edge1)),
			msg:  upMsg(sdk.OpUpdate, "kube-node-lease/lease/"+edge1, lease(edge1)),
			check: wantObject(func(t *testing.T, h *harness, obj json.RawMessage) {
				var l coordv1.Lease
				_ = json.Unmarshal(obj, &l)
				if l.Spec.RenewTime == nil || l.Kind != "Lease" {
					t.Fatalf("answer lease %s", obj)
				}
			})},
		{name: "lease query after insert returns it",
			objs: append([]runtime.Object{lease(edge1)}, edgeNode(edge1)),
			msg:  upMsg(sdk.OpQuery, "kube-node-lease/lease/"+edge1, nil), check: wantObject(nil)},
		{name: "another node's lease is refused",
			msg: upMsg(sdk.OpUpdate, "kube-node-lease/lease/"+edge2, lease(edge2)), check: wantObjectErr(http.StatusForbidden)},
		{name: "a lease outside kube-node-lease is refused",
			msg: upMsg(sdk.OpInsert, "default/lease/"+edge1, lease(edge1)), check: wantObjectErr(http.StatusForbidden)},
		{name: "lease with garbage content is a bad request",
			msg: upMsg(sdk.OpUpdate, "kube-node-lease/lease/"+edge1, raw(`"{not json"`)), check: wantObjectErr(http.StatusBadRequest)},

		// --- pod status
		{name: "podpatch updates the pod's status",
			msg: upMsg(sdk.OpPatch, "default/podpatch/mine", statusPatchText("uid-pod-mine", "Running")),
			check: wantObject(func(t *testing.T, h *harness, obj json.RawMessage) {
				p, _ := getPod(t, h, "mine")
				if p.Status.Phase != v1.PodRunning || p.Status.PodIP != "10.88.0.5" {
					t.Fatalf("status %+v", p.Status)
				}
				var ans v1.Pod
				_ = json.Unmarshal(obj, &ans)
				if ans.Kind != "Pod" || ans.Status.Phase != v1.PodRunning {
					t.Fatalf("answer %s", obj)
				}
			})},
		{name: "podpatch of a pod on another node is refused",
			msg: upMsg(sdk.OpPatch, "default/podpatch/theirs", statusPatchText("uid-pod-theirs", "Failed")),
			check: then(wantObjectErr(http.StatusForbidden), apiCheck(func(t *testing.T, h *harness) {
				if p, _ := getPod(t, h, "theirs"); p.Status.Phase != "" {
					t.Fatalf("foreign pod changed: %+v", p.Status)
				}
			}))},
		{name: "podpatch of a pod gone from the API deletes it on the edge",
			msg:   upMsg(sdk.OpPatch, "default/podpatch/gone", statusPatchText("uid-gone", "Running")),
			check: then(wantObjectErr(http.StatusNotFound), podDeletedOnEdge("gone", "uid-gone"))},
		{name: "podpatch for a replaced pod (other UID) deletes the old one on the edge",
			msg: upMsg(sdk.OpPatch, "default/podpatch/mine", statusPatchText("uid-old", "Running")),
			check: then(wantObjectErr(http.StatusConflict), then(podDeletedOnEdge("mine", "uid-old"), apiCheck(func(t *testing.T, h *harness) {
				if p, _ := getPod(t, h, "mine"); p.Status.Phase != "" {
					t.Fatalf("new pod's status changed: %+v", p.Status)
				}
			})))},
		{name: "podpatch changing labels is refused",
			msg: upMsg(sdk.OpPatch, "default/podpatch/mine", `{"metadata":{"labels":{"a":"b"}},"status":{}}`), check: wantObjectErr(http.StatusBadRequest)},
		{name: "podpatch that is a number is a bad request",
			msg: upMsg(sdk.OpPatch, "default/podpatch/mine", raw(`42`)), check: wantObjectErr(http.StatusBadRequest)},
		{name: "podpatch on a list resource is a bad request",
			msg: upMsg(sdk.OpPatch, "default/podpatch", `{"status":{}}`), check: wantObjectErr(http.StatusBadRequest)},
		{name: "legacy podstatus update answers OK and applies",
			msg: upMsg(sdk.OpUpdate, "default/podstatus/mine", map[string]any{"UID": "uid-pod-mine", "Name": "mine", "Status": v1.PodStatus{Phase: v1.PodSucceeded}}),
			check: wantOK(func(t *testing.T, h *harness) {
				if p, _ := getPod(t, h, "mine"); p.Status.Phase != v1.PodSucceeded {
					t.Fatalf("status %+v", p.Status)
				}
			})},
		{name: "legacy podstatus list for a gone pod deletes it on the edge",
			msg: upMsg(sdk.OpUpdate, "default/podstatus", []map[string]any{{"UID": "u-x", "Name": "gone", "Status": v1.PodStatus{}}}),
			check: wantOK(func(t *testing.T, h *harness) {
				h.waitSent(edge1, isMsg(sdk.OpDelete, "default/pod/gone"))
			})},

		// --- pod deletes
		{name: "pod delete with DeleteOptions removes the node's pod",
			msg: upMsg(sdk.OpDelete, "default/pod/mine", map[string]any{"gracePeriodSeconds": 0, "preconditions": map[string]any{"uid": "uid-pod-mine"}}),
			check: wantOK(func(t *testing.T, h *harness) {
				if _, err := getPod(t, h, "mine"); !apierrors.IsNotFound(err) {
					t.Fatalf("pod still there: %v", err)
				}
			})},
		{name: "legacy pod delete with a UID string",
			msg: upMsg(sdk.OpDelete, "default/pod/mine", "uid-pod-mine"),
			check: wantOK(func(t *testing.T, h *harness) {
				if _, err := getPod(t, h, "mine"); !apierrors.IsNotFound(err) {
					t.Fatalf("pod still there: %v", err)
				}
			})},
		{name: "pod delete of a pod already gone is OK",
			msg: upMsg(sdk.OpDelete, "default/pod/gone", map[string]any{"gracePeriodSeconds": 0}), check: wantOK(nil)},
		{name: "pod delete of another node's pod is refused",
			msg: upMsg(sdk.OpDelete, "default/pod/theirs", map[string]any{"gracePeriodSeconds": 0}),
			check: then(wantErrStatus(http.StatusForbidden), apiCheck(func(t *testing.T, h *harness) {
				if _, err := getPod(t, h, "theirs"); err != nil {
					t.Fatalf("foreign pod deleted: %v", err)
				}
			}))},
		{name: "pod delete with a number as content is a bad request",
			msg: upMsg(sdk.OpDelete, "default/pod/mine", raw(`7`)), check: wantErrStatus(http.StatusBadRequest)},
		{name: "mirror pod insert bound to the node is created",
			msg: upMsg(sdk.OpInsert, "default/pod/static-x", pod("static-x", edge1)),
			check: wantObject(func(t *testing.T, h *harness, _ json.RawMessage) {
				if _, err := getPod(t, h, "static-x"); err != nil {
					t.Fatal(err)
				}
			})},
		{name: "mirror pod insert bound to another node is refused",
			msg: upMsg(sdk.OpInsert, "default/pod/static-y", pod("static-y", edge2)), check: wantObjectErr(http.StatusForbidden)},

		// --- queries
		{name: "configmap used by the node's pod is answered with an ACK-able resourceversion",
			msg: upMsg(sdk.OpQuery, "default/configmap/cfg", nil),
			check: func(t *testing.T, h *harness, m *sdk.Message) {
				var cm v1.ConfigMap
				decodeContent(t, m, &cm)
				if cm.Kind != "ConfigMap" || cm.Data["k"] != "v5" || m.Header.ResourceVersion != "5" {
					t.Fatalf("rv %q content %s", m.Header.ResourceVersion, m.Content)
				}
				if m.Router.Source != ModuleName || m.Router.Group != sdk.WireGroupResource || m.Router.Operation != sdk.OpResponse ||
					m.Router.Resource != "default/configmap/cfg" {
					t.Fatalf("route %+v", m.Router)
				}
			}},
		{name: "configmap not used by the node is refused",
			msg: upMsg(sdk.OpQuery, "default/configmap/cfg2", nil), check: wantErrStatus(http.StatusForbidden)},
		{name: "configmap used but missing is NotFound",
			msg: upMsg(sdk.OpQuery, "default/configmap/missing", nil), check: wantErrStatus(http.StatusNotFound)},
		{name: "secret used by the node's pod is answered",
			msg: upMsg(sdk.OpQuery, "default/secret/creds", nil),
			check: func(t *testing.T, h *harness, m *sdk.Message) {
				var s v1.Secret
				decodeContent(t, m, &s)
				if string(s.Data["k"]) != "s7" || m.Header.ResourceVersion != "7" {
					t.Fatalf("content %s", m.Content)
				}
			}},
		{name: "secret of another node's pod is refused",
			msg: upMsg(sdk.OpQuery, "default/secret/creds2", nil), check: wantErrStatus(http.StatusForbidden)},
		{name: "service is answered without resourceversion",
			msg: upMsg(sdk.OpQuery, "default/service/api", nil),
			check: func(t *testing.T, h *harness, m *sdk.Message) {
				var s v1.Service
				decodeContent(t, m, &s)
				if s.Name != "api" || s.Kind != "Service" || m.Header.ResourceVersion != "" {
					t.Fatalf("rv %q content %s", m.Header.ResourceVersion, m.Content)
				}
			}},
		{name: "own node query", msg: upMsg(sdk.OpQuery, "null/node/"+edge1, nil),
			check: func(t *testing.T, h *harness, m *sdk.Message) {
				var n v1.Node
				decodeContent(t, m, &n)
				if n.Name != edge1 {
					t.Fatalf("content %s", m.Content)
				}
			}},
		{name: "other node query is refused", msg: upMsg(sdk.OpQuery, "null/node/"+edge2, nil), check: wantErrStatus(http.StatusForbidden)},
		{name: "own pod query", msg: upMsg(sdk.OpQuery, "default/pod/mine", nil),
			check: func(t *testing.T, h *harness, m *sdk.Message) {
				var p v1.Pod
				decodeContent(t, m, &p)
				if p.UID != "uid-pod-mine" {
					t.Fatalf("content %s", m.Content)
				}
			}},
		{name: "other node's pod query is refused", msg: upMsg(sdk.OpQuery, "default/pod/theirs", nil), check: wantErrStatus(http.StatusForbidden)},
		{name: "service account token for the node's pod",
			msg: upMsg(sdk.OpQuery, "default/serviceaccounttoken/default", &authv1.TokenRequest{Spec: authv1.TokenRequestSpec{
				Audiences: []string{"api"}, BoundObjectRef: &authv1.BoundObjectReference{Kind: "Pod", Name: "mine"}}}),
			check: func(t *testing.T, h *harness, m *sdk.Message) {
				var tr authv1.TokenRequest
				decodeContent(t, m, &tr)
				if tr.Status.Token != "token-for-default" {
					t.Fatalf("content %s", m.Content)
				}
			}},
		{name: "service account token bound to another node's pod is refused",
			msg: upMsg(sdk.OpQuery, "default/serviceaccounttoken/default", &authv1.TokenRequest{Spec: authv1.TokenRequestSpec{
				BoundObjectRef: &authv1.BoundObjectReference{Kind: "Pod", Name: "theirs"}}}),
			check: wantErrStatus(http.StatusForbidden)},
		{name: "unbound service account token is refused",
			msg: upMsg(sdk.OpQuery, "default/serviceaccounttoken/default", &authv1.TokenRequest{}), check: wantErrStatus(http.StatusForbidden)},
		{name: "list query is a bad request", msg: upMsg(sdk.OpQuery, "default/configmap", nil), check: wantErrStatus(http.StatusBadRequest)},
		{name: "unknown type is a bad request", msg: upMsg(sdk.OpQuery, "default/widget/x", nil), check: wantErrStatus(http.StatusBadRequest)},
		{name: "unknown operation is a bad request", msg: upMsg("frobnicate", "default/pod/mine", nil), check: wantErrStatus(http.StatusBadRequest)},
		{name: "malformed resource is a bad request", msg: upMsg(sdk.OpQuery, "nonsense", nil), check: wantErrStatus(http.StatusBadRequest)},
		{name: "resource with the cloud's node prefix is understood",
			msg: upMsg(sdk.OpQuery, "node/"+edge1+"/default/pod/mine", nil),
			check: func(t *testing.T, h *harness, m *sdk.Message) {
				if _, ok := errStatus(m); ok {
					t.Fatalf("error %s", m.Content)
				}
			}},

		{name: "an error answer from the edge is not answered", noReply: true,
			msg: func() *sdk.Message {
				m := upMsg(sdk.OpError, "default/pod/mine", "storage failed")
				m.Header.ParentID = "some-downstream-id"
				return m
			}(),
			check: apiCheck(func(*testing.T, *harness) {})},

		{name: "devicetwin's report (source twin, group resource) is left alone", noReply: true,
			msg:   sdk.NewMessage("").BuildRouter("twin", sdk.WireGroupResource, "device/default/thermo-1/twin/edge_updated", sdk.OpUpdate),
			check: apiCheck(func(*testing.T, *harness) {})},
		{name: "eventbus upload is left alone", noReply: true,
			msg:   sdk.NewMessage("").BuildRouter("bus", sdk.WireGroupUser, "default/test", sdk.OpUpload),
			check: apiCheck(func(*testing.T, *harness) {})},

		// --- events
		{name: "event about the node's pod is created, without an answer", noReply: true,
			msg: upMsg(sdk.OpInsert, "default/event/mine.1", &v1.Event{ObjectMeta: metav1.ObjectMeta{Name: "mine.1", Namespace: ns},
				InvolvedObject: v1.ObjectReference{Kind: "Pod", Namespace: ns, Name: "mine"}, Reason: "Started"}),
			check: apiCheck(func(t *testing.T, h *harness) {
				deadline := time.Now().Add(timeout)
				for {
					if ev, err := h.client.CoreV1().Events(ns).Get(context.Background(), "mine.1", metav1.GetOptions{}); err == nil && ev.Reason == "Started" {
						return
					}
					if time.Now().After(deadline) {
						t.Fatal("event not created")
					}
					time.Sleep(10 * time.Millisecond)
				}
			})},
		{name: "event about another node's pod is refused",
			msg: upMsg(sdk.OpInsert, "default/event/theirs.1", &v1.Event{ObjectMeta: metav1.ObjectMeta{Name: "theirs.1", Namespace: ns},
				InvolvedObject: v1.ObjectReference{Kind: "Pod", Namespace: ns, Name: "theirs"}}),
			check: wantErrStatus(http.StatusForbidden)},
		{name: "event with garbage is a bad request",
			msg: upMsg(sdk.OpInsert, "default/event/x", raw(`"nope"`)), check: wantErrStatus(http.StatusBadRequest)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			noSvc := false
			objs := base
			if tc.objs != nil {
				objs = tc.objs
			}
			h := start(t, Config{SyncServices: &noSvc}, objs, edge1)
			h.client.PrependReactor("create", "serviceaccounts", func(a k8stesting.Action) (bool, runtime.Object, error) {
				if a.GetSubresource() != "token" {
					return false, nil, nil
				}
				req := a.(k8stesting.CreateAction).GetObject().(*authv1.TokenRequest)
				if req.Spec.BoundObjectRef == nil || req.Spec.BoundObjectRef.UID == "" {
					return true, nil, apierrors.NewBadRequest("token not bound to a pod UID")
				}
				out := req.DeepCopy()
				out.Status.Token = "token-for-" + a.(k8stesting.CreateActionImpl).Name
				return true, out, nil
			})
			if tc.noReply {
				h.c.HandleUpstream(h.ctx, edge1, tc.msg)
				tc.check(t, h, nil)
				h.expectQuiet(func(s nodelinktest.Sent) bool { return s.Msg.Header.ParentID == tc.msg.Header.ID })
				return
			}
			resp := h.request(edge1, tc.msg)
			if resp.Router.Operation != sdk.OpResponse || resp.Router.Source != ModuleName ||
				resp.Router.Group != sdk.WireGroupResource || !strings.HasSuffix(tc.msg.Router.Resource, resp.Router.Resource) {
				t.Fatalf("answer route %+v for %s", resp.Router, tc.msg.String())
			}
			tc.check(t, h, resp)
		})
	}
}

// Every content a node could send, on every resource type handled, must give
// an answer or nothing, never a panic or a stuck worker.
func TestUpstreamMalformedNeverPanics(t *testing.T) {
	noSvc := false
	h := start(t, Config{SyncServices: &noSvc, UpstreamWorkers: 1, UpstreamQueue: 4096}, []runtime.Object{edgeNode(edge1), pod("mine", edge1)}, edge1)
	contents := []json.RawMessage{nil, raw(`null`), raw(`""`), raw(`"{"`), raw(`[]`), raw(`{}`), raw(`{"metadata":null}`),
		raw(`{"status":null}`), raw(`{"status":[1]}`), raw(`{"metadata":{"uid":7}}`), raw(`"\"x\""`), raw(`{"Event":null,"Data":"{"}`),
		raw(`{"spec":{"boundObjectRef":{"kind":"Pod"}}}`), raw(`[{"Name":""}]`), raw(`123`), raw(`true`)}
	resources := []string{"null/node/" + edge1, "null/nodepatch/" + edge1, "null/nodestatus/" + edge1, "kube-node-lease/lease/" + edge1,
		"default/podpatch/mine", "default/podstatus/mine", "default/podstatus", "default/pod/mine", "default/event/e",
		"default/serviceaccounttoken/default", "default/configmap/x", "null/node", "a/b/c/d", "", "/", "//"}
	ops := []string{sdk.OpInsert, sdk.OpUpdate, sdk.OpPatch, sdk.OpDelete, sdk.OpQuery}
	n := 0
	for _, r := range resources {
		for _, op := range ops {
			for _, c := range contents {
				m := sdk.NewMessage("").BuildRouter("edged", sdk.GroupMeta, r, op)
				m.Content = c
				h.c.HandleUpstream(h.ctx, edge1, m)
				n++
			}
		}
	}
	// One worker handles them in order: once a last query is answered,
	// every message before it was handled.
	last := upMsg(sdk.OpQuery, "null/node/"+edge1, nil)
	deadline := time.Now().Add(30 * time.Second)
	for {
		h.c.HandleUpstream(h.ctx, edge1, last)
		_, ok := h.sender.WaitFor(2*time.Second, func(sent []nodelinktest.Sent) bool {
			for _, s := range sent {
				if s.Msg.Header.ParentID == last.Header.ID {
					return true
				}
			}
			return false
		})
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("worker stuck after %d malformed messages", n)
		}
		last = upMsg(sdk.OpQuery, "null/node/"+edge1, nil) // may have been dropped on a full queue
	}
	if p := h.c.panics.Load(); p > 0 {
		t.Fatalf("%d upstream handlers panicked", p)
	}
	if d := h.c.dropped.Load(); d > 0 {
		t.Logf("%d of %d messages dropped on a full queue", d, n)
	}
}

// HandleUpstream never blocks: with no worker running, a full queue drops.
func TestHandleUpstreamDropsWhenFull(t *testing.T) {
	c, err := New(fakeClient(), nodelinktest.New(), nil, Config{UpstreamWorkers: 1, UpstreamQueue: 2})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		for range 50 {
			c.HandleUpstream(context.Background(), edge1, upMsg(sdk.OpQuery, "null/node/"+edge1, nil))
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(timeout):
		t.Fatal("HandleUpstream blocked")
	}
	if got := c.dropped.Load(); got != 48 {
		t.Fatalf("dropped %d, want 48", got)
	}
}
