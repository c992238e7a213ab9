package edgecontroller

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/cache"

	"github.com/edgehive/edgehive/cloud/nodelink"
	"github.com/edgehive/edgehive/sdk"
)

// kindResync is the queue item kind that brings a whole node up to date.
const kindResync = "resync"

// item is one unit of downstream work: send the current state of one object
// (taken from the cache when the item is processed, so repeated changes
// collapse into one send) to one node, or a delete, or a node resync.
type item struct {
	kind      string // sdk.Resource* type, or kindResync
	node      string
	namespace string
	name      string
	op        string // sdk.OpInsert, sdk.OpUpdate or sdk.OpDelete
	// last is the object as it was deleted (delete items only). A pointer,
	// so the item stays comparable; deletes are never merged.
	last runtime.Object
}

func (it item) String() string {
	if it.kind == kindResync {
		return "resync " + it.node
	}
	return fmt.Sprintf("%s %s to %s", it.op, sdk.BuildResource(it.namespace, it.kind, it.name), it.node)
}

// --- informer handlers: they only queue --------------------------------------

func (c *Controller) podHandler() cache.ResourceEventHandler {
	return cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) {
			pod, ok := obj.(*v1.Pod)
			if !ok || !c.isEdgeNode(pod.Spec.NodeName) {
				return
			}
			op := sdk.OpInsert
			if pod.DeletionTimestamp != nil {
				op = sdk.OpUpdate
			}
			c.queue.Add(item{kind: sdk.ResourcePod, node: pod.Spec.NodeName, namespace: pod.Namespace, name: pod.Name, op: op})
		},
		UpdateFunc: func(oldObj, newObj any) {
			old, ok1 := oldObj.(*v1.Pod)
			pod, ok2 := newObj.(*v1.Pod)
			if !ok1 || !ok2 || !c.isEdgeNode(pod.Spec.NodeName) || !podChanged(old, pod) {
				return
			}
			c.queue.Add(item{kind: sdk.ResourcePod, node: pod.Spec.NodeName, namespace: pod.Namespace, name: pod.Name, op: sdk.OpUpdate})
		},
		DeleteFunc: func(obj any) {
			pod, ok := deletedObject(obj).(*v1.Pod)
			if !ok || !c.isEdgeNode(pod.Spec.NodeName) {
				return
			}
			c.queue.Add(item{kind: sdk.ResourcePod, node: pod.Spec.NodeName, namespace: pod.Namespace, name: pod.Name, op: sdk.OpDelete, last: pod})
		},
	}
}

// nodeHandler follows the edge nodes. A node that appears (registered, or
// labelled as edge later) is resynced if it is connected here: pods may have
// been bound to it before this cache knew it was an edge node.
func (c *Controller) nodeHandler() cache.ResourceEventHandler {
	return cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) {
			node, ok := obj.(*v1.Node)
			if ok && c.sender.Connected(node.Name) {
				c.queue.Add(item{kind: kindResync, node: node.Name})
			}
		},
		UpdateFunc: func(oldObj, newObj any) {
			old, ok1 := oldObj.(*v1.Node)
			node, ok2 := newObj.(*v1.Node)
			// Status changes come from the node itself; echoing them back
			// every heartbeat would only load the link.
			if !ok1 || !ok2 || !nodeChanged(old, node) {
				return
			}
			c.queue.Add(item{kind: sdk.ResourceNode, node: node.Name, name: node.Name, op: sdk.OpUpdate})
		},
		DeleteFunc: func(obj any) {
			node, ok := deletedObject(obj).(*v1.Node)
			if !ok {
				return
			}
			c.queue.Add(item{kind: sdk.ResourceNode, node: node.Name, name: node.Name, op: sdk.OpDelete, last: node})
		},
	}
}

// fanOutHandler sends configMap or secret changes to the edge nodes whose
// pods use them. Secrets always go as update, never insert, as in KubeEdge.
func (c *Controller) fanOutHandler(kind, index string) cache.ResourceEventHandler {
	enqueue := func(obj metav1.Object, op string, last runtime.Object) {
		if kind == sdk.ResourceSecret && op == sdk.OpInsert {
			op = sdk.OpUpdate
		}
		for _, node := range c.nodesUsing(index, obj.GetNamespace(), obj.GetName()) {
			c.queue.Add(item{kind: kind, node: node, namespace: obj.GetNamespace(), name: obj.GetName(), op: op, last: last})
		}
	}
	return objectHandler(enqueue)
}

// broadcastHandler sends service or endpoints changes to every edge node
// connected here.
func (c *Controller) broadcastHandler(kind string) cache.ResourceEventHandler {
	enqueue := func(obj metav1.Object, op string, last runtime.Object) {
		nodes, err := c.nodeLister.List(everything)
		if err != nil {
			return
		}
		for _, n := range nodes {
			if c.sender.Connected(n.Name) {
				c.queue.Add(item{kind: kind, node: n.Name, namespace: obj.GetNamespace(), name: obj.GetName(), op: op, last: last})
			}
		}
	}
	return objectHandler(enqueue)
}

func deletedObject(obj any) runtime.Object {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	o, _ := obj.(runtime.Object)
	return o
}

// podChanged reports whether anything the node acts on changed: spec and
// metadata, not status (the node itself reported that).
func podChanged(old, pod *v1.Pod) bool {
	if old.ResourceVersion == pod.ResourceVersion {
		return false
	}
	return old.UID != pod.UID ||
		!equality.Semantic.DeepEqual(old.Spec, pod.Spec) ||
		!equality.Semantic.DeepEqual(old.Labels, pod.Labels) ||
		!equality.Semantic.DeepEqual(old.Annotations, pod.Annotations) ||
		!equality.Semantic.DeepEqual(old.DeletionTimestamp, pod.DeletionTimestamp) ||
		!equality.Semantic.DeepEqual(old.DeletionGracePeriodSeconds, pod.DeletionGracePeriodSeconds) ||
		!equality.Semantic.DeepEqual(old.OwnerReferences, pod.OwnerReferences) ||
		!equality.Semantic.DeepEqual(old.Finalizers, pod.Finalizers)
}

func nodeChanged(old, node *v1.Node) bool {
	if old.ResourceVersion == node.ResourceVersion {
		return false
	}
	return old.UID != node.UID ||
		!equality.Semantic.DeepEqual(old.Spec, node.Spec) ||
		!equality.Semantic.DeepEqual(old.Labels, node.Labels) ||
		!equality.Semantic.DeepEqual(old.Annotations, node.Annotations) ||
		!equality.Semantic.DeepEqual(old.DeletionTimestamp, node.DeletionTimestamp)
}

// --- workers -------------------------------------------------------------------

// processDownstream handles one queue item; false means the queue is shut down.
func (c *Controller) processDownstream(ctx context.Context) bool {
	it, shutdown := c.queue.Get()
	if shutdown {
		return false
	}
	defer c.queue.Done(it)
	var err error
	if it.kind == kindResync {
		err = c.resync(ctx, it.node)
	} else {
		err = c.deliver(ctx, it)
	}
	switch {
	case err == nil, errors.Is(err, nodelink.ErrNotConnected):
		// Not connected here: the node's resync on connect covers it.
		c.queue.Forget(it)
	case ctx.Err() != nil:
		c.queue.Forget(it)
	case c.queue.NumRequeues(it) < c.cfg.MaxRetries:
		c.log.Warn("downstream send failed; retrying", "item", it.String(), "error", err)
		c.queue.AddRateLimited(it)
	default:
		c.log.Error("downstream send failed; dropped until the node's next resync", "item", it.String(), "error", err)
		c.queue.Forget(it)
	}
	return true
}

// deliver sends one item: a delete with the last state, or the object as it
// is in the cache now. An object gone from the cache has a delete of its own
// queued; a pod bound elsewhere is not this node's.
func (c *Controller) deliver(ctx context.Context, it item) error {
	if it.op == sdk.OpDelete {
		if it.last == nil {
			return fmt.Errorf("%s: delete without an object", it)
		}
		return c.sendObject(ctx, it.node, it.kind, sdk.OpDelete, it.last)
	}
	obj, err := c.cached(it.kind, it.namespace, it.name)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	op := it.op
	if pod, ok := obj.(*v1.Pod); ok {
		if pod.Spec.NodeName != it.node {
			return nil
		}
		if pod.DeletionTimestamp != nil {
			op = sdk.OpUpdate // the edge kills it gracefully, then deletes it upstream
		}
	}
	return c.sendObject(ctx, it.node, it.kind, op, obj)
}

// cached returns the object of kind from the informer caches.
func (c *Controller) cached(kind, ns, name string) (runtime.Object, error) {
	switch kind {
	case sdk.ResourcePod:
		return c.podLister.Pods(ns).Get(name)
	case sdk.ResourceNode:
		return c.nodeLister.Get(name)
	case sdk.ResourceConfigMap:
		return c.cmLister.ConfigMaps(ns).Get(name)
	case sdk.ResourceSecret:
		return c.secLister.Secrets(ns).Get(name)
	case sdk.ResourceService:
		if c.svcLister == nil {
			return nil, apierrors.NewNotFound(v1.Resource("services"), name)
		}
		return c.svcLister.Services(ns).Get(name)
	case sdk.ResourceEndpoints:
		if c.epLister == nil {
			return nil, apierrors.NewNotFound(v1.Resource("endpoints"), name)
		}
		return c.epLister.Endpoints(ns).Get(name)
	}
	return nil, fmt.Errorf("kind %q has no cache", kind)
}

// resync sends node everything it should hold: its Node, the configMaps and
// secrets its pods use, services and endpoints, then its pods (so a pod's
// configMaps are stored on the node before the pod is). Everything goes as
// update, as KubeEdge's synccontroller does; the edge upserts, and skips what
// it already holds at that resourceVersion. Objects the node holds that are
// gone from the API are dropped when the node reports on them (podpatch).
func (c *Controller) resync(ctx context.Context, node string) error {
	if !c.sender.Connected(node) {
		return nil
	}
	n, err := c.nodeLister.Get(node)
	if apierrors.IsNotFound(err) {
		// Not an edge node (yet): a node that has not registered has no
		// pods; its registration triggers another resync.
		return nil
	}
	if err != nil {
		return err
	}
	sent := 0
	send := func(kind string, obj runtime.Object) error {
		sent++
		return c.sendObject(ctx, node, kind, sdk.OpUpdate, obj)
	}
	if err := send(sdk.ResourceNode, n); err != nil {
		return err
	}
	pods := c.podsOn(node)
	seen := map[string]bool{}
	for _, pod := range pods {
		cms, secrets := podRefs(pod)
		for _, name := range cms {
			key := "cm/" + pod.Namespace + "/" + name
			if seen[key] {
				continue
			}
			seen[key] = true
			if cm, err := c.cmLister.ConfigMaps(pod.Namespace).Get(name); err == nil {
				if err := send(sdk.ResourceConfigMap, cm); err != nil {
					return err
				}
			}
		}
		for _, name := range secrets {
			key := "secret/" + pod.Namespace + "/" + name
			if seen[key] {
				continue
			}
			seen[key] = true
			if s, err := c.secLister.Secrets(pod.Namespace).Get(name); err == nil {
				if err := send(sdk.ResourceSecret, s); err != nil {
					return err
				}
			}
		}
	}
	if c.svcLister != nil {
		svcs, err := c.svcLister.List(everything)
		if err != nil {
			return err
		}
		for _, s := range svcs {
			if err := send(sdk.ResourceService, s); err != nil {
				return err
			}
		}
		eps, err := c.epLister.List(everything)
		if err != nil {
			return err
		}
		for _, e := range eps {
			if err := send(sdk.ResourceEndpoints, e); err != nil {
				return err
			}
		}
	}
	for _, pod := range pods {
		if err := send(sdk.ResourcePod, pod); err != nil {
			return err
		}
	}
	c.log.Debug("node resynced", "node", node, "pods", len(pods), "messages", sent)
	return nil
}

// sendObject sends obj to node as operation op on "<ns>/<kind>/<name>", with
// header.resourceversion set (the link waits for the node's ACK).
func (c *Controller) sendObject(ctx context.Context, node, kind, op string, obj runtime.Object) error {
	msg, err := objectMessage(kind, op, obj)
	if err != nil {
		return err
	}
	return c.send(ctx, node, msg)
}

// send sends msg to node, waiting at most send_timeout for room in the
// node's queue.
func (c *Controller) send(ctx context.Context, node string, msg *sdk.Message) error {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.sendTimeout)
	defer cancel()
	if err := c.sender.Send(ctx, node, msg); err != nil {
		return fmt.Errorf("send %s to %s: %w", msg.String(), node, err)
	}
	c.log.Trace("sent", "node", node, "msg", msg.String(), "rv", msg.Header.ResourceVersion)
	return nil
}

// objectMessage builds a downstream message for obj the way KubeEdge's
// edgecontroller does: source edgecontroller, group resource, resource
// "<ns>/<kind>/<name>" (ns "null" for cluster objects), the object with
// apiVersion and kind as content.
func objectMessage(kind, op string, obj runtime.Object) (*sdk.Message, error) {
	meta, ok := obj.(metav1.Object)
	if !ok {
		return nil, fmt.Errorf("%T is not an API object", obj)
	}
	content, err := wireObject(obj)
	if err != nil {
		return nil, err
	}
	msg := sdk.NewMessage("").BuildRouter(ModuleName, sdk.WireGroupResource,
		sdk.BuildResource(meta.GetNamespace(), kind, meta.GetName()), op)
	msg.Header.ResourceVersion = meta.GetResourceVersion()
	msg.Content = content
	return msg, nil
}

// wireObject encodes obj with apiVersion and kind set and without
// managedFields (server bookkeeping the edge never uses, often half the size).
func wireObject(obj runtime.Object) (json.RawMessage, error) {
	if obj == nil {
		return json.RawMessage("null"), nil
	}
	gvks, _, err := scheme.Scheme.ObjectKinds(obj)
	if err != nil || len(gvks) == 0 {
		return nil, fmt.Errorf("type of %T: %w", obj, err)
	}
	out := obj.DeepCopyObject()
	out.GetObjectKind().SetGroupVersionKind(gvks[0])
	if m, ok := out.(metav1.Object); ok {
		m.SetManagedFields(nil)
	}
	b, err := json.Marshal(out)
	if err != nil {
		return nil, fmt.Errorf("encode %T: %w", obj, err)
	}
	return b, nil
}

// objectHandler turns informer events into enqueue calls: add → insert, a
// changed resourceVersion → update, delete → delete with the last state.
func objectHandler(enqueue func(obj metav1.Object, op string, last runtime.Object)) cache.ResourceEventHandler {
	return cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) {
			if o, ok := obj.(metav1.Object); ok {
				enqueue(o, sdk.OpInsert, nil)
			}
		},
		UpdateFunc: func(oldObj, newObj any) {
			old, ok1 := oldObj.(metav1.Object)
			o, ok2 := newObj.(metav1.Object)
			if ok1 && ok2 && old.GetResourceVersion() != o.GetResourceVersion() {
				enqueue(o, sdk.OpUpdate, nil)
			}
		},
		DeleteFunc: func(obj any) {
			last := deletedObject(obj)
			if o, ok := last.(metav1.Object); ok {
				enqueue(o, sdk.OpDelete, last)
			}
		},
	}
}
