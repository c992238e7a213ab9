package volume

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	clocktesting "k8s.io/utils/clock/testing"
)

// kubeAPIAccess is the projected volume the API server adds to every pod.
func kubeAPIAccess() v1.Volume {
	return v1.Volume{Name: "kube-api-access", VolumeSource: v1.VolumeSource{Projected: &v1.ProjectedVolumeSource{
		DefaultMode: ptr(int32(0o644)),
		Sources: []v1.VolumeProjection{
			{ServiceAccountToken: &v1.ServiceAccountTokenProjection{Path: "token", ExpirationSeconds: ptr(int64(3607))}},
			{ConfigMap: &v1.ConfigMapProjection{LocalObjectReference: v1.LocalObjectReference{Name: "kube-root-ca.crt"},
				Items: []v1.KeyToPath{{Key: "ca.crt", Path: "ca.crt"}}}},
			{DownwardAPI: &v1.DownwardAPIProjection{Items: []v1.DownwardAPIVolumeFile{
				{Path: "namespace", FieldRef: &v1.ObjectFieldSelector{FieldPath: "metadata.namespace"}}}}},
			{Secret: &v1.SecretProjection{LocalObjectReference: v1.LocalObjectReference{Name: "missing"}, Optional: ptr(true)}},
		},
	}}}
}

func TestProjectedVolume(t *testing.T) {
	st := &store{objs: map[string]map[string][]byte{"configmap/ns/kube-root-ca.crt": {"ca.crt": []byte("CA PEM")}}}
	clk := clocktesting.NewFakeClock(time.Unix(1_700_000_000, 0))
	m := New(t.TempDir(), st.fetch, clk, nil)
	m.Refresh = 0
	calls := 0
	m.Tokens = func(_ context.Context, pod *v1.Pod, sa, aud string, exp int64) (Token, error) {
		calls++
		if sa != "default" || exp != 3607 || pod.Name != "p" {
			t.Errorf("token request sa=%q exp=%d pod=%s", sa, exp, pod.Name)
		}
		return Token{Value: "tok-" + string(rune('0'+calls))}, nil
	}
	pod := testPod(kubeAPIAccess())
	paths, err := m.Setup(context.Background(), pod)
	if err != nil {
		t.Fatal(err)
	}
	dir := paths["kube-api-access"]
	if !strings.HasSuffix(dir, filepath.Join(PluginProjected, "kube-api-access")) {
		t.Fatalf("dir %s", dir)
	}
	for f, want := range map[string]string{"token": "tok-1", "ca.crt": "CA PEM", "namespace": "ns"} {
		if got := read(t, filepath.Join(dir, f)); got != want {
			t.Errorf("%s = %q, want %q", f, got, want)
		}
	}
	// The token is reused until 80% of its life has passed, then renewed.
	clk.Step(time.Hour - 13*time.Minute)
	if _, err := m.Setup(context.Background(), pod); err != nil || calls != 1 {
		t.Fatalf("calls %d err %v", calls, err)
	}
	clk.Step(2 * time.Minute)
	if _, err := m.Setup(context.Background(), pod); err != nil || calls != 2 {
		t.Fatalf("calls %d err %v", calls, err)
	}
	if got := read(t, filepath.Join(dir, "token")); got != "tok-2" {
		t.Fatalf("token after renewal %q", got)
	}
	// No token source: the volume fails with a reason.
	m2 := New(t.TempDir(), st.fetch, clk, nil)
	if _, err := m2.Setup(context.Background(), testPod(kubeAPIAccess())); err == nil || !strings.Contains(err.Error(), "service account tokens") {
		t.Fatalf("err %v", err)
	}
	// A missing required configMap fails with ErrNotFound.
	bad := kubeAPIAccess()
	bad.Projected.Sources[1].ConfigMap.Name = "nope"
	if _, err := m.Setup(context.Background(), testPod(bad)); !errors.Is(err, ErrNotFound) {
		t.Fatalf("err %v", err)
	}
}

func TestFSGroupOwnership(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("this test changes file groups and must run as root (as edged does)")
	}
	st := &store{objs: map[string]map[string][]byte{"configmap/ns/cm": {"k": []byte("v")}}}
	m := New(t.TempDir(), st.fetch, clocktesting.NewFakeClock(time.Unix(1_700_000_000, 0)), nil)
	pod := testPod(
		v1.Volume{Name: "scratch", VolumeSource: v1.VolumeSource{EmptyDir: &v1.EmptyDirVolumeSource{}}},
		v1.Volume{Name: "cfg", VolumeSource: v1.VolumeSource{ConfigMap: &v1.ConfigMapVolumeSource{
			LocalObjectReference: v1.LocalObjectReference{Name: "cm"}, DefaultMode: ptr(int32(0o400))}}},
	)
	pod.Spec.SecurityContext = &v1.PodSecurityContext{FSGroup: ptr(int64(4242))}
	paths, err := m.Setup(context.Background(), pod)
	if err != nil {
		t.Fatal(err)
	}
	check := func(p string, wantMode os.FileMode) {
		t.Helper()
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if gid := fi.Sys().(*syscall.Stat_t).Gid; gid != 4242 {
			t.Errorf("%s: group %d", p, gid)
		}
		if got := fi.Mode() & (os.ModePerm | os.ModeSetgid); got != wantMode {
			t.Errorf("%s: mode %v, want %v", p, got, wantMode)
		}
	}
	check(paths["scratch"], 0o777|os.ModeSetgid)
	check(filepath.Join(paths["cfg"], "k"), 0o440)
}

func TestDownwardAPIResources(t *testing.T) {
	m := New(t.TempDir(), (&store{objs: map[string]map[string][]byte{}}).fetch, clocktesting.NewFakeClock(time.Unix(1_700_000_000, 0)), nil)
	m.NodeCPU, m.NodeMemory = 2, 4<<30
	item := func(path, c, res, div string) v1.DownwardAPIVolumeFile {
		f := v1.DownwardAPIVolumeFile{Path: path, ResourceFieldRef: &v1.ResourceFieldSelector{ContainerName: c, Resource: res}}
		if div != "" {
			f.ResourceFieldRef.Divisor = resource.MustParse(div)
		}
		return f
	}
	pod := testPod(v1.Volume{Name: "info", VolumeSource: v1.VolumeSource{DownwardAPI: &v1.DownwardAPIVolumeSource{Items: []v1.DownwardAPIVolumeFile{
		item("cpu_limit", "app", "limits.cpu", ""), item("cpu_request_m", "app", "requests.cpu", "1m"),
		item("mem_limit", "app", "limits.memory", "1Mi"), item("node_mem", "side", "limits.memory", "1Gi"),
	}}}})
	pod.Spec.Containers = []v1.Container{
		{Name: "app", Resources: v1.ResourceRequirements{Limits: v1.ResourceList{v1.ResourceCPU: resource.MustParse("1250m"), v1.ResourceMemory: resource.MustParse("64Mi")},
			Requests: v1.ResourceList{v1.ResourceCPU: resource.MustParse("250m")}}},
		{Name: "side"},
	}
	paths, err := m.Setup(context.Background(), pod)
	if err != nil {
		t.Fatal(err)
	}
	for f, want := range map[string]string{"cpu_limit": "2", "cpu_request_m": "250", "mem_limit": "64", "node_mem": "4"} {
		if got := read(t, filepath.Join(paths["info"], f)); got != want {
			t.Errorf("%s = %q, want %q", f, got, want)
		}
	}
}
