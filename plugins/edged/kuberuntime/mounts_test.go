package kuberuntime

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/edgehive/edgehive/plugins/edged/cri"
)

func TestSyncPodMounts(t *testing.T) {
	rt := cri.NewFakeRuntime(busybox, pause)
	clk := clocktesting.NewFakeClock(time.Unix(10000, 0))
	m := newManager(t, rt, clk)
	volDir := t.TempDir()
	calls := 0
	m.Volumes = func(_ context.Context, pod *v1.Pod) (map[string]string, error) {
		calls++
		return map[string]string{"cfg": filepath.Join(volDir, "cfg"), "data": filepath.Join(volDir, "data")}, nil
	}
	pod := testPod(v1.RestartPolicyAlways, "app")
	pod.Spec.Volumes = []v1.Volume{{Name: "cfg", VolumeSource: v1.VolumeSource{ConfigMap: &v1.ConfigMapVolumeSource{}}}}
	pod.Spec.Containers[0].VolumeMounts = []v1.VolumeMount{
		{Name: "cfg", MountPath: "/etc/app"}, // configMaps are read-only anyway
		{Name: "data", MountPath: "/var/lib/app/logs", SubPath: "logs"},
	}
	_, ps, err := syncOnce(t, m, pod)
	if err != nil {
		t.Fatal(err)
	}
	cfg := rt.ContainerConfig(ps.FindContainer("app").Id)
	want := []*runtimeapi.Mount{
		{ContainerPath: "/etc/app", HostPath: filepath.Join(volDir, "cfg"), Readonly: true},
		{ContainerPath: "/var/lib/app/logs", HostPath: filepath.Join(volDir, "data", "logs")},
	}
	// The last mount is the kubelet-managed /etc/hosts.
	if len(cfg.Mounts) != len(want)+1 || cfg.Mounts[len(want)].ContainerPath != "/etc/hosts" {
		t.Fatalf("mounts %v", cfg.Mounts)
	}
	for i, w := range want {
		g := cfg.Mounts[i]
		if g.ContainerPath != w.ContainerPath || g.HostPath != w.HostPath || g.Readonly != w.Readonly ||
			g.Propagation != runtimeapi.MountPropagation_PROPAGATION_PRIVATE {
			t.Errorf("mount %d = %v, want %v", i, g, w)
		}
	}
	if fi, err := os.Stat(filepath.Join(volDir, "data", "logs")); err != nil || !fi.IsDir() {
		t.Fatal("subPath not created")
	}
	// Volumes are refreshed on every sync, even with nothing to start.
	if _, _, err := syncOnce(t, m, pod); err != nil || calls != 2 {
		t.Fatalf("calls %d err %v", calls, err)
	}
}

func TestSyncPodMountErrors(t *testing.T) {
	tests := []struct {
		name  string
		vols  map[string]string
		err   error
		mount v1.VolumeMount
		want  string
	}{
		{name: "missing volume", vols: map[string]string{}, mount: v1.VolumeMount{Name: "nope", MountPath: "/x"},
			want: `volume "nope" of mount "/x" not found`},
		{name: "failed volume", vols: map[string]string{}, err: errors.New(`volume "cfg": configmap default/c: not found`),
			mount: v1.VolumeMount{Name: "cfg", MountPath: "/x"}, want: "configmap default/c: not found"},
		{name: "escaping subPath", vols: map[string]string{"v": "/tmp/v"}, mount: v1.VolumeMount{Name: "v", MountPath: "/x", SubPath: "../etc"},
			want: "stay inside the volume"},
		{name: "absolute subPath", vols: map[string]string{"v": "/tmp/v"}, mount: v1.VolumeMount{Name: "v", MountPath: "/x", SubPath: "/etc"},
			want: "must be relative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rt := cri.NewFakeRuntime(busybox, pause)
			m := newManager(t, rt, clocktesting.NewFakeClock(time.Unix(10000, 0)))
			m.Volumes = func(context.Context, *v1.Pod) (map[string]string, error) { return tt.vols, tt.err }
			pod := testPod(v1.RestartPolicyAlways, "app")
			pod.Spec.Containers[0].VolumeMounts = []v1.VolumeMount{tt.mount}
			_, ps, err := syncOnce(t, m, pod)
			if err == nil || !strings.Contains(err.Error(), ReasonCreateConfig) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v", err)
			}
			if ps.FindContainer("app") != nil {
				t.Fatal("container created")
			}
			r := m.Reasons(pod.UID)["app"]
			if r.Reason != ReasonCreateConfig || !strings.Contains(r.Message, tt.want) {
				t.Fatalf("reason %+v", r)
			}
		})
	}
}

func TestSubPathExpr(t *testing.T) {
	vols := map[string]string{"data": t.TempDir()}
	env := map[string]string{"POD_NAME": "web-1", "EMPTY": "", "UP": ".."}
	tests := []struct {
		name, expr, subPath string
		want                string // host path under the volume; "" for an error
	}{
		{"expanded", "$(POD_NAME)/logs", "", "web-1/logs"},
		{"escaped dollar", "$$(POD_NAME)", "", "$(POD_NAME)"},
		{"unset variable", "$(NOPE)", "", ""},
		{"empty variable", "$(EMPTY)/x", "", ""},
		{"backstep", "$(UP)/x", "", ""},
		{"with subPath", "$(POD_NAME)", "a", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pod := testPod(v1.RestartPolicyAlways, "app")
			c := &pod.Spec.Containers[0]
			c.VolumeMounts = []v1.VolumeMount{{Name: "data", MountPath: "/data", SubPathExpr: tt.expr, SubPath: tt.subPath}}
			mounts, err := makeMounts(pod, c, vols, nil, env)
			if tt.want == "" {
				if err == nil {
					t.Fatalf("mounts %v, want an error", mounts)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := mounts[0].HostPath; got != filepath.Join(vols["data"], tt.want) {
				t.Fatalf("host path %s, want %s", got, filepath.Join(vols["data"], tt.want))
			}
		})
	}
}
