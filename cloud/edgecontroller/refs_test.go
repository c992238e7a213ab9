package edgecontroller

import (
	"reflect"
	"testing"

	v1 "k8s.io/api/core/v1"
)

func TestPodRefs(t *testing.T) {
	ref := func(n string) v1.LocalObjectReference { return v1.LocalObjectReference{Name: n} }
	cases := []struct {
		name        string
		spec        v1.PodSpec
		cms, secret []string
	}{
		{name: "nothing", spec: v1.PodSpec{Containers: []v1.Container{{Name: "c"}}}},
		{name: "volumes and projected sources", spec: v1.PodSpec{Volumes: []v1.Volume{
			{VolumeSource: v1.VolumeSource{ConfigMap: &v1.ConfigMapVolumeSource{LocalObjectReference: ref("cm1")}}},
			{VolumeSource: v1.VolumeSource{Secret: &v1.SecretVolumeSource{SecretName: "s1"}}},
			{VolumeSource: v1.VolumeSource{Projected: &v1.ProjectedVolumeSource{Sources: []v1.VolumeProjection{
				{ConfigMap: &v1.ConfigMapProjection{LocalObjectReference: ref("kube-root-ca.crt")}},
				{Secret: &v1.SecretProjection{LocalObjectReference: ref("s2")}},
				{ServiceAccountToken: &v1.ServiceAccountTokenProjection{Path: "token"}},
			}}}},
			{VolumeSource: v1.VolumeSource{CSI: &v1.CSIVolumeSource{Driver: "d", NodePublishSecretRef: &v1.LocalObjectReference{Name: "s3"}}}},
		}}, cms: []string{"cm1", "kube-root-ca.crt"}, secret: []string{"s1", "s2", "s3"}},
		{name: "env, envFrom of every container kind, pull secrets, each once", spec: v1.PodSpec{
			InitContainers: []v1.Container{{EnvFrom: []v1.EnvFromSource{{ConfigMapRef: &v1.ConfigMapEnvSource{LocalObjectReference: ref("init-cm")}}}}},
			Containers: []v1.Container{{
				EnvFrom: []v1.EnvFromSource{{SecretRef: &v1.SecretEnvSource{LocalObjectReference: ref("env-s")}}},
				Env: []v1.EnvVar{
					{Name: "A", ValueFrom: &v1.EnvVarSource{ConfigMapKeyRef: &v1.ConfigMapKeySelector{LocalObjectReference: ref("key-cm")}}},
					{Name: "B", ValueFrom: &v1.EnvVarSource{SecretKeyRef: &v1.SecretKeySelector{LocalObjectReference: ref("env-s")}}},
					{Name: "C", Value: "plain"},
				},
			}},
			EphemeralContainers: []v1.EphemeralContainer{{EphemeralContainerCommon: v1.EphemeralContainerCommon{
				Env: []v1.EnvVar{{Name: "D", ValueFrom: &v1.EnvVarSource{ConfigMapKeyRef: &v1.ConfigMapKeySelector{LocalObjectReference: ref("eph-cm")}}}}}}},
			ImagePullSecrets: []v1.LocalObjectReference{ref("registry")},
		}, cms: []string{"init-cm", "key-cm", "eph-cm"}, secret: []string{"env-s", "registry"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cms, secrets := podRefs(&v1.Pod{Spec: tc.spec})
			if !reflect.DeepEqual(cms, tc.cms) || !reflect.DeepEqual(secrets, tc.secret) {
				t.Fatalf("got configmaps %v secrets %v, want %v %v", cms, secrets, tc.cms, tc.secret)
			}
		})
	}
}
