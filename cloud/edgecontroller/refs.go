package edgecontroller

import (
	v1 "k8s.io/api/core/v1"
)

// podRefs lists the configMaps and secrets a pod uses, by name in the pod's
// namespace, each once: volumes, projected sources, env and envFrom of every
// container kind, and image pull secrets. These are what the node needs to
// run the pod, and all it may read (as the Node authorizer allows a kubelet).
func podRefs(pod *v1.Pod) (configMaps, secrets []string) {
	seenCM, seenSecret := map[string]bool{}, map[string]bool{}
	addCM := func(name string) {
		if name != "" && !seenCM[name] {
			seenCM[name] = true
			configMaps = append(configMaps, name)
		}
	}
	addSecret := func(name string) {
		if name != "" && !seenSecret[name] {
			seenSecret[name] = true
			secrets = append(secrets, name)
		}
	}
	for i := range pod.Spec.Volumes {
		v := &pod.Spec.Volumes[i]
		if v.ConfigMap != nil {
			addCM(v.ConfigMap.Name)
		}
		if v.Secret != nil {
			addSecret(v.Secret.SecretName)
		}
		if v.Projected != nil {
			for _, s := range v.Projected.Sources {
				if s.ConfigMap != nil {
					addCM(s.ConfigMap.Name)
				}
				if s.Secret != nil {
					addSecret(s.Secret.Name)
				}
			}
		}
		// Volume plugins that name a secret for their credentials.
		switch {
		case v.CephFS != nil && v.CephFS.SecretRef != nil:
			addSecret(v.CephFS.SecretRef.Name)
		case v.FlexVolume != nil && v.FlexVolume.SecretRef != nil:
			addSecret(v.FlexVolume.SecretRef.Name)
		case v.ISCSI != nil && v.ISCSI.SecretRef != nil:
			addSecret(v.ISCSI.SecretRef.Name)
		case v.RBD != nil && v.RBD.SecretRef != nil:
			addSecret(v.RBD.SecretRef.Name)
		case v.CSI != nil && v.CSI.NodePublishSecretRef != nil:
			addSecret(v.CSI.NodePublishSecretRef.Name)
		}
	}
	env := func(envFrom []v1.EnvFromSource, vars []v1.EnvVar) {
		for _, ef := range envFrom {
			if ef.ConfigMapRef != nil {
				addCM(ef.ConfigMapRef.Name)
			}
			if ef.SecretRef != nil {
				addSecret(ef.SecretRef.Name)
			}
		}
		for _, e := range vars {
			if e.ValueFrom == nil {
				continue
			}
			if e.ValueFrom.ConfigMapKeyRef != nil {
				addCM(e.ValueFrom.ConfigMapKeyRef.Name)
			}
			if e.ValueFrom.SecretKeyRef != nil {
				addSecret(e.ValueFrom.SecretKeyRef.Name)
			}
		}
	}
	for i := range pod.Spec.InitContainers {
		env(pod.Spec.InitContainers[i].EnvFrom, pod.Spec.InitContainers[i].Env)
	}
	for i := range pod.Spec.Containers {
		env(pod.Spec.Containers[i].EnvFrom, pod.Spec.Containers[i].Env)
	}
	for i := range pod.Spec.EphemeralContainers {
		env(pod.Spec.EphemeralContainers[i].EnvFrom, pod.Spec.EphemeralContainers[i].Env)
	}
	for _, s := range pod.Spec.ImagePullSecrets {
		addSecret(s.Name)
	}
	return configMaps, secrets
}
