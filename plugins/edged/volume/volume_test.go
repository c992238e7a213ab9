package volume

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clocktesting "k8s.io/utils/clock/testing"
)

type store struct {
	mu   sync.Mutex
	objs map[string]map[string][]byte
	n    int
}

func (s *store) fetch(_ context.Context, kind, ns, name string) (map[string][]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.n++
	d, ok := s.objs[kind+"/"+ns+"/"+name]
	if !ok {
		return nil, fmt.Errorf("%s %s/%s: %w", kind, ns, name, ErrNotFound)
	}
	return d, nil
}

func (s *store) set(key string, d map[string][]byte) {
	s.mu.Lock()
	s.objs[key] = d
	s.mu.Unlock()
}

func ptr[T any](v T) *T { return &v }

func testPod(vols ...v1.Volume) *v1.Pod {
	return &v1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns", UID: "uid-1",
			Labels: map[string]string{"b": "2", "a": "1"}, Annotations: map[string]string{"x": `q"y`}},
		Spec: v1.PodSpec{Volumes: vols},
	}
}

func read(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func mode(t *testing.T, p string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

func newTest(t *testing.T) (*Manager, *store, *clocktesting.FakeClock, string) {
	root := t.TempDir()
	st := &store{objs: map[string]map[string][]byte{
		"configmap/ns/cm":  {"a.conf": []byte("A"), "b.conf": []byte("B")},
		"secret/ns/sec":    {"token": []byte("s3cret")},
		"configmap/ns/cm2": {"k": []byte("v")},
	}}
	clk := clocktesting.NewFakeClock(time.Unix(1e9, 0))
	return New(root, st.fetch, clk, nil), st, clk, root
}

func TestConfigMapSecretDownward(t *testing.T) {
	tests := []struct {
		name    string
		vol     v1.VolumeSource
		files   map[string]string // relative path → content
		modes   map[string]os.FileMode
		absent  []string
		wantErr string
	}{
		{name: "configmap all keys", vol: v1.VolumeSource{ConfigMap: &v1.ConfigMapVolumeSource{
			LocalObjectReference: v1.LocalObjectReference{Name: "cm"}}},
			files: map[string]string{"a.conf": "A", "b.conf": "B"}, modes: map[string]os.FileMode{"a.conf": 0o644}},
		{name: "configmap items and modes", vol: v1.VolumeSource{ConfigMap: &v1.ConfigMapVolumeSource{
			LocalObjectReference: v1.LocalObjectReference{Name: "cm"}, DefaultMode: ptr[int32](0o600),
			Items: []v1.KeyToPath{{Key: "a.conf", Path: "sub/x.conf"}, {Key: "b.conf", Path: "y", Mode: ptr[int32](0o400)}}}},
			files:  map[string]string{"sub/x.conf": "A", "y": "B"},
			modes:  map[string]os.FileMode{"sub/x.conf": 0o600, "y": 0o400},
			absent: []string{"a.conf", "b.conf"}},
		{name: "configmap missing key", vol: v1.VolumeSource{ConfigMap: &v1.ConfigMapVolumeSource{
			LocalObjectReference: v1.LocalObjectReference{Name: "cm"}, Items: []v1.KeyToPath{{Key: "nope", Path: "n"}}}},
			wantErr: `key "nope" not found`},
		{name: "configmap missing", vol: v1.VolumeSource{ConfigMap: &v1.ConfigMapVolumeSource{
			LocalObjectReference: v1.LocalObjectReference{Name: "gone"}}}, wantErr: "not found"},
		{name: "configmap optional missing", vol: v1.VolumeSource{ConfigMap: &v1.ConfigMapVolumeSource{
			LocalObjectReference: v1.LocalObjectReference{Name: "gone"}, Optional: ptr(true)}}, files: map[string]string{}},
		{name: "secret", vol: v1.VolumeSource{Secret: &v1.SecretVolumeSource{SecretName: "sec", DefaultMode: ptr[int32](0o440)}},
			files: map[string]string{"token": "s3cret"}, modes: map[string]os.FileMode{"token": 0o440}},
		{name: "secret optional missing", vol: v1.VolumeSource{Secret: &v1.SecretVolumeSource{SecretName: "x", Optional: ptr(true)}},
			files: map[string]string{}},
		{name: "downwardAPI", vol: v1.VolumeSource{DownwardAPI: &v1.DownwardAPIVolumeSource{Items: []v1.DownwardAPIVolumeFile{
			{Path: "labels", FieldRef: &v1.ObjectFieldSelector{FieldPath: "metadata.labels"}},
			{Path: "annotations", FieldRef: &v1.ObjectFieldSelector{FieldPath: "metadata.annotations"}},
			{Path: "name", FieldRef: &v1.ObjectFieldSelector{FieldPath: "metadata.name"}},
			{Path: "namespace", FieldRef: &v1.ObjectFieldSelector{FieldPath: "metadata.namespace"}},
			{Path: "uid", FieldRef: &v1.ObjectFieldSelector{FieldPath: "metadata.uid"}},
			{Path: "a", FieldRef: &v1.ObjectFieldSelector{FieldPath: "metadata.labels['a']"}},
		}}}, files: map[string]string{"labels": "a=\"1\"\nb=\"2\"", "annotations": `x="q\"y"`, "name": "p",
			"namespace": "ns", "uid": "uid-1", "a": "1"}},
		{name: "downwardAPI bad field", vol: v1.VolumeSource{DownwardAPI: &v1.DownwardAPIVolumeSource{Items: []v1.DownwardAPIVolumeFile{
			{Path: "x", FieldRef: &v1.ObjectFieldSelector{FieldPath: "status.phase"}}}}}, wantErr: "not supported"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, _, _, root := newTest(t)
			paths, err := m.Setup(context.Background(), testPod(v1.Volume{Name: "v", VolumeSource: tt.vol}))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				if _, ok := paths["v"]; ok {
					t.Fatal("a failed volume has a path")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			dir := paths["v"]
			if !strings.HasPrefix(dir, filepath.Join(root, "uid-1", "volumes")+"/") || !strings.HasSuffix(dir, "/v") {
				t.Fatalf("dir = %s", dir)
			}
			for p, want := range tt.files {
				if got := read(t, filepath.Join(dir, p)); got != want {
					t.Errorf("%s = %q, want %q", p, got, want)
				}
			}
			for p, want := range tt.modes {
				if got := mode(t, filepath.Join(dir, p)); got != want {
					t.Errorf("%s mode = %o, want %o", p, got, want)
				}
			}
			for _, p := range tt.absent {
				if _, err := os.Stat(filepath.Join(dir, p)); err == nil {
					t.Errorf("%s exists", p)
				}
			}
		})
	}
}

func TestRefreshAtomic(t *testing.T) {
	m, st, clk, _ := newTest(t)
	pod := testPod(v1.Volume{Name: "v", VolumeSource: v1.VolumeSource{ConfigMap: &v1.ConfigMapVolumeSource{
		LocalObjectReference: v1.LocalObjectReference{Name: "cm"}}}})
	ctx := context.Background()
	paths, err := m.Setup(ctx, pod)
	if err != nil {
		t.Fatal(err)
	}
	dir := paths["v"]
	st.set("configmap/ns/cm", map[string][]byte{"a.conf": []byte("A2"), "c.conf": []byte("C")})
	// Within RefreshInterval: no fetch, old content.
	n := st.n
	if _, err := m.Setup(ctx, pod); err != nil {
		t.Fatal(err)
	}
	if st.n != n || read(t, filepath.Join(dir, "a.conf")) != "A" {
		t.Fatal("refetched before the interval")
	}
	clk.Step(RefreshInterval)
	if _, err := m.Setup(ctx, pod); err != nil {
		t.Fatal(err)
	}
	if got := read(t, filepath.Join(dir, "a.conf")); got != "A2" {
		t.Fatalf("a.conf = %q", got)
	}
	if read(t, filepath.Join(dir, "c.conf")) != "C" {
		t.Fatal("c.conf")
	}
	if _, err := os.Lstat(filepath.Join(dir, "b.conf")); !os.IsNotExist(err) {
		t.Fatal("b.conf still there")
	}
	ents, _ := os.ReadDir(dir)
	var dataDirs int
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), "..") && e.IsDir() {
			dataDirs++
		}
	}
	if dataDirs != 1 {
		t.Fatalf("%d timestamped dirs left", dataDirs)
	}
	// Unchanged content: nothing rewritten.
	target, _ := os.Readlink(filepath.Join(dir, dataDirName))
	clk.Step(RefreshInterval)
	if _, err := m.Setup(ctx, pod); err != nil {
		t.Fatal(err)
	}
	if t2, _ := os.Readlink(filepath.Join(dir, dataDirName)); t2 != target {
		t.Fatal("unchanged content was rewritten")
	}
	// The source gone away transiently: the last content stays.
	clk.Step(RefreshInterval)
	m.fetch = func(context.Context, string, string, string) (map[string][]byte, error) {
		return nil, errors.New("timeout")
	}
	if _, err := m.Setup(ctx, pod); err != nil {
		t.Fatal(err)
	}
	if read(t, filepath.Join(dir, "a.conf")) != "A2" {
		t.Fatal("content lost")
	}
}

func TestHostPathAndEmptyDir(t *testing.T) {
	tmp := t.TempDir()
	file := filepath.Join(tmp, "f")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	ht := func(t v1.HostPathType) *v1.HostPathType { return &t }
	tests := []struct {
		name    string
		path    string
		typ     *v1.HostPathType
		wantErr bool
		isDir   bool
		isFile  bool
	}{
		{name: "unset missing", path: filepath.Join(tmp, "nope")},
		{name: "DirectoryOrCreate", path: filepath.Join(tmp, "d/e"), typ: ht(v1.HostPathDirectoryOrCreate), isDir: true},
		{name: "DirectoryOrCreate on file", path: file, typ: ht(v1.HostPathDirectoryOrCreate), wantErr: true},
		{name: "FileOrCreate", path: filepath.Join(tmp, "g/h"), typ: ht(v1.HostPathFileOrCreate), isFile: true},
		{name: "FileOrCreate existing", path: file, typ: ht(v1.HostPathFileOrCreate), isFile: true},
		{name: "Directory ok", path: tmp, typ: ht(v1.HostPathDirectory), isDir: true},
		{name: "Directory missing", path: filepath.Join(tmp, "x"), typ: ht(v1.HostPathDirectory), wantErr: true},
		{name: "File ok", path: file, typ: ht(v1.HostPathFile), isFile: true},
		{name: "File is dir", path: tmp, typ: ht(v1.HostPathFile), wantErr: true},
		{name: "relative", path: "rel", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, _, _, _ := newTest(t)
			paths, err := m.Setup(context.Background(), testPod(v1.Volume{Name: "h",
				VolumeSource: v1.VolumeSource{HostPath: &v1.HostPathVolumeSource{Path: tt.path, Type: tt.typ}}}))
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v", err)
			}
			if tt.wantErr {
				return
			}
			if paths["h"] != tt.path {
				t.Fatalf("path = %q", paths["h"])
			}
			if tt.isDir || tt.isFile {
				fi, err := os.Stat(tt.path)
				if err != nil || fi.IsDir() != tt.isDir {
					t.Fatalf("stat %v %v", fi, err)
				}
			}
		})
	}

	m, _, _, root := newTest(t)
	pod := testPod(
		v1.Volume{Name: "e", VolumeSource: v1.VolumeSource{EmptyDir: &v1.EmptyDirVolumeSource{}}},
		v1.Volume{Name: "mem", VolumeSource: v1.VolumeSource{EmptyDir: &v1.EmptyDirVolumeSource{Medium: v1.StorageMediumMemory}}},
		v1.Volume{Name: "h", VolumeSource: v1.VolumeSource{HostPath: &v1.HostPathVolumeSource{Path: tmp}}},
	)
	paths, err := m.Setup(context.Background(), pod)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"e", "mem"} {
		if paths[n] != filepath.Join(root, "uid-1", "volumes", PluginEmptyDir, n) {
			t.Fatalf("%s = %s", n, paths[n])
		}
		if err := os.WriteFile(filepath.Join(paths[n], "x"), []byte("1"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// Setup again keeps the content.
	if _, err := m.Setup(context.Background(), pod); err != nil {
		t.Fatal(err)
	}
	if read(t, filepath.Join(paths["e"], "x")) != "1" {
		t.Fatal("emptyDir lost its content")
	}
	if err := m.Cleanup(pod.UID); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "uid-1")); !os.IsNotExist(err) {
		t.Fatal("pod volume dir still there")
	}
	if _, err := os.Stat(file); err != nil {
		t.Fatal("cleanup touched a hostPath")
	}
}

func TestUnsupported(t *testing.T) {
	m, _, _, _ := newTest(t)
	_, err := m.Setup(context.Background(), testPod(v1.Volume{Name: "n", VolumeSource: v1.VolumeSource{NFS: &v1.NFSVolumeSource{}}}))
	if err == nil || !strings.Contains(err.Error(), `volume "n"`) {
		t.Fatal(err)
	}
}
