package kuberuntime

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/edgehive/edgehive/plugins/edged/volume"
)

// Object kinds a Fetcher is asked for, and the error it wraps for a
// missing object: the volume package's, as both share one fetcher.
const (
	KindConfigMap = volume.KindConfigMap
	KindSecret    = volume.KindSecret
)

// ErrNotFound is what a Fetcher wraps when the object does not exist.
var ErrNotFound = volume.ErrNotFound

// Fetcher returns the data of a configMap or secret.
type Fetcher = volume.Fetcher

// ServiceLister returns the services of a namespace.
type ServiceLister func(ctx context.Context, namespace string) ([]*v1.Service, error)

// errConfig marks an error in the container's configuration (a missing
// configMap key...): the kubelet's CreateContainerConfigError.
var errConfig = errors.New("container configuration")

func configErr(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errConfig, fmt.Sprintf(format, args...))
}

// expand replaces $(NAME) with vars[NAME]; $$ is a literal $; an unknown
// $(NAME) stays as it is (the kubelet's expansion rules).
func expand(s string, vars map[string]string) string {
	if !strings.Contains(s, "$") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 >= len(s) {
			b.WriteByte(s[i])
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
		case '(':
			end := strings.IndexByte(s[i+2:], ')')
			if end < 0 {
				b.WriteString(s[i:])
				return b.String()
			}
			name := s[i+2 : i+2+end]
			if v, ok := vars[name]; ok {
				b.WriteString(v)
			} else {
				b.WriteString(s[i : i+3+end])
			}
			i += 2 + end
		default:
			b.WriteByte('$')
		}
	}
	return b.String()
}

// fieldValue answers a fieldRef of the downward API.
func fieldValue(pod *v1.Pod, podIP, path string) (string, error) {
	switch path {
	case "metadata.name":
		return pod.Name, nil
	case "metadata.namespace":
		return pod.Namespace, nil
	case "metadata.uid":
		return string(pod.UID), nil
	case "spec.nodeName":
		return pod.Spec.NodeName, nil
	case "spec.serviceAccountName":
		return pod.Spec.ServiceAccountName, nil
	case "status.podIP":
		return podIP, nil
	case "status.hostIP":
		return pod.Status.HostIP, nil
	}
	if strings.HasPrefix(path, "metadata.labels['") && strings.HasSuffix(path, "']") {
		return pod.Labels[path[len("metadata.labels['"):len(path)-2]], nil
	}
	if strings.HasPrefix(path, "metadata.annotations['") && strings.HasSuffix(path, "']") {
		return pod.Annotations[path[len("metadata.annotations['"):len(path)-2]], nil
	}
	return "", fmt.Errorf("fieldRef %q is not supported", path)
}

// envSource fetches configMaps and secrets once per container start.
type envSource struct {
	ctx   context.Context
	fetch Fetcher
	ns    string
	cache map[string]map[string][]byte
	errs  map[string]error
}

func (s *envSource) get(kind, name string) (map[string][]byte, error) {
	key := kind + "/" + name
	if d, ok := s.cache[key]; ok {
		return d, s.errs[key]
	}
	if s.fetch == nil {
		return nil, fmt.Errorf("%s %s/%s: no source of %ss", kind, s.ns, name, kind)
	}
	d, err := s.fetch(s.ctx, kind, s.ns, name)
	s.cache[key], s.errs[key] = d, err
	return d, err
}

// keyRef resolves a configMapKeyRef or secretKeyRef; ok is false when an
// optional object or key is missing (the variable is left out).
func (s *envSource) keyRef(kind, name, key string, optional *bool) (val string, ok bool, err error) {
	opt := optional != nil && *optional
	d, err := s.get(kind, name)
	if err != nil {
		if opt && errors.Is(err, ErrNotFound) {
			return "", false, nil
		}
		return "", false, configErr("%s %q: %v", kind, name, err)
	}
	v, found := d[key]
	if !found {
		if opt {
			return "", false, nil
		}
		return "", false, configErr("couldn't find key %s in %s %s/%s", key, kind, s.ns, name)
	}
	return string(v), true, nil
}

// EnvInput is what a container's environment is made from besides its spec.
type EnvInput struct {
	PodIP      string
	HostIP     string
	Fetch      Fetcher
	Services   []*v1.Service // the pod's namespace's and default/kubernetes
	NodeCPU    int64
	NodeMemory int64
}

// makeEnv builds the container's environment as the kubelet does: service
// variables first, then envFrom, then env in spec order (later wins), each
// env value expanded against the variables before it.
func makeEnv(ctx context.Context, pod *v1.Pod, c *v1.Container, in EnvInput) ([][2]string, map[string]string, error) {
	vars := map[string]string{}
	var order []string
	set := func(k, v string) {
		if _, ok := vars[k]; !ok {
			order = append(order, k)
		}
		vars[k] = v
	}
	for _, kv := range serviceEnv(in.Services) {
		set(kv[0], kv[1])
	}
	src := &envSource{ctx: ctx, fetch: in.Fetch, ns: pod.Namespace, cache: map[string]map[string][]byte{}, errs: map[string]error{}}
	for _, ef := range c.EnvFrom {
		kind, name, optional := KindConfigMap, "", (*bool)(nil)
		switch {
		case ef.ConfigMapRef != nil:
			name, optional = ef.ConfigMapRef.Name, ef.ConfigMapRef.Optional
		case ef.SecretRef != nil:
			kind, name, optional = KindSecret, ef.SecretRef.Name, ef.SecretRef.Optional
		default:
			continue
		}
		d, err := src.get(kind, name)
		if err != nil {
			if optional != nil && *optional && errors.Is(err, ErrNotFound) {
				continue
			}
			return nil, nil, configErr("envFrom %s %q: %v", kind, name, err)
		}
		keys := make([]string, 0, len(d))
		for k := range d {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			name := ef.Prefix + k
			// Any printable ASCII but '=' (the API's relaxed rule since
			// 1.34): "1-key", "$_-key" and "#@!key" are names too.
			if len(validation.IsRelaxedEnvVarName(name)) > 0 {
				continue // the kubelet skips invalid names (and reports an event)
			}
			set(name, string(d[k]))
		}
	}
	for _, e := range c.Env {
		val := e.Value
		switch {
		case e.ValueFrom == nil:
			val = expand(e.Value, vars)
		case e.ValueFrom.FieldRef != nil:
			v, err := fieldValue(pod, in.PodIP, e.ValueFrom.FieldRef.FieldPath)
			if err != nil {
				return nil, nil, configErr("env %s: %v", e.Name, err)
			}
			if e.ValueFrom.FieldRef.FieldPath == "status.hostIP" && v == "" {
				v = in.HostIP
			}
			if e.ValueFrom.FieldRef.FieldPath == "status.hostIPs" || e.ValueFrom.FieldRef.FieldPath == "status.podIPs" {
				v = in.PodIP
				if e.ValueFrom.FieldRef.FieldPath == "status.hostIPs" {
					v = in.HostIP
				}
			}
			val = v
		case e.ValueFrom.ResourceFieldRef != nil:
			target := c
			if n := e.ValueFrom.ResourceFieldRef.ContainerName; n != "" && n != c.Name {
				if target = specOf(pod, n); target == nil {
					return nil, nil, configErr("env %s: container %q not in the pod", e.Name, n)
				}
			}
			v, err := volume.ResourceValue(target, e.ValueFrom.ResourceFieldRef, in.NodeCPU, in.NodeMemory)
			if err != nil {
				return nil, nil, configErr("env %s: %v", e.Name, err)
			}
			val = v
		case e.ValueFrom.ConfigMapKeyRef != nil:
			r := e.ValueFrom.ConfigMapKeyRef
			v, ok, err := src.keyRef(KindConfigMap, r.Name, r.Key, r.Optional)
			if err != nil {
				return nil, nil, err
			}
			if !ok {
				continue
			}
			val = v
		case e.ValueFrom.SecretKeyRef != nil:
			r := e.ValueFrom.SecretKeyRef
			v, ok, err := src.keyRef(KindSecret, r.Name, r.Key, r.Optional)
			if err != nil {
				return nil, nil, err
			}
			if !ok {
				continue
			}
			val = v
		default:
			return nil, nil, configErr("env %s: valueFrom source not supported", e.Name)
		}
		set(e.Name, val)
	}
	out := make([][2]string, 0, len(order))
	for _, k := range order {
		out = append(out, [2]string{k, vars[k]})
	}
	return out, vars, nil
}

// serviceEnv is the kubelet's service environment (and Docker-link style
// variables) for services with a cluster IP, sorted by service name.
func serviceEnv(services []*v1.Service) [][2]string {
	svcs := append([]*v1.Service(nil), services...)
	sort.Slice(svcs, func(i, j int) bool { return svcs[i].Name < svcs[j].Name })
	var out [][2]string
	for _, svc := range svcs {
		ip := svc.Spec.ClusterIP
		if ip == "" || ip == v1.ClusterIPNone || len(svc.Spec.Ports) == 0 {
			continue
		}
		prefix := envName(svc.Name)
		first := svc.Spec.Ports[0]
		out = append(out, [2]string{prefix + "_SERVICE_HOST", ip}, [2]string{prefix + "_SERVICE_PORT", strconv.Itoa(int(first.Port))})
		for _, p := range svc.Spec.Ports {
			if p.Name != "" {
				out = append(out, [2]string{prefix + "_SERVICE_PORT_" + envName(p.Name), strconv.Itoa(int(p.Port))})
			}
		}
		proto := func(p v1.ServicePort) string {
			if p.Protocol == "" {
				return "tcp"
			}
			return strings.ToLower(string(p.Protocol))
		}
		out = append(out, [2]string{prefix + "_PORT", fmt.Sprintf("%s://%s", proto(first), joinHostPort(ip, first.Port))})
		for _, p := range svc.Spec.Ports {
			pp := fmt.Sprintf("%s_PORT_%d_%s", prefix, p.Port, strings.ToUpper(proto(p)))
			out = append(out,
				[2]string{pp, fmt.Sprintf("%s://%s", proto(p), joinHostPort(ip, p.Port))},
				[2]string{pp + "_PROTO", proto(p)},
				[2]string{pp + "_PORT", strconv.Itoa(int(p.Port))},
				[2]string{pp + "_ADDR", ip})
		}
	}
	return out
}

func joinHostPort(ip string, port int32) string {
	if strings.Contains(ip, ":") {
		return "[" + ip + "]:" + strconv.Itoa(int(port))
	}
	return ip + ":" + strconv.Itoa(int(port))
}

func envName(s string) string {
	return strings.ToUpper(strings.ReplaceAll(s, "-", "_"))
}
