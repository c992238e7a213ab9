package edged

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
)

// ReasonInvalidPodSpec is the Failed pod's reason for a spec edged cannot run.
const ReasonInvalidPodSpec = "InvalidPodSpec"

// errInvalidPod marks a pod whose content could not be decoded: only its
// metadata is known, so it can be reported Failed.
type errInvalidPod struct{ err error }

func (e *errInvalidPod) Error() string { return e.err.Error() }
func (e *errInvalidPod) Unwrap() error { return e.err }

// decodePod reads a pod from raw JSON (or JSON in a JSON string). When the
// pod does not decode (a bad quantity, a wrong type) but its metadata does,
// it returns a stub pod with that metadata and an *errInvalidPod, so that
// the pod gets a Failed status instead of vanishing.
func decodePod(raw []byte) (*v1.Pod, error) {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		raw = []byte(s)
	}
	pod := &v1.Pod{}
	err := json.Unmarshal(raw, pod)
	if err == nil {
		return pod, nil
	}
	var stub struct {
		Metadata metav1.ObjectMeta `json:"metadata"`
	}
	if json.Unmarshal(raw, &stub) != nil || stub.Metadata.UID == "" {
		return nil, err
	}
	out := &v1.Pod{ObjectMeta: stub.Metadata}
	return out, &errInvalidPod{fmt.Errorf("pod does not decode: %w", err)}
}

// volumeSource names the volume's source when edged can provide it.
func volumeSource(v *v1.Volume) (string, error) {
	var set []string
	add := func(ok bool, name string) {
		if ok {
			set = append(set, name)
		}
	}
	add(v.EmptyDir != nil, "emptyDir")
	add(v.HostPath != nil, "hostPath")
	add(v.ConfigMap != nil, "configMap")
	add(v.Secret != nil, "secret")
	add(v.DownwardAPI != nil, "downwardAPI")
	add(v.Projected != nil, "projected")
	known := len(set)
	add(v.PersistentVolumeClaim != nil, "persistentVolumeClaim")
	add(v.CSI != nil, "csi")
	add(v.Ephemeral != nil, "ephemeral")
	add(v.NFS != nil, "nfs")
	add(v.ISCSI != nil, "iscsi")
	add(v.Image != nil, "image")
	add(v.FC != nil, "fc")
	add(v.RBD != nil, "rbd")
	add(v.CephFS != nil, "cephfs")
	add(v.GitRepo != nil, "gitRepo")
	add(v.Glusterfs != nil, "glusterfs")
	switch {
	case len(set) == 0:
		return "", errors.New("no volume source or a volume type edged does not know")
	case len(set) > 1:
		return "", fmt.Errorf("more than one volume source: %s", strings.Join(set, ", "))
	case known == 0:
		return "", fmt.Errorf("volume type %s is not supported by edged", set[0])
	}
	return set[0], nil
}

// validatePod rejects specs the runtime cannot run, with a reason a user can act on.
func validatePod(pod *v1.Pod) error {
	if pod.UID == "" || pod.Name == "" {
		return errors.New("pod has no name or uid")
	}
	if len(pod.Spec.Containers) == 0 {
		return errors.New("pod has no containers")
	}
	switch pod.Spec.RestartPolicy {
	case "", v1.RestartPolicyAlways, v1.RestartPolicyOnFailure, v1.RestartPolicyNever:
	default:
		return fmt.Errorf("restartPolicy %q unknown", pod.Spec.RestartPolicy)
	}
	vols := map[string]bool{}
	for i := range pod.Spec.Volumes {
		v := &pod.Spec.Volumes[i]
		if v.Name == "" {
			return fmt.Errorf("volume %d has no name", i)
		}
		if vols[v.Name] {
			return fmt.Errorf("duplicate volume name %q", v.Name)
		}
		vols[v.Name] = true
		if _, err := volumeSource(v); err != nil {
			return fmt.Errorf("volume %q: %w", v.Name, err)
		}
	}
	seen := map[string]bool{}
	all := append(append([]v1.Container(nil), pod.Spec.InitContainers...), pod.Spec.Containers...)
	for _, ec := range pod.Spec.EphemeralContainers {
		all = append(all, v1.Container(ec.EphemeralContainerCommon))
	}
	for i := range all {
		c := &all[i]
		if c.Name == "" || c.Image == "" {
			return fmt.Errorf("container %q needs a name and an image", c.Name)
		}
		if errs := validation.IsDNS1123Label(c.Name); len(errs) > 0 {
			return fmt.Errorf("container name %q: %s", c.Name, strings.Join(errs, "; "))
		}
		if seen[c.Name] {
			return fmt.Errorf("duplicate container name %q", c.Name)
		}
		seen[c.Name] = true
		if err := validateResources(c); err != nil {
			return fmt.Errorf("container %q: %w", c.Name, err)
		}
		for _, m := range c.VolumeMounts {
			if !vols[m.Name] {
				return fmt.Errorf("container %q: volumeMount %q names no volume of the pod", c.Name, m.Name)
			}
			if !strings.HasPrefix(m.MountPath, "/") {
				return fmt.Errorf("container %q: mountPath %q is not absolute", c.Name, m.MountPath)
			}
		}
		for _, p := range c.Ports {
			if p.ContainerPort < 1 || p.ContainerPort > 65535 || p.HostPort < 0 || p.HostPort > 65535 {
				return fmt.Errorf("container %q: port %d/%d out of range", c.Name, p.ContainerPort, p.HostPort)
			}
		}
	}
	return nil
}

// validateResources: no negative quantities, requests within limits.
func validateResources(c *v1.Container) error {
	check := func(kind string, l v1.ResourceList) error {
		for name, q := range l {
			if q.Sign() < 0 {
				return fmt.Errorf("%s %s = %s is negative", kind, name, q.String())
			}
		}
		return nil
	}
	if err := check("request", c.Resources.Requests); err != nil {
		return err
	}
	if err := check("limit", c.Resources.Limits); err != nil {
		return err
	}
	for name, req := range c.Resources.Requests {
		if lim, ok := c.Resources.Limits[name]; ok && req.Cmp(lim) > 0 {
			return fmt.Errorf("request %s = %s exceeds its limit %s", name, req.String(), lim.String())
		}
	}
	return nil
}
