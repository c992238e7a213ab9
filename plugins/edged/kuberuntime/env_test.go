package kuberuntime

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestMakeEnv(t *testing.T) {
	objs := map[string]map[string][]byte{
		"configmap/ns/cm": {"A": []byte("1"), "B": []byte("2"), "bad-key": []byte("x")},
		"secret/ns/sec":   {"pw": []byte("s3cret")},
	}
	fetch := func(_ context.Context, kind, ns, name string) (map[string][]byte, error) {
		d, ok := objs[kind+"/"+ns+"/"+name]
		if !ok {
			return nil, fmt.Errorf("%s: %w", name, ErrNotFound)
		}
		return d, nil
	}
	opt := true
	pod := &v1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns", UID: "u"}}
	ref := func(kind, name, key string, optional bool) *v1.EnvVarSource {
		o := &optional
		if kind == KindSecret {
			return &v1.EnvVarSource{SecretKeyRef: &v1.SecretKeySelector{LocalObjectReference: v1.LocalObjectReference{Name: name}, Key: key, Optional: o}}
		}
		return &v1.EnvVarSource{ConfigMapKeyRef: &v1.ConfigMapKeySelector{LocalObjectReference: v1.LocalObjectReference{Name: name}, Key: key, Optional: o}}
	}
	tests := []struct {
		name    string
		c       v1.Container
		want    map[string]string
		absent  []string
		wantErr string
	}{
		{name: "envFrom with prefix, env wins",
			c: v1.Container{EnvFrom: []v1.EnvFromSource{{Prefix: "P_", ConfigMapRef: &v1.ConfigMapEnvSource{LocalObjectReference: v1.LocalObjectReference{Name: "cm"}}}},
				Env: []v1.EnvVar{{Name: "P_A", Value: "override"}, {Name: "X", Value: "$(P_B)-$(P_A)"}}},
			want: map[string]string{"P_A": "override", "P_B": "2", "X": "2-override"}},
		{name: "secret and configMap keys",
			c:    v1.Container{Env: []v1.EnvVar{{Name: "PW", ValueFrom: ref(KindSecret, "sec", "pw", false)}, {Name: "A", ValueFrom: ref(KindConfigMap, "cm", "A", false)}}},
			want: map[string]string{"PW": "s3cret", "A": "1"}},
		{name: "optional missing object and key are left out",
			c:      v1.Container{Env: []v1.EnvVar{{Name: "M", ValueFrom: ref(KindSecret, "nope", "k", true)}, {Name: "K", ValueFrom: ref(KindConfigMap, "cm", "nope", true)}}},
			absent: []string{"M", "K"}},
		{name: "envFrom names that are not identifiers (relaxed validation), '=' is not",
			c: v1.Container{EnvFrom: []v1.EnvFromSource{
				{Prefix: "1-", ConfigMapRef: &v1.ConfigMapEnvSource{LocalObjectReference: v1.LocalObjectReference{Name: "cm"}}},
				{Prefix: "#@!", ConfigMapRef: &v1.ConfigMapEnvSource{LocalObjectReference: v1.LocalObjectReference{Name: "cm"}}},
				{Prefix: "a=", ConfigMapRef: &v1.ConfigMapEnvSource{LocalObjectReference: v1.LocalObjectReference{Name: "cm"}}}}},
			want:   map[string]string{"1-A": "1", "#@!B": "2"},
			absent: []string{"a=A"}},
		{name: "optional envFrom missing", c: v1.Container{EnvFrom: []v1.EnvFromSource{{SecretRef: &v1.SecretEnvSource{LocalObjectReference: v1.LocalObjectReference{Name: "nope"}, Optional: &opt}}}}},
		{name: "required missing key", c: v1.Container{Env: []v1.EnvVar{{Name: "K", ValueFrom: ref(KindConfigMap, "cm", "nope", false)}}},
			wantErr: "couldn't find key nope"},
		{name: "required missing secret", c: v1.Container{Env: []v1.EnvVar{{Name: "K", ValueFrom: ref(KindSecret, "nope", "k", false)}}},
			wantErr: "not found"},
		{name: "resourceFieldRef with divisor and node default",
			c: v1.Container{Name: "c", Resources: v1.ResourceRequirements{Limits: v1.ResourceList{v1.ResourceMemory: resource.MustParse("64Mi")},
				Requests: v1.ResourceList{v1.ResourceCPU: resource.MustParse("250m")}},
				Env: []v1.EnvVar{
					{Name: "MEM", ValueFrom: &v1.EnvVarSource{ResourceFieldRef: &v1.ResourceFieldSelector{Resource: "limits.memory", Divisor: resource.MustParse("1Mi")}}},
					{Name: "CPU_M", ValueFrom: &v1.EnvVarSource{ResourceFieldRef: &v1.ResourceFieldSelector{Resource: "requests.cpu", Divisor: resource.MustParse("1m")}}},
					{Name: "CPU_LIMIT", ValueFrom: &v1.EnvVarSource{ResourceFieldRef: &v1.ResourceFieldSelector{Resource: "limits.cpu"}}}}},
			want: map[string]string{"MEM": "64", "CPU_M": "250", "CPU_LIMIT": "4"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env, _, err := makeEnv(context.Background(), pod, &tt.c, EnvInput{Fetch: fetch, NodeCPU: 4, NodeMemory: 1 << 30})
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !errors.Is(err, errConfig) {
					t.Fatalf("err %v, want %q (a config error)", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]string{}
			for _, kv := range env {
				got[kv[0]] = kv[1]
			}
			for k, v := range tt.want {
				if got[k] != v {
					t.Errorf("%s = %q, want %q (env %v)", k, got[k], v, env)
				}
			}
			for _, k := range tt.absent {
				if _, ok := got[k]; ok {
					t.Errorf("%s should be absent", k)
				}
			}
		})
	}
}

func TestServiceEnv(t *testing.T) {
	svcs := []*v1.Service{
		{ObjectMeta: metav1.ObjectMeta{Name: "kubernetes"}, Spec: v1.ServiceSpec{ClusterIP: "10.96.0.1",
			Ports: []v1.ServicePort{{Name: "https", Port: 443, Protocol: v1.ProtocolTCP}}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "headless"}, Spec: v1.ServiceSpec{ClusterIP: v1.ClusterIPNone, Ports: []v1.ServicePort{{Port: 80}}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "dns-svc"}, Spec: v1.ServiceSpec{ClusterIP: "10.96.0.10",
			Ports: []v1.ServicePort{{Name: "dns", Port: 53, Protocol: v1.ProtocolUDP}, {Name: "dns-tcp", Port: 53, Protocol: v1.ProtocolTCP}}}},
	}
	got := map[string]string{}
	for _, kv := range serviceEnv(svcs) {
		got[kv[0]] = kv[1]
	}
	want := map[string]string{
		"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443", "KUBERNETES_SERVICE_PORT_HTTPS": "443",
		"KUBERNETES_PORT": "tcp://10.96.0.1:443", "KUBERNETES_PORT_443_TCP": "tcp://10.96.0.1:443",
		"KUBERNETES_PORT_443_TCP_PROTO": "tcp", "KUBERNETES_PORT_443_TCP_PORT": "443", "KUBERNETES_PORT_443_TCP_ADDR": "10.96.0.1",
		"DNS_SVC_SERVICE_HOST": "10.96.0.10", "DNS_SVC_SERVICE_PORT": "53", "DNS_SVC_SERVICE_PORT_DNS_TCP": "53",
		"DNS_SVC_PORT": "udp://10.96.0.10:53", "DNS_SVC_PORT_53_UDP_PROTO": "udp",
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
	for k := range got {
		if strings.HasPrefix(k, "HEADLESS_") {
			t.Errorf("headless service got %s", k)
		}
	}
}

func TestSecurityAndResources(t *testing.T) {
	uid, gid, fsg, cuid := int64(1000), int64(3000), int64(2000), int64(0)
	ro, priv := true, false
	pod := &v1.Pod{Spec: v1.PodSpec{SecurityContext: &v1.PodSecurityContext{RunAsUser: &uid, RunAsGroup: &gid, FSGroup: &fsg,
		SupplementalGroups: []int64{5}, Sysctls: []v1.Sysctl{{Name: "net.core.somaxconn", Value: "1024"}}}}}
	c := &v1.Container{SecurityContext: &v1.SecurityContext{RunAsUser: &cuid, ReadOnlyRootFilesystem: &ro, AllowPrivilegeEscalation: &priv,
		Capabilities: &v1.Capabilities{Add: []v1.Capability{"NET_ADMIN"}, Drop: []v1.Capability{"ALL"}}},
		Resources: v1.ResourceRequirements{Limits: v1.ResourceList{v1.ResourceCPU: resource.MustParse("500m"), v1.ResourceMemory: resource.MustParse("64Mi")}}}
	sc := securityContext(pod, c)
	if sc.RunAsUser.GetValue() != 0 || sc.RunAsGroup.GetValue() != 3000 || !sc.ReadonlyRootfs || !sc.NoNewPrivs ||
		fmt.Sprint(sc.SupplementalGroups) != "[2000 5]" || sc.Capabilities.AddCapabilities[0] != "NET_ADMIN" || len(sc.MaskedPaths) == 0 {
		t.Fatalf("security context %+v", sc)
	}
	r := linuxResources(c)
	if r.CpuShares != 512 || r.CpuQuota != 50000 || r.CpuPeriod != 100000 || r.MemoryLimitInBytes != 64<<20 {
		t.Fatalf("resources %+v", r)
	}
	if r := linuxResources(&v1.Container{}); r.CpuShares != 2 || r.CpuQuota != 0 || r.MemoryLimitInBytes != 0 {
		t.Fatalf("best-effort resources %+v", r)
	}
	nonRoot := true
	podNR := func(uid *int64) *v1.Pod {
		return &v1.Pod{Spec: v1.PodSpec{SecurityContext: &v1.PodSecurityContext{RunAsNonRoot: &nonRoot, RunAsUser: uid}}}
	}
	image := func(uid *int64, name string) func() (*int64, string, error) {
		return func() (*int64, string, error) { return uid, name, nil }
	}
	zero, thousand := int64(0), int64(1000)
	nrTests := []struct {
		name  string
		pod   *v1.Pod
		image func() (*int64, string, error)
		ok    bool
	}{
		{"runAsUser non-zero", podNR(&uid), nil, true},
		{"runAsUser zero", podNR(&zero), nil, false},
		{"image user numeric non-root", podNR(nil), image(&thousand, ""), true},
		{"image user root", podNR(nil), image(&zero, ""), false},
		{"image user by name", podNR(nil), image(nil, "nobody"), false},
		{"image without user", podNR(nil), image(nil, ""), false},
		{"no runAsNonRoot", &v1.Pod{}, nil, true},
	}
	for _, tt := range nrTests {
		err := runAsNonRootCheck(tt.pod, &v1.Container{}, tt.image)
		if (err == nil) != tt.ok || (err != nil && !errors.Is(err, errConfig)) {
			t.Errorf("%s: err %v", tt.name, err)
		}
	}
	mem := resource.MustParse("256Mi")
	burst := &v1.Container{Resources: v1.ResourceRequirements{Requests: v1.ResourceList{v1.ResourceMemory: mem}}}
	if got := oomScoreAdj(nil, burst, v1.PodQOSBurstable, 1<<30); got != 750 {
		t.Errorf("burstable OOM score %d", got)
	}
	if oomScoreAdj(nil, burst, v1.PodQOSGuaranteed, 1<<30) != -997 || oomScoreAdj(nil, burst, v1.PodQOSBestEffort, 1<<30) != 1000 {
		t.Error("OOM scores of guaranteed/best-effort")
	}
}
