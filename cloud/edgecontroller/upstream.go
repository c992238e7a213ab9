package edgecontroller

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"strings"

	authv1 "k8s.io/api/authentication/v1"
	coordv1 "k8s.io/api/coordination/v1"
	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"

	"github.com/edgehive/edgehive/sdk"
)

// Resource types beyond the ones sdk names.
const (
	resourceNodeStatus = "nodestatus"
	resourceSAToken    = "serviceaccounttoken"
	leaseNamespace     = "kube-node-lease"
)

// handleUpstream applies one message from node. Every failure, refusal and
// malformed message gets an error answer (where KubeEdge answers at all) and
// a log line; nothing here may panic on what a node sends.
func (c *Controller) handleUpstream(ctx context.Context, node string, msg *sdk.Message) {
	defer func() {
		if r := recover(); r != nil {
			c.panics.Add(1)
			c.log.Error("upstream handler panicked; message dropped", "node", node, "msg", msg.String(), "panic", r)
		}
	}()
	switch msg.Router.Operation {
	case sdk.OpResponse, sdk.OpError, sdk.OpKeepalive:
		// ACKs and keepalives belong to cloudhub; an edge's error answer is
		// only logged, as in KubeEdge. Answering would be noise.
		c.log.Debug("upstream answer ignored", "node", node, "msg", msg.String(), "content", truncate(msg.ContentString(), 200))
		return
	}
	if notOurs(msg) {
		c.log.Debug("upstream message for another cloud module ignored", "node", node, "msg", msg.String())
		return
	}
	resource := strings.TrimPrefix(msg.Router.Resource, "node/"+node+"/")
	res, err := sdk.ParseResource(resource)
	if err != nil {
		c.refuse(ctx, node, msg, badRequest("%v", err))
		return
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.apiTimeout)
	defer cancel()
	op := msg.Router.Operation
	c.log.Trace("upstream", "node", node, "msg", msg.String())
	switch {
	case res.Type == sdk.ResourceNode && op == sdk.OpInsert:
		c.registerNode(ctx, node, msg, res, false)
	case res.Type == resourceNodeStatus && op == sdk.OpInsert:
		c.registerNode(ctx, node, msg, res, true)
	case res.Type == sdk.ResourceNode && op == sdk.OpUpdate:
		c.updateNode(ctx, node, msg, res)
	case res.Type == sdk.ResourceNodePatch && op == sdk.OpPatch:
		c.patchNodeStatus(ctx, node, msg, res)
	case res.Type == resourceNodeStatus && op == sdk.OpUpdate:
		c.legacyNodeStatus(ctx, node, msg, res)
	case res.Type == sdk.ResourceLease:
		c.lease(ctx, node, msg, res)
	case res.Type == sdk.ResourcePodPatch && op == sdk.OpPatch:
		c.patchPodStatus(ctx, node, msg, res)
	case res.Type == sdk.ResourcePodStatus && op == sdk.OpUpdate:
		c.legacyPodStatus(ctx, node, msg, res)
	case res.Type == sdk.ResourcePod && op == sdk.OpDelete:
		c.deletePod(ctx, node, msg, res)
	case res.Type == sdk.ResourcePod && op == sdk.OpInsert:
		c.createMirrorPod(ctx, node, msg, res)
	case res.Type == sdk.ResourceEvent:
		c.event(ctx, node, msg, res)
	case op == sdk.OpQuery:
		c.query(ctx, node, msg, res)
	default:
		c.refuse(ctx, node, msg, badRequest("%s on %s is not supported by %s", op, res.Type, ModuleName))
	}
}

// notOurs reports messages KubeEdge routes to other cloud modules (by source
// or group, not by route group alone): devicetwin's reports (source "twin",
// group "resource"), eventbus/servicebus uploads (group "user"), MetaServer
// requests (source "metaserver"). If one reaches this handler, answering it
// would only confuse its sender.
func notOurs(msg *sdk.Message) bool {
	r := msg.Router
	switch {
	case r.Source == "twin" || r.Source == "devicetwin" || r.Source == "metaserver":
		return true
	case r.Group == sdk.WireGroupUser || r.Group == sdk.WireGroupTwin || r.Group == "dynamiccontroller":
		return true
	case r.Operation == sdk.OpUpload:
		return true
	case strings.HasPrefix(r.Resource, "device/") || strings.HasPrefix(r.Resource, "membership"):
		return true
	}
	return false
}

// refuse logs and answers an error.
func (c *Controller) refuse(ctx context.Context, node string, msg *sdk.Message, err error) {
	c.log.Warn("upstream message refused", "node", node, "msg", msg.String(), "error", err)
	c.respondError(ctx, node, msg, err)
}

// ownNode checks that node writes its own Node.
func ownNode(node string, res sdk.Resource) error {
	if res.Name != node {
		return forbidden("nodes", res.Name, "node %q may only write its own Node", node)
	}
	return nil
}

// --- Node ----------------------------------------------------------------------

// registerNode creates the node's Node, labelled as an edge node. A Node that
// exists already is merged (labels, annotations; the edge label kept) when it
// is an edge node, and refused when it is not: a cloud node of that name is
// not the edge's to take over. legacy answers "OK" (nodestatus insert)
// instead of an ObjectResp.
func (c *Controller) registerNode(ctx context.Context, node string, msg *sdk.Message, res sdk.Resource, legacy bool) {
	answer := func(obj *v1.Node, err error) {
		if err != nil {
			c.log.Warn("node registration failed", "node", node, "error", err)
		}
		if legacy {
			c.respondOK(ctx, node, msg, err)
			return
		}
		if obj == nil {
			c.respondObject(ctx, node, msg, nil, err)
		} else {
			c.respondObject(ctx, node, msg, obj, err)
		}
	}
	if err := ownNode(node, res); err != nil {
		answer(nil, err)
		return
	}
	want := &v1.Node{}
	if err := decodeObject(msg, want); err != nil {
		answer(nil, err)
		return
	}
	fresh := &v1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: node, Labels: want.Labels, Annotations: want.Annotations},
		Spec:       want.Spec,
		Status:     want.Status,
	}
	if fresh.Labels == nil {
		fresh.Labels = map[string]string{}
	}
	if _, ok := fresh.Labels[c.cfg.EdgeNodeLabel]; !ok {
		fresh.Labels[c.cfg.EdgeNodeLabel] = ""
	}
	created, err := c.client.CoreV1().Nodes().Create(ctx, fresh, metav1.CreateOptions{})
	if err == nil {
		c.log.Info("edge node registered", "node", node)
		answer(created, nil)
		return
	}
	if !apierrors.IsAlreadyExists(err) {
		answer(nil, err)
		return
	}
	merged, err := c.mergeNodeMeta(ctx, node, want.Labels, want.Annotations)
	answer(merged, err)
}

// mergeNodeMeta adds labels and annotations to the edge node's Node.
func (c *Controller) mergeNodeMeta(ctx context.Context, node string, labels, annotations map[string]string) (*v1.Node, error) {
	var out *v1.Node
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cur, err := c.client.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if _, ok := cur.Labels[c.cfg.EdgeNodeLabel]; !ok {
			return forbidden("nodes", node, "node %q exists and is not an edge node (no label %s)", node, c.cfg.EdgeNodeLabel)
		}
		upd := cur.DeepCopy()
		if upd.Annotations == nil {
			upd.Annotations = map[string]string{}
		}
		maps.Copy(upd.Labels, labels)
		maps.Copy(upd.Annotations, annotations)
		upd.Labels[c.cfg.EdgeNodeLabel] = cur.Labels[c.cfg.EdgeNodeLabel]
		if maps.Equal(upd.Labels, cur.Labels) && maps.Equal(upd.Annotations, cur.Annotations) {
			out = cur
			return nil
		}
		out, err = c.client.CoreV1().Nodes().Update(ctx, upd, metav1.UpdateOptions{})
		return err
	})
	return out, err
}

// updateNode is a full Node from the edge; as in KubeEdge only its labels
// and annotations are merged in. Answer "OK".
func (c *Controller) updateNode(ctx context.Context, node string, msg *sdk.Message, res sdk.Resource) {
	if err := ownNode(node, res); err != nil {
		c.refuse(ctx, node, msg, err)
		return
	}
	want := &v1.Node{}
	if err := decodeObject(msg, want); err != nil {
		c.refuse(ctx, node, msg, err)
		return
	}
	_, err := c.mergeNodeMeta(ctx, node, want.Labels, want.Annotations)
	if err != nil {
		c.log.Warn("node update failed", "node", node, "error", err)
	}
	c.respondOK(ctx, node, msg, err)
}

// requireEdgeNode refuses writes to a Node without the edge label.
func (c *Controller) requireEdgeNode(ctx context.Context, node string) error {
	if c.isEdgeNode(node) {
		return nil
	}
	n, err := c.client.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
	if err != nil {
		return err
	}
	if _, ok := n.Labels[c.cfg.EdgeNodeLabel]; !ok {
		return forbidden("nodes", node, "node %q is not an edge node (no label %s)", node, c.cfg.EdgeNodeLabel)
	}
	return nil
}

// patchNodeStatus applies the edge's strategic merge patch to the Node's
// status subresource and answers an ObjectResp with the patched Node.
func (c *Controller) patchNodeStatus(ctx context.Context, node string, msg *sdk.Message, res sdk.Resource) {
	if err := ownNode(node, res); err != nil {
		c.log.Warn("node status patch refused", "node", node, "msg", msg.String(), "error", err)
		c.respondObject(ctx, node, msg, nil, err)
		return
	}
	patch, err := statusPatch(msg, false)
	if err == nil {
		err = c.requireEdgeNode(ctx, node)
	}
	if err != nil {
		c.log.Warn("node status patch refused", "node", node, "msg", msg.String(), "error", err)
		c.respondObject(ctx, node, msg, nil, err)
		return
	}
	patched, err := c.client.CoreV1().Nodes().Patch(ctx, node, types.StrategicMergePatchType, patch, metav1.PatchOptions{}, "status")
	if err != nil {
		c.log.Warn("node status patch failed", "node", node, "error", err)
		c.respondObject(ctx, node, msg, nil, err)
		return
	}
	c.respondObject(ctx, node, msg, patched, nil)
}

// legacyNodeStatus is KubeEdge's older report: {"UID":..,"Status":{..}}.
func (c *Controller) legacyNodeStatus(ctx context.Context, node string, msg *sdk.Message, res sdk.Resource) {
	if err := ownNode(node, res); err != nil {
		c.refuse(ctx, node, msg, err)
		return
	}
	var req struct {
		UID    types.UID
		Status v1.NodeStatus
	}
	if err := decodeObject(msg, &req); err != nil {
		c.refuse(ctx, node, msg, err)
		return
	}
	if err := c.requireEdgeNode(ctx, node); err != nil {
		c.refuse(ctx, node, msg, err)
		return
	}
	patch, err := json.Marshal(map[string]any{"status": req.Status})
	if err == nil {
		_, err = c.client.CoreV1().Nodes().Patch(ctx, node, types.StrategicMergePatchType, patch, metav1.PatchOptions{}, "status")
	}
	if err != nil {
		c.log.Warn("legacy node status failed", "node", node, "error", err)
	}
	c.respondOK(ctx, node, msg, err)
}

// statusPatch checks a status patch: a JSON object whose only keys are
// "status" and, for pods, "metadata" holding only "uid" (the kubelet's
// precondition). Anything else would let a node change more than its status.
func statusPatch(msg *sdk.Message, allowUID bool) ([]byte, error) {
	b := contentBytes(msg)
	var top map[string]json.RawMessage
	if len(b) == 0 || b[0] != '{' || json.Unmarshal(b, &top) != nil {
		return nil, badRequest("content of %s is not a JSON patch object", msg.Router.Resource)
	}
	for k, v := range top {
		switch {
		case k == "status":
		case k == "metadata" && allowUID:
			var meta map[string]json.RawMessage
			if json.Unmarshal(v, &meta) != nil {
				return nil, badRequest("patch metadata of %s is not an object", msg.Router.Resource)
			}
			for mk := range meta {
				if mk != "uid" {
					return nil, badRequest("patch of %s may set only metadata.uid, not metadata.%s", msg.Router.Resource, mk)
				}
			}
		default:
			return nil, badRequest("patch of %s may only change status, not %q", msg.Router.Resource, k)
		}
	}
	return b, nil
}

// --- Lease ---------------------------------------------------------------------

// lease handles query, insert and update of the node's Lease. Writes merge the
// spec, so the edge's resourceVersion (often stale: KubeEdge's edge never
// learns the one its update produced) does not matter.
func (c *Controller) lease(ctx context.Context, node string, msg *sdk.Message, res sdk.Resource) {
	op := msg.Router.Operation
	if res.Namespace != leaseNamespace || res.Name != node {
		err := forbidden("leases", res.Name, "node %q may only use lease %s/%s", node, leaseNamespace, node)
		c.log.Warn("lease refused", "node", node, "msg", msg.String(), "error", err)
		c.respondObject(ctx, node, msg, nil, err)
		return
	}
	leases := c.client.CoordinationV1().Leases(leaseNamespace)
	switch op {
	case sdk.OpQuery:
		l, err := leases.Get(ctx, node, metav1.GetOptions{})
		if err != nil {
			c.respondObject(ctx, node, msg, nil, err)
			return
		}
		c.respondObject(ctx, node, msg, l, nil)
		return
	case sdk.OpInsert, sdk.OpUpdate:
	default:
		c.respondObject(ctx, node, msg, nil, badRequest("%s on a lease is not supported", op))
		return
	}
	want := &coordv1.Lease{}
	if err := decodeObject(msg, want); err != nil {
		c.log.Warn("lease refused", "node", node, "msg", msg.String(), "error", err)
		c.respondObject(ctx, node, msg, nil, err)
		return
	}
	if err := c.requireEdgeNode(ctx, node); err != nil {
		c.respondObject(ctx, node, msg, nil, err)
		return
	}
	if op == sdk.OpInsert {
		fresh := &coordv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: node, Namespace: leaseNamespace, OwnerReferences: want.OwnerReferences}, Spec: want.Spec}
		created, err := leases.Create(ctx, fresh, metav1.CreateOptions{})
		if err == nil {
			c.respondObject(ctx, node, msg, created, nil)
			return
		}
		if !apierrors.IsAlreadyExists(err) {
			c.respondObject(ctx, node, msg, nil, err)
			return
		}
	}
	patch, err := json.Marshal(map[string]any{"spec": want.Spec})
	if err != nil {
		c.respondObject(ctx, node, msg, nil, err)
		return
	}
	patched, err := leases.Patch(ctx, node, types.MergePatchType, patch, metav1.PatchOptions{})
	if err != nil {
		c.log.Warn("lease update failed", "node", node, "error", err)
		c.respondObject(ctx, node, msg, nil, err)
		return
	}
	c.respondObject(ctx, node, msg, patched, nil)
}

// --- Pods ----------------------------------------------------------------------

// nodePod returns the pod ns/name if it is bound to node: from the cache, or
// from the API when the cache has not seen it yet. A pod bound elsewhere is
// Forbidden; a missing one NotFound.
func (c *Controller) nodePod(ctx context.Context, node, ns, name string) (*v1.Pod, error) {
	pod, err := c.podLister.Pods(ns).Get(name)
	if apierrors.IsNotFound(err) {
		pod, err = c.client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
	}
	if err != nil {
		return nil, err
	}
	if pod.Spec.NodeName != node {
		return nil, forbidden("pods", ns+"/"+name, "pod %s/%s is not bound to node %q", ns, name, node)
	}
	return pod, nil
}

// dropOnEdge tells node to delete a pod it still holds that the API no longer
// has (or has under another UID): a stub with name, namespace and uid, as
// KubeEdge's synccontroller sends. Sent without resourceversion.
func (c *Controller) dropOnEdge(ctx context.Context, node, ns, name string, uid types.UID) {
	stub := &v1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: uid}}
	msg, err := objectMessage(sdk.ResourcePod, sdk.OpDelete, stub)
	if err != nil {
		c.log.Error("pod delete not built", "node", node, "pod", ns+"/"+name, "error", err)
		return
	}
	if err := c.send(ctx, node, msg); err != nil {
		c.log.Warn("pod delete for a pod gone from the API not sent", "node", node, "pod", ns+"/"+name, "error", err)
		return
	}
	c.log.Info("node reported a pod gone from the API; delete sent", "node", node, "pod", ns+"/"+name, "uid", uid)
}

// patchPodStatus applies the edge's strategic merge patch to the pod's status
// subresource; answer ObjectResp. A pod that is gone (or was replaced under
// the same name) is deleted on the edge.
func (c *Controller) patchPodStatus(ctx context.Context, node string, msg *sdk.Message, res sdk.Resource) {
	fail := func(err error) {
		c.log.Warn("pod status patch failed", "node", node, "msg", msg.String(), "error", err)
		c.respondObject(ctx, node, msg, nil, err)
	}
	if res.IsList() {
		fail(badRequest("podpatch needs a pod name"))
		return
	}
	patch, err := statusPatch(msg, true)
	if err != nil {
		fail(err)
		return
	}
	var meta struct {
		Metadata struct {
			UID types.UID `json:"uid"`
		} `json:"metadata"`
	}
	_ = json.Unmarshal(patch, &meta) // checked by statusPatch
	uid := meta.Metadata.UID

	pod, err := c.nodePod(ctx, node, res.Namespace, res.Name)
	if apierrors.IsNotFound(err) {
		c.dropOnEdge(ctx, node, res.Namespace, res.Name, uid)
		fail(err)
		return
	}
	if err != nil {
		fail(err)
		return
	}
	if uid != "" && pod.UID != uid {
		c.dropOnEdge(ctx, node, res.Namespace, res.Name, uid)
		fail(apierrors.NewConflict(v1.Resource("pods"), res.Namespace+"/"+res.Name,
			fmt.Errorf("pod has UID %s, the patch is for %s", pod.UID, uid)))
		return
	}
	patched, err := c.client.CoreV1().Pods(res.Namespace).Patch(ctx, res.Name, types.StrategicMergePatchType, patch, metav1.PatchOptions{}, "status")
	if apierrors.IsNotFound(err) {
		c.dropOnEdge(ctx, node, res.Namespace, res.Name, uid)
	}
	if err != nil {
		fail(err)
		return
	}
	c.respondObject(ctx, node, msg, patched, nil)
}

// legacyPodStatus is KubeEdge's older report on <ns>/podstatus[/<name>]:
// {"UID":..,"Name":..,"Status":{..}} or an array of them. Answer "OK"; pods
// gone from the API are deleted on the edge.
func (c *Controller) legacyPodStatus(ctx context.Context, node string, msg *sdk.Message, res sdk.Resource) {
	type podStatus struct {
		UID    types.UID
		Name   string
		Status v1.PodStatus
	}
	b := contentBytes(msg)
	var list []podStatus
	if len(b) > 0 && b[0] == '[' {
		if err := json.Unmarshal(b, &list); err != nil {
			c.refuse(ctx, node, msg, badRequest("podstatus content: %v", err))
			return
		}
	} else {
		var one podStatus
		if err := decodeObject(msg, &one); err != nil {
			c.refuse(ctx, node, msg, err)
			return
		}
		list = append(list, one)
	}
	var firstErr error
	for _, ps := range list {
		name := ps.Name
		if name == "" {
			name = res.Name
		}
		if name == "" {
			firstErr = badRequest("podstatus without a pod name")
			continue
		}
		pod, err := c.nodePod(ctx, node, res.Namespace, name)
		if apierrors.IsNotFound(err) || (err == nil && ps.UID != "" && pod.UID != ps.UID) {
			c.dropOnEdge(ctx, node, res.Namespace, name, ps.UID)
			continue
		}
		if err == nil {
			var patch []byte
			patch, err = json.Marshal(map[string]any{"metadata": map[string]any{"uid": pod.UID}, "status": ps.Status})
			if err == nil {
				_, err = c.client.CoreV1().Pods(res.Namespace).Patch(ctx, name, types.StrategicMergePatchType, patch, metav1.PatchOptions{}, "status")
			}
		}
		if err != nil && firstErr == nil {
			firstErr = err
		}
	}
	if firstErr != nil {
		c.log.Warn("legacy pod status failed", "node", node, "msg", msg.String(), "error", firstErr)
	}
	c.respondOK(ctx, node, msg, firstErr)
}

// deletePod removes a pod the edge has finished terminating: grace 0, with
// the UID as precondition so a newer pod of the same name survives. Answer
// "OK" also when the pod is already gone or was replaced.
func (c *Controller) deletePod(ctx context.Context, node string, msg *sdk.Message, res sdk.Resource) {
	if res.IsList() {
		c.refuse(ctx, node, msg, badRequest("pod delete needs a pod name"))
		return
	}
	var uid types.UID
	opts := metav1.DeleteOptions{}
	if b := contentBytes(msg); len(b) > 0 {
		switch {
		case b[0] == '{':
			if err := json.Unmarshal(b, &opts); err != nil {
				c.refuse(ctx, node, msg, badRequest("pod delete options: %v", err))
				return
			}
			if opts.Preconditions != nil && opts.Preconditions.UID != nil {
				uid = *opts.Preconditions.UID
			}
		case msg.Content[0] == '"': // legacy: the content is the pod's UID
			uid = types.UID(b)
		default:
			c.refuse(ctx, node, msg, badRequest("pod delete content is neither DeleteOptions nor a UID"))
			return
		}
	}
	pod, err := c.nodePod(ctx, node, res.Namespace, res.Name)
	if apierrors.IsNotFound(err) {
		c.respondOK(ctx, node, msg, nil)
		return
	}
	if err != nil {
		c.refuse(ctx, node, msg, err)
		return
	}
	if uid == "" {
		uid = pod.UID // the pod whose binding was checked, and no other
	}
	grace := int64(0)
	del := metav1.DeleteOptions{GracePeriodSeconds: &grace, Preconditions: &metav1.Preconditions{UID: &uid}}
	err = c.client.CoreV1().Pods(res.Namespace).Delete(ctx, res.Name, del)
	if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
		// Gone, or replaced by a newer pod of that name: the edge's pod is gone.
		err = nil
	}
	if err != nil {
		c.log.Warn("pod delete failed", "node", node, "pod", res.Namespace+"/"+res.Name, "error", err)
	} else {
		c.log.Debug("pod deleted for the edge", "node", node, "pod", res.Namespace+"/"+res.Name, "uid", uid)
	}
	c.respondOK(ctx, node, msg, err)
}

// createMirrorPod creates the API copy of a static pod; it must be bound to
// the node. Answer ObjectResp.
func (c *Controller) createMirrorPod(ctx context.Context, node string, msg *sdk.Message, res sdk.Resource) {
	pod := &v1.Pod{}
	err := decodeObject(msg, pod)
	if err == nil && pod.Spec.NodeName != node {
		err = forbidden("pods", res.Namespace+"/"+res.Name, "node %q may only create pods bound to itself", node)
	}
	if err == nil && (res.IsList() || (pod.Name != "" && pod.Name != res.Name)) {
		err = badRequest("pod name in the content and the resource differ")
	}
	if err != nil {
		c.log.Warn("mirror pod refused", "node", node, "msg", msg.String(), "error", err)
		c.respondObject(ctx, node, msg, nil, err)
		return
	}
	pod.Name, pod.Namespace = res.Name, res.Namespace
	pod.ResourceVersion, pod.UID = "", ""
	created, err := c.client.CoreV1().Pods(res.Namespace).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		c.respondObject(ctx, node, msg, nil, err)
		return
	}
	c.respondObject(ctx, node, msg, created, nil)
}

// --- Events --------------------------------------------------------------------

// event records an Event about the node or one of its pods, within the
// event rate limit (excess events are dropped, logged at debug). KubeEdge
// answers nothing on success; failures are answered.
func (c *Controller) event(ctx context.Context, node string, msg *sdk.Message, res sdk.Resource) {
	op := msg.Router.Operation
	var ev v1.Event
	var patchData []byte
	switch op {
	case sdk.OpInsert, sdk.OpUpdate:
		if err := decodeObject(msg, &ev); err != nil {
			c.refuse(ctx, node, msg, err)
			return
		}
	case sdk.OpPatch:
		var info struct {
			Event v1.Event
			Data  string
		}
		if err := decodeObject(msg, &info); err != nil {
			c.refuse(ctx, node, msg, err)
			return
		}
		ev, patchData = info.Event, []byte(info.Data)
		if !json.Valid(patchData) {
			c.refuse(ctx, node, msg, badRequest("event patch data is not JSON"))
			return
		}
	default:
		c.refuse(ctx, node, msg, badRequest("%s on an event is not supported", op))
		return
	}
	ns := res.Namespace
	if ns == sdk.ClusterNamespace {
		ns = ev.Namespace
	}
	if ns == "" {
		ns = metav1.NamespaceDefault
	}
	if ev.Name == "" {
		ev.Name = res.Name
	}
	ev.Namespace = ns
	if err := c.eventSubjectAllowed(node, &ev); err != nil {
		c.refuse(ctx, node, msg, err)
		return
	}
	if !c.events.TryAccept() {
		c.log.Debug("event dropped by the rate limit", "node", node, "event", ns+"/"+ev.Name)
		return
	}
	events := c.client.CoreV1().Events(ns)
	var err error
	switch op {
	case sdk.OpInsert:
		ev.ResourceVersion = ""
		_, err = events.Create(ctx, &ev, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			err = nil
		}
	case sdk.OpUpdate:
		_, err = events.Update(ctx, &ev, metav1.UpdateOptions{})
		if apierrors.IsNotFound(err) {
			ev.ResourceVersion = ""
			_, err = events.Create(ctx, &ev, metav1.CreateOptions{})
		}
	case sdk.OpPatch:
		_, err = events.Patch(ctx, ev.Name, types.StrategicMergePatchType, patchData, metav1.PatchOptions{})
	}
	if err != nil {
		c.refuse(ctx, node, msg, err)
	}
}

// eventSubjectAllowed lets a node report events about itself and its pods only.
func (c *Controller) eventSubjectAllowed(node string, ev *v1.Event) error {
	obj := ev.InvolvedObject
	switch obj.Kind {
	case "Node":
		if obj.Name == node {
			return nil
		}
	case "Pod":
		if pod, err := c.podLister.Pods(obj.Namespace).Get(obj.Name); err == nil && pod.Spec.NodeName == node {
			return nil
		}
	}
	return forbidden("events", ev.Name, "node %q may only report events about itself and its pods, not %s %s/%s", node, obj.Kind, obj.Namespace, obj.Name)
}

// --- Queries -------------------------------------------------------------------

// query answers from the caches. A node reads its own Node and pods, the
// configMaps and secrets its pods use, any service and endpoints, and tokens
// for the service accounts of its pods. Not found and refusals are answered
// with the API error as content.
func (c *Controller) query(ctx context.Context, node string, msg *sdk.Message, res sdk.Resource) {
	if res.IsList() {
		c.refuse(ctx, node, msg, badRequest("list queries (%s) are not supported", res))
		return
	}
	var (
		obj    runtime.Object
		err    error
		withRV bool
	)
	switch res.Type {
	case sdk.ResourceConfigMap:
		if !c.nodeUses(node, indexByConfigMap, res.Namespace, res.Name) {
			err = forbidden("configmaps", res.Name, "no pod on node %q uses configmap %s/%s", node, res.Namespace, res.Name)
			break
		}
		obj, err = c.cmLister.ConfigMaps(res.Namespace).Get(res.Name)
		withRV = true
	case sdk.ResourceSecret:
		if !c.nodeUses(node, indexBySecret, res.Namespace, res.Name) {
			err = forbidden("secrets", res.Name, "no pod on node %q uses secret %s/%s", node, res.Namespace, res.Name)
			break
		}
		obj, err = c.secLister.Secrets(res.Namespace).Get(res.Name)
		withRV = true
	case sdk.ResourceService:
		if c.svcLister != nil {
			obj, err = c.svcLister.Services(res.Namespace).Get(res.Name)
		} else {
			obj, err = c.client.CoreV1().Services(res.Namespace).Get(ctx, res.Name, metav1.GetOptions{})
		}
	case sdk.ResourceEndpoints:
		if c.epLister != nil {
			obj, err = c.epLister.Endpoints(res.Namespace).Get(res.Name)
		} else {
			obj, err = c.client.CoreV1().Endpoints(res.Namespace).Get(ctx, res.Name, metav1.GetOptions{}) //nolint:staticcheck // v1 Endpoints, as the edge serves
		}
	case sdk.ResourcePod:
		obj, err = c.nodePod(ctx, node, res.Namespace, res.Name)
	case sdk.ResourceNode:
		if err = ownNode(node, res); err == nil {
			obj, err = c.nodeLister.Get(node)
			if apierrors.IsNotFound(err) {
				obj, err = c.client.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
			}
		}
	case resourceSAToken:
		obj, err = c.serviceAccountToken(ctx, node, msg, res)
	default:
		err = badRequest("query on %s is not supported", res.Type)
	}
	if err != nil {
		if apierrors.IsForbidden(err) || apierrors.IsBadRequest(err) {
			c.log.Warn("query refused", "node", node, "msg", msg.String(), "error", err)
		}
		c.respondError(ctx, node, msg, err)
		return
	}
	b, encErr := wireObject(obj)
	if encErr != nil {
		c.respondError(ctx, node, msg, fmt.Errorf("encode answer: %w", encErr))
		return
	}
	rv := ""
	if m, ok := obj.(metav1.Object); ok && withRV {
		rv = m.GetResourceVersion()
	}
	c.respond(ctx, node, msg, b, rv)
}

// serviceAccountToken creates a token for a service account used by a pod on
// node, bound to that pod, as the Node authorizer allows a kubelet.
func (c *Controller) serviceAccountToken(ctx context.Context, node string, msg *sdk.Message, res sdk.Resource) (*authv1.TokenRequest, error) {
	tr := &authv1.TokenRequest{}
	if err := decodeObject(msg, tr); err != nil {
		return nil, err
	}
	ref := tr.Spec.BoundObjectRef
	if ref == nil || ref.Kind != "Pod" || ref.Name == "" {
		return nil, forbidden("serviceaccounts/token", res.Name, "node %q may only request tokens bound to its pods", node)
	}
	pod, err := c.nodePod(ctx, node, res.Namespace, ref.Name)
	if err != nil {
		return nil, err
	}
	if ref.UID != "" && ref.UID != pod.UID {
		return nil, forbidden("serviceaccounts/token", res.Name, "pod %s/%s has another UID", res.Namespace, ref.Name)
	}
	sa := pod.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	if sa != res.Name {
		return nil, forbidden("serviceaccounts/token", res.Name, "pod %s/%s runs as service account %q", res.Namespace, ref.Name, sa)
	}
	req := &authv1.TokenRequest{Spec: tr.Spec}
	req.Spec.BoundObjectRef = &authv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID}
	return c.client.CoreV1().ServiceAccounts(res.Namespace).CreateToken(ctx, res.Name, req, metav1.CreateOptions{})
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
