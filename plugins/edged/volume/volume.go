// Package volume prepares pod volumes on the host before a pod's containers
// are created: emptyDir, hostPath, configMap, secret, downwardAPI and projected. Each
// volume that needs a directory gets <root>/<uid>/volumes/<plugin>/<name>;
// Setup returns the host path per volume name, for the CRI mounts.
//
// configMap, secret and downwardAPI contents are written as the kubelet's
// atomic writer does: the files live in a timestamped directory, "..data"
// is a symlink to it and every visible entry is a symlink through "..data".
// An update writes a new directory and renames a new "..data" over the old
// one, so a container that has the volume mounted sees the old or the new
// content, never a mix.
package volume

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"

	"github.com/edgehive/edgehive/plugins/edged/internal/answer"
)

// Plugin directory names, as the kubelet's.
const (
	PluginEmptyDir    = "kubernetes.io~empty-dir"
	PluginConfigMap   = "kubernetes.io~configmap"
	PluginSecret      = "kubernetes.io~secret"
	PluginDownwardAPI = "kubernetes.io~downward-api"
)

// Kinds passed to a Fetcher.
const (
	KindConfigMap = "configmap"
	KindSecret    = "secret"
)

// RefreshInterval is the least time between two fetches of one volume.
const RefreshInterval = 10 * time.Second

// defaultMode of configMap, secret and downwardAPI files (the API's default).
const defaultMode = 0o644

// ErrNotFound is wrapped by a Fetcher when the object does not exist; it is
// the sentinel of metamanager's and the cloud's not-found answers.
var ErrNotFound = answer.ErrNotFound

// Fetcher returns the data of a configMap or secret (kind KindConfigMap or
// KindSecret). A missing object is an error wrapping ErrNotFound.
type Fetcher func(ctx context.Context, kind, namespace, name string) (map[string][]byte, error)

// Manager prepares and removes pod volumes.
type Manager struct {
	root  string
	fetch Fetcher
	clock clock.Clock
	log   hclog.Logger
	// Refresh is the least time between two fetches of one volume
	// (RefreshInterval by default).
	Refresh time.Duration

	// Tokens, when set, provides service account tokens for projected volumes.
	Tokens TokenFetcher
	// NodeCPU (cores) and NodeMemory (bytes) are the defaults of limits in resourceFieldRef items.
	NodeCPU, NodeMemory int64

	mu      sync.Mutex
	fetched map[string]time.Time // volume dir → last fetch
	written map[string]string    // volume dir → hash of the written payload
	tokens  map[tokenKey]Token
	owned   map[string]string // volume dir → the written hash its fsGroup ownership was set for
}

// New returns a manager keeping volumes under root (<data_dir>/pods).
func New(root string, fetch Fetcher, clk clock.Clock, log hclog.Logger) *Manager {
	if log == nil {
		log = hclog.NewNullLogger()
	}
	if clk == nil {
		clk = clock.RealClock{}
	}
	return &Manager{root: root, fetch: fetch, clock: clk, log: log, Refresh: RefreshInterval,
		fetched: map[string]time.Time{}, written: map[string]string{}, tokens: map[tokenKey]Token{}, owned: map[string]string{}}
}

// PodDir is the directory of a pod's volumes.
func (m *Manager) PodDir(uid types.UID) string {
	return filepath.Join(m.root, string(uid), "volumes")
}

// Dir is the directory of one volume.
func (m *Manager) Dir(uid types.UID, plugin, name string) string {
	return filepath.Join(m.PodDir(uid), plugin, name)
}

// Setup prepares every volume of pod and returns their host paths by volume
// name. configMap and secret volumes are fetched again when their last fetch
// is RefreshInterval old, and rewritten when the content changed. Volumes
// that fail are left out of the map; the errors are joined.
func (m *Manager) Setup(ctx context.Context, pod *v1.Pod) (map[string]string, error) {
	out := map[string]string{}
	var errs []error
	for i := range pod.Spec.Volumes {
		vol := &pod.Spec.Volumes[i]
		p, err := m.setupOne(ctx, pod, vol)
		if err != nil {
			errs = append(errs, fmt.Errorf("volume %q: %w", vol.Name, err))
			continue
		}
		if sc := pod.Spec.SecurityContext; sc != nil && sc.FSGroup != nil && vol.HostPath == nil {
			if err := m.ownership(p, *sc.FSGroup, vol.EmptyDir == nil); err != nil {
				errs = append(errs, fmt.Errorf("volume %q: fsGroup: %w", vol.Name, err))
				continue
			}
		}
		out[vol.Name] = p
	}
	return out, errors.Join(errs...)
}

func (m *Manager) setupOne(ctx context.Context, pod *v1.Pod, vol *v1.Volume) (string, error) {
	switch {
	case vol.EmptyDir != nil:
		return m.emptyDir(pod, vol)
	case vol.HostPath != nil:
		return hostPath(vol.HostPath)
	case vol.ConfigMap != nil:
		return m.configMap(ctx, pod, vol)
	case vol.Secret != nil:
		return m.secret(ctx, pod, vol)
	case vol.DownwardAPI != nil:
		return m.downwardAPI(pod, vol)
	case vol.Projected != nil:
		return m.projected(ctx, pod, vol)
	}
	return "", errors.New("unsupported volume type")
}

func (m *Manager) emptyDir(pod *v1.Pod, vol *v1.Volume) (string, error) {
	dir := m.Dir(pod.UID, PluginEmptyDir, vol.Name)
	if _, err := os.Stat(dir); err == nil {
		return dir, nil
	}
	if err := os.MkdirAll(dir, 0o777); err != nil {
		return "", err
	}
	_ = os.Chmod(dir, 0o777) // world-writable, as the kubelet's (umask aside)
	if vol.EmptyDir.Medium == v1.StorageMediumMemory {
		opts := ""
		if l := vol.EmptyDir.SizeLimit; l != nil && l.Value() > 0 {
			opts = "size=" + strconv.FormatInt(l.Value(), 10)
		}
		// A tmpfs needs CAP_SYS_ADMIN; without it the volume is a plain
		// directory on the data disk.
		if err := unix.Mount("tmpfs", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, opts); err != nil {
			m.log.Info("emptyDir medium Memory: tmpfs mount failed, using a plain directory",
				"pod", pod.Namespace+"/"+pod.Name, "volume", vol.Name, "error", err)
		}
	}
	return dir, nil
}

func hostPath(hp *v1.HostPathVolumeSource) (string, error) {
	p := hp.Path
	if !filepath.IsAbs(p) {
		return "", fmt.Errorf("hostPath %q is not absolute", p)
	}
	t := v1.HostPathUnset
	if hp.Type != nil {
		t = *hp.Type
	}
	fi, err := os.Stat(p)
	switch t {
	case v1.HostPathUnset:
		return p, nil
	case v1.HostPathDirectoryOrCreate:
		if err != nil {
			if !os.IsNotExist(err) {
				return "", err
			}
			if err := os.MkdirAll(p, 0o755); err != nil {
				return "", err
			}
			return p, nil
		}
		if !fi.IsDir() {
			return "", fmt.Errorf("hostPath %q exists and is not a directory", p)
		}
	case v1.HostPathFileOrCreate:
		if err != nil {
			if !os.IsNotExist(err) {
				return "", err
			}
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				return "", err
			}
			f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY, 0o644)
			if err != nil {
				return "", err
			}
			return p, f.Close()
		}
		if fi.IsDir() {
			return "", fmt.Errorf("hostPath %q exists and is a directory", p)
		}
	case v1.HostPathDirectory:
		if err != nil || !fi.IsDir() {
			return "", fmt.Errorf("hostPath %q is not a directory", p)
		}
	case v1.HostPathFile:
		if err != nil || !fi.Mode().IsRegular() {
			return "", fmt.Errorf("hostPath %q is not a file", p)
		}
	case v1.HostPathSocket:
		if err != nil || fi.Mode()&os.ModeSocket == 0 {
			return "", fmt.Errorf("hostPath %q is not a socket", p)
		}
	case v1.HostPathCharDev:
		if err != nil || fi.Mode()&os.ModeCharDevice == 0 {
			return "", fmt.Errorf("hostPath %q is not a character device", p)
		}
	case v1.HostPathBlockDev:
		if err != nil || fi.Mode()&os.ModeDevice == 0 || fi.Mode()&os.ModeCharDevice != 0 {
			return "", fmt.Errorf("hostPath %q is not a block device", p)
		}
	default:
		return "", fmt.Errorf("hostPath type %q unknown", t)
	}
	return p, nil
}

// file is one entry of an atomically written volume.
type file struct {
	data []byte
	mode os.FileMode
}

// due tells whether dir may be fetched now, and marks it fetched.
func (m *Manager) due(dir string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.clock.Now()
	if t, ok := m.fetched[dir]; ok && now.Sub(t) < m.Refresh {
		if _, err := os.Lstat(filepath.Join(dir, dataDirName)); err == nil {
			return false
		}
	}
	m.fetched[dir] = now
	return true
}

func (m *Manager) configMap(ctx context.Context, pod *v1.Pod, vol *v1.Volume) (string, error) {
	src := vol.ConfigMap
	return m.projectFetched(ctx, pod, vol.Name, PluginConfigMap, KindConfigMap, src.Name, src.Items, src.DefaultMode, src.Optional)
}

func (m *Manager) secret(ctx context.Context, pod *v1.Pod, vol *v1.Volume) (string, error) {
	src := vol.Secret
	return m.projectFetched(ctx, pod, vol.Name, PluginSecret, KindSecret, src.SecretName, src.Items, src.DefaultMode, src.Optional)
}

func (m *Manager) projectFetched(ctx context.Context, pod *v1.Pod, volName, plugin, kind, objName string,
	items []v1.KeyToPath, mode *int32, optional *bool) (string, error) {
	dir := m.Dir(pod.UID, plugin, volName)
	if !m.due(dir) {
		return dir, nil
	}
	data, err := m.fetch(ctx, kind, pod.Namespace, objName)
	if err != nil {
		if errors.Is(err, ErrNotFound) && optional != nil && *optional {
			data = nil
		} else {
			m.forget(dir) // try again on the next sync
			if _, serr := os.Lstat(filepath.Join(dir, dataDirName)); serr == nil && !errors.Is(err, ErrNotFound) {
				// Keep serving the last content while the source is unreachable.
				m.log.Warn("volume refresh failed, keeping the last content", "pod", pod.Namespace+"/"+pod.Name,
					"volume", volName, "error", err)
				return dir, nil
			}
			return "", fmt.Errorf("%s %s/%s: %w", kind, pod.Namespace, objName, err)
		}
	}
	payload, err := makePayload(data, items, mode, optional != nil && *optional)
	if err != nil {
		m.forget(dir)
		return "", fmt.Errorf("%s %s/%s: %w", kind, pod.Namespace, objName, err)
	}
	if err := m.write(dir, payload); err != nil {
		m.forget(dir)
		return "", err
	}
	return dir, nil
}

func (m *Manager) forget(dir string) {
	m.mu.Lock()
	delete(m.fetched, dir)
	m.mu.Unlock()
}

// makePayload maps keys to files: every key, or the listed items.
func makePayload(data map[string][]byte, items []v1.KeyToPath, mode *int32, optional bool) (map[string]file, error) {
	def := os.FileMode(defaultMode)
	if mode != nil {
		def = os.FileMode(*mode) & 0o777
	}
	out := map[string]file{}
	if len(items) == 0 {
		for k, v := range data {
			out[k] = file{v, def}
		}
		return out, nil
	}
	for _, it := range items {
		v, ok := data[it.Key]
		if !ok {
			if optional {
				continue
			}
			return nil, fmt.Errorf("key %q not found", it.Key)
		}
		fm := def
		if it.Mode != nil {
			fm = os.FileMode(*it.Mode) & 0o777
		}
		out[it.Path] = file{v, fm}
	}
	return out, nil
}

func (m *Manager) downwardAPI(pod *v1.Pod, vol *v1.Volume) (string, error) {
	src := vol.DownwardAPI
	dir := m.Dir(pod.UID, PluginDownwardAPI, vol.Name)
	def := os.FileMode(defaultMode)
	if src.DefaultMode != nil {
		def = os.FileMode(*src.DefaultMode) & 0o777
	}
	payload := map[string]file{}
	for _, it := range src.Items {
		v, err := m.downwardItem(pod, it)
		if err != nil {
			return "", fmt.Errorf("item %q: %w", it.Path, err)
		}
		fm := def
		if it.Mode != nil {
			fm = os.FileMode(*it.Mode) & 0o777
		}
		payload[it.Path] = file{[]byte(v), fm}
	}
	return dir, m.write(dir, payload)
}

// fieldValue of a downwardAPI fieldRef.
func fieldValue(pod *v1.Pod, path string) (string, error) {
	switch path {
	case "metadata.name":
		return pod.Name, nil
	case "metadata.namespace":
		return pod.Namespace, nil
	case "metadata.uid":
		return string(pod.UID), nil
	case "metadata.labels":
		return formatMap(pod.Labels), nil
	case "metadata.annotations":
		return formatMap(pod.Annotations), nil
	case "spec.nodeName":
		return pod.Spec.NodeName, nil
	case "spec.serviceAccountName":
		return pod.Spec.ServiceAccountName, nil
	}
	for prefix, mp := range map[string]map[string]string{"metadata.labels": pod.Labels, "metadata.annotations": pod.Annotations} {
		if strings.HasPrefix(path, prefix+"['") && strings.HasSuffix(path, "']") {
			return mp[path[len(prefix)+2:len(path)-2]], nil
		}
	}
	return "", fmt.Errorf("fieldPath %q not supported", path)
}

// formatMap as the kubelet writes labels and annotations: key="value" lines, sorted.
func formatMap(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteByte('\n')
		}
		fmt.Fprintf(&b, "%s=%q", k, m[k])
	}
	return b.String()
}

const (
	dataDirName    = "..data"
	newDataDirName = "..data_tmp"
)

func hashPayload(p map[string]file) string {
	keys := make([]string, 0, len(p))
	for k := range p {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	h := sha256.New()
	for _, k := range keys {
		fmt.Fprintf(h, "%s\x00%o\x00%d\x00", k, p[k].mode, len(p[k].data))
		h.Write(p[k].data)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// validPath rejects payload paths that would leave the volume.
func validPath(p string) error {
	if p == "" || filepath.IsAbs(p) || strings.HasPrefix(p, "..") {
		return fmt.Errorf("invalid path %q", p)
	}
	for _, part := range strings.Split(p, "/") {
		if part == ".." || part == "" {
			return fmt.Errorf("invalid path %q", p)
		}
	}
	return nil
}

// write swaps the payload into dir atomically, when it changed.
func (m *Manager) write(dir string, payload map[string]file) error {
	sum := hashPayload(payload)
	m.mu.Lock()
	same := m.written[dir] == sum
	m.mu.Unlock()
	if same {
		if _, err := os.Lstat(filepath.Join(dir, dataDirName)); err == nil {
			return nil
		}
	}
	for p := range payload {
		if err := validPath(p); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	oldTarget, _ := os.Readlink(filepath.Join(dir, dataDirName))
	tsDir, err := os.MkdirTemp(dir, ".."+m.clock.Now().UTC().Format("2006_01_02_15_04_05."))
	if err != nil {
		return err
	}
	for p, f := range payload {
		full := filepath.Join(tsDir, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(full, f.data, f.mode); err != nil {
			return err
		}
		if err := os.Chmod(full, f.mode); err != nil { // umask aside
			return err
		}
	}
	if err := os.Chmod(tsDir, 0o755); err != nil {
		return err
	}
	tmpLink := filepath.Join(dir, newDataDirName)
	_ = os.Remove(tmpLink)
	if err := os.Symlink(filepath.Base(tsDir), tmpLink); err != nil {
		return err
	}
	if err := os.Rename(tmpLink, filepath.Join(dir, dataDirName)); err != nil {
		return err
	}
	// Visible entries: a symlink per top-level name through ..data.
	want := map[string]bool{}
	for p := range payload {
		want[strings.SplitN(p, "/", 2)[0]] = true
	}
	for name := range want {
		link := filepath.Join(dir, name)
		if t, err := os.Readlink(link); err == nil && t == filepath.Join(dataDirName, name) {
			continue
		}
		_ = os.RemoveAll(link)
		if err := os.Symlink(filepath.Join(dataDirName, name), link); err != nil {
			return err
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		n := e.Name()
		if strings.HasPrefix(n, "..") {
			if n != dataDirName && n != filepath.Base(tsDir) && (n == oldTarget || e.IsDir()) {
				_ = os.RemoveAll(filepath.Join(dir, n))
			}
			continue
		}
		if !want[n] {
			_ = os.RemoveAll(filepath.Join(dir, n))
		}
	}
	m.mu.Lock()
	m.written[dir] = sum
	m.mu.Unlock()
	return nil
}

// Cleanup removes the pod's volume directory (its containers must be gone).
// emptyDir tmpfs mounts are unmounted first; hostPaths are never touched.
func (m *Manager) Cleanup(uid types.UID) error {
	pd := m.PodDir(uid)
	if ents, err := os.ReadDir(filepath.Join(pd, PluginEmptyDir)); err == nil {
		for _, e := range ents {
			_ = unix.Unmount(filepath.Join(pd, PluginEmptyDir, e.Name()), unix.MNT_DETACH)
		}
	}
	m.mu.Lock()
	prefix := pd + string(filepath.Separator)
	for k := range m.fetched {
		if strings.HasPrefix(k, prefix) {
			delete(m.fetched, k)
		}
	}
	for k := range m.written {
		if strings.HasPrefix(k, prefix) {
			delete(m.written, k)
		}
	}
	for k := range m.owned {
		if strings.HasPrefix(k, prefix) {
			delete(m.owned, k)
		}
	}
	for k := range m.tokens {
		if k.uid == string(uid) {
			delete(m.tokens, k)
		}
	}
	m.mu.Unlock()
	if err := os.RemoveAll(filepath.Join(m.root, string(uid))); err != nil {
		return err
	}
	return nil
}

// ownership gives a volume to the pod's fsGroup as the kubelet does: every
// entry's group becomes gid, files get group read (and write unless the
// volume is read-only), directories also group exec and setgid so new files
// inherit the group. Done once per written content.
func (m *Manager) ownership(dir string, gid int64, readOnly bool) error {
	m.mu.Lock()
	version := m.written[dir]
	if version == "" {
		version = "created"
	}
	done := m.owned[dir] == version
	m.mu.Unlock()
	if done {
		return nil
	}
	mask := os.FileMode(0o660)
	if readOnly {
		mask = 0o440
	}
	err := filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if err := os.Lchown(p, -1, int(gid)); err != nil {
			return err
		}
		if fi.Mode()&os.ModeSymlink != 0 {
			return nil
		}
		mode := fi.Mode() | mask
		if fi.IsDir() {
			mode |= os.ModeSetgid | 0o110
		}
		return os.Chmod(p, mode&(os.ModePerm|os.ModeSetgid))
	})
	if err != nil {
		return err
	}
	m.mu.Lock()
	m.owned[dir] = version
	m.mu.Unlock()
	return nil
}

// ResourceValue answers a resourceFieldRef: limits default to the node's
// allocatable (nodeCPU cores, nodeMemory bytes), as the kubelet's.
func ResourceValue(c *v1.Container, ref *v1.ResourceFieldSelector, nodeCPU int64, nodeMemory int64) (string, error) {
	divisor := resource.MustParse("1")
	if !ref.Divisor.IsZero() {
		divisor = ref.Divisor
	}
	var q resource.Quantity
	var ok bool
	switch ref.Resource {
	case "limits.cpu":
		q, ok = c.Resources.Limits[v1.ResourceCPU]
		if !ok {
			q = *resource.NewQuantity(nodeCPU, resource.DecimalSI)
		}
		return strconv.FormatInt(int64(math.Ceil(float64(q.MilliValue())/float64(divisor.MilliValue()))), 10), nil
	case "requests.cpu":
		q, ok = c.Resources.Requests[v1.ResourceCPU]
		if !ok {
			q = c.Resources.Limits[v1.ResourceCPU]
		}
		return strconv.FormatInt(int64(math.Ceil(float64(q.MilliValue())/float64(divisor.MilliValue()))), 10), nil
	case "limits.memory":
		q, ok = c.Resources.Limits[v1.ResourceMemory]
		if !ok {
			q = *resource.NewQuantity(nodeMemory, resource.BinarySI)
		}
	case "requests.memory":
		q, ok = c.Resources.Requests[v1.ResourceMemory]
		if !ok {
			q = c.Resources.Limits[v1.ResourceMemory]
		}
	case "limits.ephemeral-storage":
		q = c.Resources.Limits[v1.ResourceEphemeralStorage]
	case "requests.ephemeral-storage":
		q = c.Resources.Requests[v1.ResourceEphemeralStorage]
	default:
		return "", fmt.Errorf("resourceFieldRef %q is not supported", ref.Resource)
	}
	return strconv.FormatInt(int64(math.Ceil(float64(q.Value())/float64(divisor.Value()))), 10), nil
}

// downwardItem is the content of one downwardAPI file: a fieldRef or a
// resourceFieldRef of a container of the pod.
func (m *Manager) downwardItem(pod *v1.Pod, it v1.DownwardAPIVolumeFile) (string, error) {
	switch {
	case it.FieldRef != nil:
		return fieldValue(pod, it.FieldRef.FieldPath)
	case it.ResourceFieldRef != nil:
		name := it.ResourceFieldRef.ContainerName
		for _, cs := range [][]v1.Container{pod.Spec.Containers, pod.Spec.InitContainers} {
			for i := range cs {
				if cs[i].Name == name {
					return ResourceValue(&cs[i], it.ResourceFieldRef, m.NodeCPU, m.NodeMemory)
				}
			}
		}
		return "", fmt.Errorf("resourceFieldRef: container %q not in the pod", name)
	}
	return "", errors.New("neither fieldRef nor resourceFieldRef")
}
