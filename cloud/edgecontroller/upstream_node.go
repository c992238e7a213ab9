package edgecontroller

import (
	"context"
	"encoding/json"
	"maps"

	coordv1 "k8s.io/api/coordination/v1"
	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"

	"github.com/edgehive/edgehive/sdk"
)

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
