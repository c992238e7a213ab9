package devicecontroller

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/edgehive/edgehive/internal/twinwire"
	"github.com/edgehive/edgehive/sdk"
)

// writeStatuses writes the nodes' reports into Device statuses, one at a
// time, until ctx ends. A report is confirmed to its node ("OK") only once
// its status is written; one that cannot be written is left unconfirmed, and
// the node sends it again.
func (c *Controller) writeStatuses(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case r := <-c.upstream:
			if err := c.writeReport(ctx, r); err != nil {
				if ctx.Err() == nil {
					c.logger.Warn("report not written; the node sends it again", "node", r.node,
						"resource", r.msg.Router.Resource, "error", err)
				}
				continue
			}
			c.confirm(ctx, r)
		}
	}
}

// confirm answers the report as KubeEdge's cloud does.
func (c *Controller) confirm(ctx context.Context, r report) {
	ack := sdk.NewMessage(r.msg.Header.ID).BuildRouter(moduleName, sdk.WireGroupTwin, resTwinConfirm, sdk.OpResponse)
	if err := ack.FillBody("OK"); err != nil {
		return
	}
	if err := c.send(ctx, r.node, ack); err != nil {
		c.logger.Debug("confirmation not sent; the node sends its report again", "node", r.node, "error", err)
	}
}

// writeReport applies one edge_updated or state/update. Reports about
// devices that do not exist or are not bound to the node are confirmed
// without a write, so that the node stops sending them.
func (c *Controller) writeReport(ctx context.Context, r report) error {
	res := r.msg.Router.Resource
	if ns, name, ok := deviceResource(res, edgeUpdated); ok {
		var u twinwire.TwinUpdate
		if err := r.msg.DecodeContent(&u); err != nil {
			c.logger.Warn("edge_updated with bad content confirmed and dropped", "node", r.node, "resource", res, "error", err)
			return nil
		}
		return c.writeTwins(ctx, r.node, ns, name, u.Twin)
	}
	if ns, name, ok := deviceResource(res, stateUpdated); ok {
		var s twinwire.StateResult
		if err := r.msg.DecodeContent(&s); err != nil {
			c.logger.Warn("state update with bad content confirmed and dropped", "node", r.node, "resource", res, "error", err)
			return nil
		}
		patch := map[string]any{"status": map[string]any{"state": s.Device.State, "lastOnlineTime": s.Device.LastOnline}}
		return c.patchStatus(ctx, r.node, ns, name, patch)
	}
	return nil
}

// writeTwins merges reported values into status.twins. The list is replaced
// as a whole by a merge patch, so it is built from a fresh read, and the
// patch carries that read's resourceVersion: a concurrent change makes it
// fail and the next attempt reads again.
func (c *Controller) writeTwins(ctx context.Context, node, ns, name string, twins map[string]*twinwire.Twin) error {
	api := c.client.Resource(DeviceGVR).Namespace(ns)
	for attempt := 0; ; attempt++ {
		obj, err := api.Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			c.logger.Debug("report for a device that does not exist", "node", node, "device", ns+"/"+name)
			return nil
		}
		if err != nil {
			return fmt.Errorf("read device %s/%s: %w", ns, name, err)
		}
		d, err := parseDevice(obj)
		if err != nil {
			return err
		}
		if d.Spec.NodeName != node {
			c.logger.Warn("report from a node the device is not bound to", "node", node, "device", ns+"/"+name, "bound_to", d.Spec.NodeName)
			return nil
		}
		list, changed := mergeTwins(d, twins)
		if !changed {
			return nil
		}
		patch := map[string]any{
			"metadata": map[string]any{"resourceVersion": obj.GetResourceVersion()},
			"status":   map[string]any{"twins": list},
		}
		err = c.patch(ctx, ns, name, patch)
		if apierrors.IsConflict(err) && attempt < 3 {
			continue
		}
		return err
	}
}

func (c *Controller) patchStatus(ctx context.Context, node, ns, name string, patch map[string]any) error {
	obj, ok, _ := c.devices.GetIndexer().GetByKey(ns + "/" + name)
	if !ok {
		return nil
	}
	if d, err := parseDevice(obj); err != nil || d.Spec.NodeName != node {
		return nil
	}
	err := c.patch(ctx, ns, name, patch)
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}

func (c *Controller) patch(ctx context.Context, ns, name string, patch map[string]any) error {
	body, err := json.Marshal(patch)
	if err != nil {
		return err
	}
	_, err = c.client.Resource(DeviceGVR).Namespace(ns).Patch(ctx, name, types.MergePatchType, body, metav1.PatchOptions{}, "status")
	if err != nil {
		return fmt.Errorf("patch status of %s/%s: %w", ns, name, err)
	}
	return nil
}

// mergeTwins applies the edge's twins to the device's status twins, for
// the device's properties only, in the order of spec.properties. A twin the
// edge deleted leaves the list.
func mergeTwins(d *device, edge map[string]*twinwire.Twin) ([]statusTwin, bool) {
	have := map[string]statusTwin{}
	for _, t := range d.Status.Twins {
		have[t.PropertyName] = t
	}
	changed := false
	var out []statusTwin
	for _, p := range d.Spec.Properties {
		cur, ok := have[p.Name]
		if e, reported := edge[p.Name]; reported {
			switch {
			case e == nil || (e.Metadata != nil && e.Metadata.Type == typeDeleted):
				if ok {
					changed = true
				}
				continue
			default:
				next := statusTwin{PropertyName: p.Name, Reported: cur.Reported, ObservedDesired: cur.ObservedDesired}
				typ := ""
				if e.Metadata != nil {
					typ = e.Metadata.Type
				}
				if e.Actual != nil && e.Actual.Value != nil {
					next.Reported = statusValue(*e.Actual.Value, e.Actual.Metadata, typ)
				}
				if e.Expected != nil && e.Expected.Value != nil {
					next.ObservedDesired = statusValue(*e.Expected.Value, e.Expected.Metadata, typ)
				}
				if !ok || !sameTwin(cur, next) {
					changed = true
				}
				cur, ok = next, true
			}
		}
		if ok {
			out = append(out, cur)
		}
	}
	if len(out) != len(d.Status.Twins) {
		changed = true
	}
	return out, changed
}

func statusValue(v string, meta *twinwire.ValueMeta, typ string) *twinProperty {
	p := &twinProperty{Value: v, Metadata: map[string]string{}}
	if meta != nil && meta.Timestamp != 0 {
		p.Metadata["timestamp"] = strconv.FormatInt(meta.Timestamp, 10)
	}
	if typ != "" {
		p.Metadata["type"] = typ
	}
	return p
}

func sameTwin(a, b statusTwin) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return string(ja) == string(jb)
}
