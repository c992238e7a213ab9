package kubeletapi

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/edgehive/edgehive/plugins/edged/container"
)

// fakeRuntime answers the stats calls from fixed lists.
type fakeRuntime struct {
	running []*runtimeapi.Container
	stats   []*runtimeapi.ContainerStats
}

var _ Runtime = (*fakeRuntime)(nil)

func (f *fakeRuntime) ListPodSandbox(context.Context, *runtimeapi.PodSandboxFilter) ([]*runtimeapi.PodSandbox, error) {
	return nil, nil
}
func (f *fakeRuntime) ListContainers(context.Context, *runtimeapi.ContainerFilter) ([]*runtimeapi.Container, error) {
	return f.running, nil
}
func (f *fakeRuntime) Exec(context.Context, *runtimeapi.ExecRequest) (*runtimeapi.ExecResponse, error) {
	return nil, nil
}
func (f *fakeRuntime) Attach(context.Context, *runtimeapi.AttachRequest) (*runtimeapi.AttachResponse, error) {
	return nil, nil
}
func (f *fakeRuntime) PortForward(context.Context, *runtimeapi.PortForwardRequest) (*runtimeapi.PortForwardResponse, error) {
	return nil, nil
}
func (f *fakeRuntime) ListContainerStats(context.Context, *runtimeapi.ContainerStatsFilter) ([]*runtimeapi.ContainerStats, error) {
	return f.stats, nil
}

type rtSource struct {
	pods []*v1.Pod
	rt   Runtime
}

func (s rtSource) Pods() []*v1.Pod       { return s.pods }
func (s rtSource) LogDir(*v1.Pod) string { return "" }
func (s rtSource) Runtime() Runtime      { return s.rt }

func ctrStats(id, uid, name string, cpuNs, ws uint64) *runtimeapi.ContainerStats {
	return &runtimeapi.ContainerStats{
		Attributes: &runtimeapi.ContainerAttributes{Id: id, Metadata: &runtimeapi.ContainerMetadata{Name: name},
			Labels: map[string]string{container.LabelPodUID: uid, container.LabelContainerName: name}},
		Cpu:    &runtimeapi.CpuUsage{Timestamp: 1, UsageCoreNanoSeconds: &runtimeapi.UInt64Value{Value: cpuNs}, UsageNanoCores: &runtimeapi.UInt64Value{Value: cpuNs / 10}},
		Memory: &runtimeapi.MemoryUsage{Timestamp: 1, WorkingSetBytes: &runtimeapi.UInt64Value{Value: ws}},
	}
}

func TestSummary(t *testing.T) {
	proc := t.TempDir()
	_ = os.WriteFile(filepath.Join(proc, "stat"), []byte("cpu  100 0 100 1000 0 0 0 0 0 0\nbtime 1700000000\n"), 0o644)
	_ = os.WriteFile(filepath.Join(proc, "meminfo"), []byte("MemTotal: 1000 kB\nMemFree: 100 kB\nMemAvailable: 400 kB\n"), 0o644)
	rt := &fakeRuntime{
		running: []*runtimeapi.Container{{Id: "a1", CreatedAt: 5e9}, {Id: "a2", CreatedAt: 6e9}, {Id: "x1"}},
		stats: []*runtimeapi.ContainerStats{
			ctrStats("a1", "uid-a", "app", 1000, 10),
			ctrStats("a2", "uid-a", "side", 500, 5),
			ctrStats("dead", "uid-a", "old", 7, 7), // not running: left out
			ctrStats("x1", "uid-x", "other", 9, 9), // not edged's pod: left out
		},
	}
	start := metav1.NewTime(time.Unix(1700000100, 0))
	pods := []*v1.Pod{
		{ObjectMeta: metav1.ObjectMeta{Name: "a", Namespace: "ns", UID: types.UID("uid-a")}, Status: v1.PodStatus{StartTime: &start}},
		{ObjectMeta: metav1.ObjectMeta{Name: "b", Namespace: "ns", UID: types.UID("uid-b")}},
	}
	s := &Server{cfg: Config{NodeName: "n1", ProcRoot: proc}, src: rtSource{pods: pods, rt: rt}, log: hclog.NewNullLogger()}
	sum, err := s.summary(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	n := sum.Node
	if n.NodeName != "n1" || *n.CPU.UsageCoreNanoSeconds != 200*uint64(10*time.Millisecond) || n.StartTime.Unix() != 1700000000 ||
		*n.Memory.WorkingSetBytes != 600*1024 || *n.Memory.AvailableBytes != 400*1024 || *n.Memory.UsageBytes != 900*1024 {
		t.Fatalf("node %+v cpu %+v mem %+v", n, n.CPU, n.Memory)
	}
	if len(sum.Pods) != 2 || sum.Pods[0].PodRef.Name != "a" || sum.Pods[1].PodRef.Name != "b" {
		t.Fatalf("pods %+v", sum.Pods)
	}
	a := sum.Pods[0]
	if len(a.Containers) != 2 || a.Containers[0].Name != "app" || a.Containers[1].Name != "side" ||
		a.Containers[0].StartTime.Unix() != 5 || !a.StartTime.Equal(&start) {
		t.Fatalf("pod a containers %+v", a.Containers)
	}
	if *a.CPU.UsageCoreNanoSeconds != 1500 || *a.CPU.UsageNanoCores != 150 || *a.Memory.WorkingSetBytes != 15 {
		t.Fatalf("pod a sums cpu %+v mem %+v", a.CPU, a.Memory)
	}
	if b := sum.Pods[1]; len(b.Containers) != 0 || b.CPU != nil || b.Memory != nil {
		t.Fatalf("pod b without containers %+v", b)
	}
}
