package sdk

import (
	"fmt"
	"strings"
)

// ClusterNamespace is the namespace KubeEdge writes for cluster-scoped objects.
const ClusterNamespace = "null"

// Resource types used in resource strings.
const (
	ResourcePod       = "pod"
	ResourcePodPatch  = "podpatch"
	ResourcePodStatus = "podstatus"
	ResourceNode      = "node"
	ResourceNodePatch = "nodepatch"
	ResourceLease     = "lease"
	ResourceConfigMap = "configmap"
	ResourceSecret    = "secret"
	ResourceService   = "service"
	ResourceEndpoints = "endpoints"
	ResourceEvent     = "event"
)

// Resource is a parsed resource string: "<namespace>/<type>/<name>", or
// "<namespace>/<type>" for a list.
type Resource struct {
	Namespace string
	Type      string
	Name      string
}

// BuildResource returns "<ns>/<type>/<name>"; an empty namespace means a
// cluster-scoped object and is written as "null"; an empty name gives a list
// resource "<ns>/<type>".
func BuildResource(namespace, resourceType, name string) string {
	if namespace == "" {
		namespace = ClusterNamespace
	}
	if name == "" {
		return namespace + "/" + resourceType
	}
	return namespace + "/" + resourceType + "/" + name
}

// ParseResource splits a resource string. The name may itself contain slashes
// (device resources do); it is everything after the second slash.
func ParseResource(s string) (Resource, error) {
	parts := strings.SplitN(s, "/", 3)
	if len(parts) < 2 || parts[0] == "" || parts[1] == "" {
		return Resource{}, fmt.Errorf("resource %q: want <namespace>/<type>[/<name>]", s)
	}
	r := Resource{Namespace: parts[0], Type: parts[1]}
	if len(parts) == 3 {
		if parts[2] == "" {
			return Resource{}, fmt.Errorf("resource %q: empty name", s)
		}
		r.Name = parts[2]
	}
	return r, nil
}

// String formats the resource back.
func (r Resource) String() string {
	ns := r.Namespace
	if ns == "" {
		ns = ClusterNamespace
	}
	return BuildResource(ns, r.Type, r.Name)
}

// ClusterScoped reports whether the namespace is KubeEdge's "null".
func (r Resource) ClusterScoped() bool { return r.Namespace == ClusterNamespace }

// IsList reports whether the resource names a collection.
func (r Resource) IsList() bool { return r.Name == "" }
