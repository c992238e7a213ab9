package kuberuntime

import (
	"fmt"
	"strings"

	v1 "k8s.io/api/core/v1"
)

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

// makeEnv builds the container's environment in spec order, each value
// expanded against the variables before it.
func makeEnv(pod *v1.Pod, c *v1.Container, podIP string) ([][2]string, map[string]string, error) {
	vars := map[string]string{}
	var out [][2]string
	for _, e := range c.Env {
		val := e.Value
		switch {
		case e.ValueFrom == nil:
			val = expand(e.Value, vars)
		case e.ValueFrom.FieldRef != nil:
			v, err := fieldValue(pod, podIP, e.ValueFrom.FieldRef.FieldPath)
			if err != nil {
				return nil, nil, fmt.Errorf("env %s: %w", e.Name, err)
			}
			val = v
		default:
			return nil, nil, fmt.Errorf("env %s: only values and fieldRef are supported yet", e.Name)
		}
		vars[e.Name] = val
		out = append(out, [2]string{e.Name, val})
	}
	return out, vars, nil
}
