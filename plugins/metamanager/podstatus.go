package metamanager

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/strategicpatch"

	"github.com/edgehive/edgehive/plugins/metamanager/metaserver"
	"github.com/edgehive/edgehive/plugins/metamanager/store"
	"github.com/edgehive/edgehive/sdk"
)

// resourceLocalPodStatus keys edged's latest reported status of a pod,
// "<ns>/localpodstatus/<name>", value {"metadata":{"uid":..},"status":{..}}.
// The cloud never sends status-only changes down, so without it the
// MetaServer would serve pods with the status of their creation. It is kept
// apart from the pod row on purpose: edged's pod list at start must get what
// the cloud sent, not what edged itself reported.
const resourceLocalPodStatus = "localpodstatus"

// recordPodStatus applies one of edged's pod status patches ("<ns>/podpatch/
// <name>", a strategic merge patch on status, as a JSON string) to the pod's
// local status and tells the MetaServer's watches. Only with the MetaServer
// on; a pod not stored, or stored under another UID, is skipped.
func (m *MetaManager) recordPodStatus(ctx context.Context, res sdk.Resource, msg *sdk.Message) error {
	if m.hub == nil {
		return nil
	}
	patch, err := objectContent(msg)
	if err != nil {
		return fmt.Errorf("pod status patch: %w", err)
	}
	podKey := sdk.BuildResource(res.Namespace, sdk.ResourcePod, res.Name)
	pod, err := m.store.Get(ctx, podKey)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	uid := metaString(pod.Value, "uid")
	if p := metaString(patch, "uid"); p != "" && uid != "" && p != uid {
		return nil // a patch for an older pod of that name
	}
	base := m.localStatus(ctx, res.Namespace, res.Name, uid)
	if base == nil {
		base = topField(pod.Value, "status")
	}
	original, err := json.Marshal(map[string]any{"metadata": map[string]string{"uid": uid}, "status": base})
	if err != nil {
		return err
	}
	merged, err := strategicpatch.StrategicMergePatch(original, patch, corev1.Pod{})
	if err != nil {
		return fmt.Errorf("pod status patch: %w", err)
	}
	value, err := json.Marshal(map[string]any{"metadata": map[string]string{"uid": uid}, "status": topField(merged, "status")})
	if err != nil {
		return err
	}
	key := sdk.BuildResource(res.Namespace, resourceLocalPodStatus, res.Name)
	if _, err := m.store.Save(ctx, key, resourceLocalPodStatus, "", value); err != nil {
		return err
	}
	m.publish(ctx, metaserver.Modified, podKey, pod.Value)
	return nil
}

// localStatus is edged's reported status of the pod with uid, or nil.
func (m *MetaManager) localStatus(ctx context.Context, ns, name, uid string) json.RawMessage {
	o, err := m.store.Get(ctx, sdk.BuildResource(ns, resourceLocalPodStatus, name))
	if err != nil || metaString(o.Value, "uid") != uid {
		return nil
	}
	return topField(o.Value, "status")
}

// withLocalStatus is a stored pod with edged's reported status in place of
// the one the cloud sent, when there is one; other objects are unchanged.
func (m *MetaManager) withLocalStatus(ctx context.Context, obj store.Object) json.RawMessage {
	if obj.Type != sdk.ResourcePod {
		return obj.Value
	}
	status := m.localStatus(ctx, obj.Namespace, obj.Name, metaString(obj.Value, "uid"))
	if status == nil {
		return obj.Value
	}
	var top map[string]json.RawMessage
	if json.Unmarshal(obj.Value, &top) != nil || top == nil {
		return obj.Value
	}
	top["status"] = status
	out, err := json.Marshal(top)
	if err != nil {
		return obj.Value
	}
	return out
}

// topField is a top-level field of a JSON object, or nil.
func topField(obj json.RawMessage, field string) json.RawMessage {
	var top map[string]json.RawMessage
	if json.Unmarshal(obj, &top) != nil {
		return nil
	}
	return top[field]
}

// recordNode keeps the MetaServer's node current with what edged reports:
// its registration (insert or update of "null/node/<n>" with the Node) is
// stored when the cloud has not sent the node yet, and its status patches
// ("null/nodepatch/<n>", strategic merge) are applied to the stored node,
// keeping the cloud's resourceVersion. edged never reads the node back, so
// unlike pods the row itself can hold it. Only with the MetaServer on.
func (m *MetaManager) recordNode(ctx context.Context, res sdk.Resource, msg *sdk.Message) error {
	if m.hub == nil {
		return nil
	}
	nodeKey := sdk.BuildResource(res.Namespace, sdk.ResourceNode, res.Name)
	content, err := objectContent(msg)
	if err != nil {
		return fmt.Errorf("node: %w", err)
	}
	stored, err := m.store.Get(ctx, nodeKey)
	missing := errors.Is(err, store.ErrNotFound)
	if err != nil && !missing {
		return err
	}
	switch {
	case res.Type == sdk.ResourceNode && missing:
		result, err := m.store.Save(ctx, nodeKey, sdk.ResourceNode, "", content)
		if err != nil {
			return err
		}
		m.published(ctx, result, nodeKey, content)
	case res.Type == sdk.ResourceNodePatch && !missing:
		merged, err := strategicpatch.StrategicMergePatch(stored.Value, content, corev1.Node{})
		if err != nil {
			return fmt.Errorf("node status patch: %w", err)
		}
		if err := m.store.Replace(ctx, nodeKey, merged); err != nil {
			return err
		}
		m.publish(ctx, metaserver.Modified, nodeKey, merged)
	}
	return nil
}
