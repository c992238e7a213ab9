package edgecontroller

import (
	"context"
	"encoding/json"
	"fmt"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/edgehive/edgehive/sdk"
)

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
