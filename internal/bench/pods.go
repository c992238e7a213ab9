package bench

import (
	"fmt"
	"io"
	"os"
	"slices"
	"sync"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/edgehive/edgehive/host/router"
	"github.com/edgehive/edgehive/sdk"
	pluginv1 "github.com/edgehive/edgehive/sdk/proto/plugin/v1"
)

// PodsOptions shape the pods benchmark.
type PodsOptions struct {
	Count           int
	RuntimeEndpoint string // a CRI socket with the images below present
	Image           string
	SandboxImage    string
	HostNetwork     bool
	Timeout         time.Duration
}

// PodsResult is printed as JSON.
type PodsResult struct {
	Pods              int     `json:"pods"`
	Running           int     `json:"running"`
	Network           string  `json:"network"`
	P50Ms             float64 `json:"p50_ms"`
	P99Ms             float64 `json:"p99_ms"`
	TotalS            float64 `json:"total_s"`
	ContainerRestarts int32   `json:"container_restarts"`
}

// podWatch is the in-process "metamanager" of the benchmark: it answers
// edged's queries with an empty store and reads the status it reports.
type podWatch struct {
	mu       sync.Mutex
	sent     map[string]time.Time // pod name -> arrival
	running  map[string]time.Duration
	restarts map[string]int32
	local    *router.Local
	changed  chan struct{}
}

func (w *podWatch) onDelivery(d *pluginv1.Delivery) {
	m := sdk.MessageFromProto(d.GetMessage())
	switch {
	case m.Router.Operation == sdk.OpQuery && m.Header.Sync:
		resp, err := sdk.NewResponse(m, []any{}) // nothing stored: no pods to bring back
		if err == nil {
			_ = w.local.Send(pluginv1.Send_KIND_RESPONSE, "", 0, resp.ToProto())
		}
	case m.Router.Operation == sdk.OpPatch:
		var patch struct {
			Status v1.PodStatus `json:"status"`
		}
		if m.DecodeContent(&patch) != nil {
			return
		}
		res, err := sdk.ParseResource(m.Router.Resource)
		if err != nil {
			return
		}
		w.mu.Lock()
		var restarts int32
		for _, cs := range patch.Status.ContainerStatuses {
			restarts += cs.RestartCount
		}
		w.restarts[res.Name] = restarts
		if at, ok := w.sent[res.Name]; ok && patch.Status.Phase == v1.PodRunning {
			if _, seen := w.running[res.Name]; !seen {
				w.running[res.Name] = time.Since(at)
			}
		}
		w.mu.Unlock()
		select {
		case w.changed <- struct{}{}:
		default:
		}
	}
}

// Pods runs the host with edged on the given CRI runtime, delivers Count pods
// as metamanager would on the cloud's behalf, and measures each from arrival
// to Running reported upstream.
func Pods(opts PodsOptions, out, logOut io.Writer) error {
	if opts.Count <= 0 {
		opts.Count = 10
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 2 * time.Minute
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	block := fmt.Sprintf(`
plugin "edged" {
  path = %q
  args = ["__serve", "edged"]
  config {
    runtime_endpoint = %q
    sandbox_image    = %q
  }
}
`, exe, opts.RuntimeEndpoint, opts.SandboxImage)
	w := &podWatch{sent: map[string]time.Time{}, running: map[string]time.Duration{}, restarts: map[string]int32{}, changed: make(chan struct{}, 1)}
	r, err := newRigWith(block, logOut, "metamanager", "meta", w.onDelivery)
	if err != nil {
		return err
	}
	defer r.close()
	w.local = r.local
	if err := r.waitRunning(30*time.Second, "edged"); err != nil {
		return err
	}
	stamp := time.Now().Format("150405")
	names := make([]string, opts.Count)
	start := time.Now()
	for i := range names {
		names[i] = fmt.Sprintf("bench-%s-%d", stamp, i)
		pod := benchPod(names[i], opts)
		msg := sdk.NewMessage("")
		msg.Header.ResourceVersion = "1"
		msg.BuildRouter("metamanager", sdk.GroupMeta, sdk.BuildResource("default", sdk.ResourcePod, names[i]), sdk.OpInsert)
		if err := msg.FillBody(pod); err != nil {
			return err
		}
		w.mu.Lock()
		w.sent[names[i]] = time.Now()
		w.mu.Unlock()
		if err := r.local.Send(pluginv1.Send_KIND_MODULE, "edged", 0, msg.ToProto()); err != nil {
			return fmt.Errorf("deliver pod %s: %w", names[i], err)
		}
	}
	deadline := time.After(opts.Timeout)
	for {
		w.mu.Lock()
		n := len(w.running)
		w.mu.Unlock()
		if n == opts.Count {
			break
		}
		select {
		case <-w.changed:
		case <-deadline:
			w.mu.Lock()
			n := len(w.running)
			w.mu.Unlock()
			return fmt.Errorf("%d of %d pods Running after %s", n, opts.Count, opts.Timeout)
		}
	}
	res := PodsResult{Pods: opts.Count, TotalS: time.Since(start).Seconds(), Network: "bridge"}
	if opts.HostNetwork {
		res.Network = "host"
	}
	w.mu.Lock()
	var lat []float64
	for _, d := range w.running {
		lat = append(lat, float64(d.Microseconds())/1000)
	}
	for _, n := range w.restarts {
		res.ContainerRestarts += n
	}
	w.mu.Unlock()
	slices.Sort(lat)
	res.Running = len(lat)
	res.P50Ms = lat[len(lat)/2]
	res.P99Ms = lat[min(len(lat)-1, int(0.99*float64(len(lat))))]
	// Delete what was started, so the runtime is left as it was found.
	for _, name := range names {
		msg := sdk.NewMessage("")
		msg.BuildRouter("metamanager", sdk.GroupMeta, sdk.BuildResource("default", sdk.ResourcePod, name), sdk.OpDelete)
		if err := msg.FillBody(benchPod(name, opts)); err == nil {
			_ = r.local.Send(pluginv1.Send_KIND_MODULE, "edged", 0, msg.ToProto())
		}
	}
	time.Sleep(3 * time.Second)
	return printJSON(out, res)
}

func benchPod(name string, opts PodsOptions) *v1.Pod {
	grace := int64(1)
	return &v1.Pod{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", UID: types.UID("uid-" + name), ResourceVersion: "1"},
		Spec: v1.PodSpec{
			NodeName:                      "bench",
			HostNetwork:                   opts.HostNetwork,
			RestartPolicy:                 v1.RestartPolicyAlways,
			TerminationGracePeriodSeconds: &grace,
			Containers: []v1.Container{{
				Name: "main", Image: opts.Image, ImagePullPolicy: v1.PullIfNotPresent,
				Command: []string{"sleep", "3600"},
			}},
		},
	}
}
