package devicecontroller

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sort"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/edgehive/edgehive/cloud/nodelink"
	"github.com/edgehive/edgehive/internal/twinwire"
	"github.com/edgehive/edgehive/sdk"
)

// device is the part of a Device the controller reads.
type device struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              struct {
		DeviceModelRef *struct {
			Name string `json:"name"`
		} `json:"deviceModelRef,omitempty"`
		NodeName   string           `json:"nodeName,omitempty"`
		Properties []deviceProperty `json:"properties,omitempty"`
	} `json:"spec"`
	Status deviceStatus `json:"status,omitempty"`
}

type deviceProperty struct {
	Name    string       `json:"name"`
	Desired twinProperty `json:"desired,omitempty"`
}

type twinProperty struct {
	Value    string            `json:"value"`
	Metadata map[string]string `json:"metadata,omitempty"`
}

type deviceStatus struct {
	Twins          []statusTwin `json:"twins,omitempty"`
	State          string       `json:"state,omitempty"`
	LastOnlineTime string       `json:"lastOnlineTime,omitempty"`
}

type statusTwin struct {
	PropertyName    string        `json:"propertyName"`
	Reported        *twinProperty `json:"reported,omitempty"`
	ObservedDesired *twinProperty `json:"observedDesired,omitempty"`
}

// deviceModel is the part of a DeviceModel the controller reads.
type deviceModel struct {
	Spec struct {
		Properties []struct {
			Name string `json:"name"`
			Type string `json:"type"`
		} `json:"properties"`
	} `json:"spec"`
}

// propertyTypes returns the edge twin type of each property of the
// device's model (string when the model or the property is unknown).
func (c *Controller) propertyTypes(d *device) map[string]string {
	out := map[string]string{}
	for _, p := range d.Spec.Properties {
		out[p.Name] = edgeTypeString
	}
	if d.Spec.DeviceModelRef == nil || d.Spec.DeviceModelRef.Name == "" {
		return out
	}
	obj, ok, err := c.models.GetIndexer().GetByKey(d.Namespace + "/" + d.Spec.DeviceModelRef.Name)
	if err != nil || !ok {
		return out
	}
	u, ok := obj.(interface{ UnstructuredContent() map[string]any })
	if !ok {
		return out
	}
	var m deviceModel
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.UnstructuredContent(), &m); err != nil {
		return out
	}
	for _, p := range m.Spec.Properties {
		if _, used := out[p.Name]; used {
			out[p.Name] = edgeType(p.Type)
		}
	}
	return out
}

// desired returns the non-empty desired values of the device's properties.
func desired(d *device) map[string]string {
	out := map[string]string{}
	for _, p := range d.Spec.Properties {
		if p.Name != "" && p.Desired.Value != "" {
			out[p.Name] = p.Desired.Value
		}
	}
	return out
}

// syncDevice brings the device's node up to date: membership when the device
// is new to the node (or leaves it), cloud_updated when desired values
// changed. A node that is not connected is skipped: NodeConnected resyncs it.
func (c *Controller) syncDevice(ctx context.Context, key string) error {
	prev := c.sent[key]
	obj, exists, err := c.devices.GetIndexer().GetByKey(key)
	if err != nil {
		return err
	}
	if !exists {
		if prev != nil {
			delete(c.sent, key)
			return c.removeFrom(ctx, prev.node, key)
		}
		return nil
	}
	d, err := parseDevice(obj)
	if err != nil {
		c.logger.Warn("device ignored", "key", key, "error", err)
		return nil
	}
	node := d.Spec.NodeName
	if prev != nil && prev.node != node {
		delete(c.sent, key)
		if err := c.removeFrom(ctx, prev.node, key); err != nil {
			return err
		}
		prev = nil
	}
	if node == "" {
		return nil
	}
	want := desired(d)
	types := c.propertyTypes(d)
	if prev == nil {
		if err := c.addTo(ctx, node, key, d, want, types); err != nil {
			return skipOffline(err)
		}
		c.sent[key] = &sentDevice{node: node, desired: want}
		return nil
	}
	changed := map[string]string{}
	for k, v := range want {
		if prev.desired[k] != v {
			changed[k] = v
		}
	}
	if len(changed) == 0 {
		return nil
	}
	if err := c.sendDesired(ctx, node, key, changed, types); err != nil {
		return skipOffline(err)
	}
	prev.desired = want
	return nil
}

// skipOffline drops ErrNotConnected: the node is resynced when it connects.
func skipOffline(err error) error {
	if errors.Is(err, nodelink.ErrNotConnected) {
		return nil
	}
	return err
}

// addTo sends the device to node as a member, with its properties as twins,
// then its desired values as a cloud update: the edge keeps the twins it
// already has on a membership add.
func (c *Controller) addTo(ctx context.Context, node, key string, d *device, want, types map[string]string) error {
	md := twinwire.Device{ID: key, Name: d.Name, Twin: map[string]*twinwire.Twin{}}
	for _, p := range d.Spec.Properties {
		if p.Name == "" {
			continue
		}
		opt := false
		t := &twinwire.Twin{Optional: &opt, Metadata: &twinwire.TypeMeta{Type: types[p.Name]}}
		if v, ok := want[p.Name]; ok {
			t.Expected = &twinwire.TwinValue{Value: &v}
		}
		md.Twin[p.Name] = t
	}
	msg, err := newMessage(sdk.OpUpdate, resMembership, twinwire.MembershipUpdate{BaseMessage: twinwire.NewEvent(), AddDevices: []twinwire.Device{md}})
	if err != nil {
		return err
	}
	if err := c.send(ctx, node, msg); err != nil {
		return fmt.Errorf("membership of %s to %s: %w", key, node, err)
	}
	c.logger.Debug("device sent to its node", "device", key, "node", node, "properties", len(md.Twin))
	if len(want) == 0 {
		return nil
	}
	return c.sendDesired(ctx, node, key, want, types)
}

// sendDesired sends desired values to node as twin/cloud_updated.
func (c *Controller) sendDesired(ctx context.Context, node, key string, values, types map[string]string) error {
	twins := map[string]*twinwire.Twin{}
	for _, k := range sortedKeys(values) {
		v := values[k]
		twins[k] = &twinwire.Twin{Expected: &twinwire.TwinValue{Value: &v}, Metadata: &twinwire.TypeMeta{Type: types[k]}}
	}
	msg, err := newMessage(sdk.OpUpdate, devicePrefix+key+cloudUpdated, twinwire.TwinUpdate{BaseMessage: twinwire.NewEvent(), Twin: twins})
	if err != nil {
		return err
	}
	if err := c.send(ctx, node, msg); err != nil {
		return fmt.Errorf("desired values of %s to %s: %w", key, node, err)
	}
	c.logger.Debug("desired values sent", "device", key, "node", node, "properties", len(values))
	return nil
}

// removeFrom tells node the device left it; if the node is away, it is
// told when it connects again.
func (c *Controller) removeFrom(ctx context.Context, node, key string) error {
	_, name, _ := cutKey(key)
	msg, err := newMessage(sdk.OpUpdate, resMembership, twinwire.MembershipUpdate{BaseMessage: twinwire.NewEvent(),
		RemoveDevices: []twinwire.Device{{ID: key, Name: name}}})
	if err != nil {
		return err
	}
	err = c.send(ctx, node, msg)
	if err == nil {
		delete(c.unremoved[node], key)
		c.logger.Debug("device removed from its node", "device", key, "node", node)
		return nil
	}
	if c.unremoved[node] == nil {
		c.unremoved[node] = map[string]bool{}
	}
	c.unremoved[node][key] = true
	if errors.Is(err, nodelink.ErrNotConnected) {
		return nil
	}
	return fmt.Errorf("removal of %s from %s: %w", key, node, err)
}

// syncNode resyncs a node that connected: removals it missed, then every
// device bound to it, from scratch.
func (c *Controller) syncNode(ctx context.Context, node string) error {
	for key := range maps.Clone(c.unremoved[node]) {
		if obj, ok, _ := c.devices.GetIndexer().GetByKey(key); ok {
			if d, err := parseDevice(obj); err == nil && d.Spec.NodeName == node {
				delete(c.unremoved[node], key) // it came back
				continue
			}
		}
		if err := c.removeFrom(ctx, node, key); err != nil {
			return err
		}
	}
	if len(c.unremoved[node]) == 0 {
		delete(c.unremoved, node)
	}
	for key, s := range c.sent {
		if s.node == node {
			delete(c.sent, key)
		}
	}
	var keys []string
	for _, obj := range c.devices.GetIndexer().List() {
		if d, err := parseDevice(obj); err == nil && d.Spec.NodeName == node {
			keys = append(keys, d.Namespace+"/"+d.Name)
		}
	}
	sort.Strings(keys)
	for _, key := range keys {
		c.queue.Add(keyDevice + key)
	}
	c.logger.Info("node resynced", "node", node, "devices", len(keys))
	return nil
}

func cutKey(key string) (ns, name string, ok bool) {
	for i := 0; i < len(key); i++ {
		if key[i] == '/' {
			return key[:i], key[i+1:], true
		}
	}
	return "", key, false
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
