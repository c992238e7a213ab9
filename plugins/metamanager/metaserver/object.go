package metaserver

import (
	"encoding/json"
	"fmt"
	"strconv"

	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/edgehive/edgehive/plugins/metamanager/store"
)

// resource is one served kind of object.
type resource struct {
	plural     string // path segment: pods
	storeType  string // metamanager's type: pod
	kind       string // Pod
	namespaced bool
	secret     bool // served only when secrets are enabled
}

// resources are the kinds served, all core/v1.
var resources = []*resource{
	{plural: "pods", storeType: "pod", kind: "Pod", namespaced: true},
	{plural: "configmaps", storeType: "configmap", kind: "ConfigMap", namespaced: true},
	{plural: "secrets", storeType: "secret", kind: "Secret", namespaced: true, secret: true},
	{plural: "services", storeType: "service", kind: "Service", namespaced: true},
	{plural: "endpoints", storeType: "endpoints", kind: "Endpoints", namespaced: true},
	{plural: "nodes", storeType: "node", kind: "Node"},
}

var (
	byPlural = map[string]*resource{}
	byType   = map[string]*resource{}
)

func init() {
	for _, r := range resources {
		byPlural[r.plural] = r
		byType[r.storeType] = r
	}
}

// ServedTypes are metamanager's store types the MetaServer serves.
func ServedTypes() []string {
	out := make([]string, 0, len(resources))
	for _, r := range resources {
		out = append(out, r.storeType)
	}
	return out
}

// storeNamespace is the namespace column of the resource's objects in ns.
func (r *resource) storeNamespace(ns string) string {
	if !r.namespaced {
		return "null" // KubeEdge's namespace of cluster-scoped objects
	}
	return ns
}

// render is the stored object as the API serves it: apiVersion and kind set,
// metadata.resourceVersion replaced by the MetaServer's revision.
func (r *resource) render(value json.RawMessage, rev uint64) (json.RawMessage, error) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(value, &top); err != nil || top == nil {
		return nil, fmt.Errorf("stored %s is not a JSON object", r.kind)
	}
	var meta map[string]json.RawMessage
	if m, ok := top["metadata"]; ok {
		if err := json.Unmarshal(m, &meta); err != nil {
			return nil, fmt.Errorf("stored %s: metadata is not an object", r.kind)
		}
	}
	if meta == nil {
		meta = map[string]json.RawMessage{}
	}
	meta["resourceVersion"] = quote(strconv.FormatUint(rev, 10))
	var err error
	if top["metadata"], err = json.Marshal(meta); err != nil {
		return nil, err
	}
	top["apiVersion"] = quote("v1")
	top["kind"] = quote(r.kind)
	return json.Marshal(top)
}

func quote(s string) json.RawMessage {
	b, _ := json.Marshal(s)
	return b
}

// filter is a request's label and field selectors.
type filter struct {
	labels labels.Selector
	fields fields.Selector
}

// fieldsOf are the fields a field selector may name. All are immutable, so
// the current value also stands for the previous one.
func (r *resource) fieldsOf(obj store.Object) fields.Set {
	var o struct {
		Metadata struct {
			Name      string `json:"name"`
			Namespace string `json:"namespace"`
		} `json:"metadata"`
		Spec struct {
			NodeName string `json:"nodeName"`
		} `json:"spec"`
	}
	_ = json.Unmarshal(obj.Value, &o)
	name := o.Metadata.Name
	if name == "" {
		name = obj.Name
	}
	set := fields.Set{"metadata.name": name}
	if r.namespaced {
		ns := o.Metadata.Namespace
		if ns == "" {
			ns = obj.Namespace
		}
		set["metadata.namespace"] = ns
	}
	if r.storeType == "pod" {
		set["spec.nodeName"] = o.Spec.NodeName
	}
	return set
}

// supportedFields are the field labels a selector may use, per resource.
func (r *resource) supportedField(f string) bool {
	switch f {
	case "metadata.name":
		return true
	case "metadata.namespace":
		return r.namespaced
	case "spec.nodeName":
		return r.storeType == "pod"
	}
	return false
}

// matches reports whether a stored object is selected.
func (f filter) matches(r *resource, obj store.Object) bool {
	return f.fields.Matches(r.fieldsOf(obj)) && f.labels.Matches(objectLabels(obj.Value))
}

// event is the watch event a change gives under the filter, as the API
// server's watch cache does it: an object that starts matching after a
// change is ADDED, one that stops matching is DELETED. ok is false when the
// watcher should not see the change.
func (f filter) event(r *resource, c *change) (typ string, ok bool) {
	if !f.fields.Matches(r.fieldsOf(c.obj)) {
		return "", false
	}
	now := f.labels.Matches(c.labels)
	switch c.typ {
	case Added:
		return Added, now
	case Deleted:
		return Deleted, now
	}
	was := f.labels.Matches(c.prevLabels)
	switch {
	case was && now:
		return Modified, true
	case now:
		return Added, true
	case was:
		return Deleted, true
	}
	return "", false
}
