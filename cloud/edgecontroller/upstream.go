package edgecontroller

import (
	"context"
	"strings"

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

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
