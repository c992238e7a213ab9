package kuberuntime

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	v1 "k8s.io/api/core/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// makeMounts turns c's volumeMounts into CRI mounts over the prepared
// volumes (host paths by volume name). A mount of a volume that is missing
// or failed to prepare is an error naming it (volErr says why). configMap,
// secret and downwardAPI volumes are always read-only, as the kubelet's.
// subPathExpr is expanded with the container's environment (env).
func makeMounts(pod *v1.Pod, c *v1.Container, vols map[string]string, volErr error, env map[string]string) ([]*runtimeapi.Mount, error) {
	apiData := map[string]bool{}
	for _, v := range pod.Spec.Volumes {
		if v.ConfigMap != nil || v.Secret != nil || v.DownwardAPI != nil || v.Projected != nil {
			apiData[v.Name] = true
		}
	}
	var out []*runtimeapi.Mount
	for _, vm := range c.VolumeMounts {
		host, ok := vols[vm.Name]
		if !ok {
			if volErr != nil {
				return nil, fmt.Errorf("volume %q of mount %q is not ready: %w", vm.Name, vm.MountPath, volErr)
			}
			return nil, fmt.Errorf("volume %q of mount %q not found in the pod's volumes", vm.Name, vm.MountPath)
		}
		if vm.MountPath == "" {
			return nil, fmt.Errorf("volume mount %q has no mountPath", vm.Name)
		}
		sp, field := vm.SubPath, "subPath"
		if vm.SubPathExpr != "" {
			if sp != "" {
				return nil, fmt.Errorf("volume mount %q: subPath and subPathExpr are mutually exclusive", vm.Name)
			}
			// An expansion that leaves the volume (an empty variable
			// making it absolute, a "..") keeps the container from
			// starting until the variable changes, as the kubelet does.
			var err error
			if sp, err = expandSubPath(vm.SubPathExpr, env); err != nil {
				return nil, fmt.Errorf("volume mount %q: subPathExpr %q: %w", vm.Name, vm.SubPathExpr, err)
			}
			field = "subPathExpr"
		}
		if sp != "" {
			if filepath.IsAbs(sp) || sp == ".." || strings.HasPrefix(sp, "../") || strings.Contains(sp, "/../") || strings.HasSuffix(sp, "/..") {
				return nil, fmt.Errorf("volume mount %q: %s %q must be relative and stay inside the volume", vm.Name, field, sp)
			}
			host = filepath.Join(host, sp)
			if _, err := os.Stat(host); os.IsNotExist(err) {
				// As the kubelet, a missing subPath is created as a directory.
				if err := os.MkdirAll(host, 0o755); err != nil {
					return nil, fmt.Errorf("volume mount %q: subPath %q: %w", vm.Name, sp, err)
				}
			}
		}
		prop := runtimeapi.MountPropagation_PROPAGATION_PRIVATE
		if vm.MountPropagation != nil {
			switch *vm.MountPropagation {
			case v1.MountPropagationHostToContainer:
				prop = runtimeapi.MountPropagation_PROPAGATION_HOST_TO_CONTAINER
			case v1.MountPropagationBidirectional:
				prop = runtimeapi.MountPropagation_PROPAGATION_BIDIRECTIONAL
			}
		}
		out = append(out, &runtimeapi.Mount{
			ContainerPath: vm.MountPath,
			HostPath:      host,
			Readonly:      vm.ReadOnly || apiData[vm.Name],
			Propagation:   prop,
		})
	}
	return out, nil
}

// expandSubPath expands the $(VAR)s of a subPathExpr. Unlike command and
// args, a variable that is unset or empty is an error (the kubelet's rule):
// the path would silently point elsewhere in the volume.
func expandSubPath(expr string, env map[string]string) (string, error) {
	var missing []string
	for i := 0; i+1 < len(expr); i++ {
		switch {
		case expr[i] == '$' && expr[i+1] == '$':
			i++
		case expr[i] == '$' && expr[i+1] == '(':
			end := strings.IndexByte(expr[i+2:], ')')
			if end < 0 {
				i = len(expr)
				break
			}
			name := expr[i+2 : i+2+end]
			if env[name] == "" {
				missing = append(missing, name)
			}
			i += 2 + end
		}
	}
	if len(missing) > 0 {
		return "", fmt.Errorf("missing value for %s", strings.Join(missing, ", "))
	}
	return expand(expr, env), nil
}
