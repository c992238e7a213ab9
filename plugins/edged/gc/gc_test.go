package gc

import (
	"context"
	"slices"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/edgehive/edgehive/plugins/edged/container"
	"github.com/edgehive/edgehive/plugins/edged/cri"
)

const mb = 1 << 20

func hasImage(t *testing.T, rt *cri.FakeRuntime, ref string) bool {
	t.Helper()
	st, err := rt.ImageStatus(context.Background(), &runtimeapi.ImageSpec{Image: ref}, false)
	if err != nil {
		t.Fatal(err)
	}
	return st.GetImage() != nil
}

func runContainer(t *testing.T, rt *cri.FakeRuntime, uid, name, image string) (sandbox, id string) {
	t.Helper()
	ctx := context.Background()
	labels := container.PodLabels("p-"+uid, "default", "")
	labels[container.LabelPodUID] = uid
	sbCfg := &runtimeapi.PodSandboxConfig{Metadata: &runtimeapi.PodSandboxMetadata{Name: "p-" + uid, Namespace: "default", Uid: uid}, Labels: labels}
	sb, err := rt.RunPodSandbox(ctx, sbCfg, "")
	if err != nil {
		t.Fatal(err)
	}
	cl := map[string]string{container.LabelPodUID: uid, container.LabelContainerName: name}
	id, err = rt.CreateContainer(ctx, sb, &runtimeapi.ContainerConfig{Metadata: &runtimeapi.ContainerMetadata{Name: name},
		Image: &runtimeapi.ImageSpec{Image: image}, Labels: cl}, sbCfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := rt.StartContainer(ctx, id); err != nil {
		t.Fatal(err)
	}
	return sb, id
}

func TestImageGC(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Unix(1_700_000_000, 0))
	rt := cri.NewFakeRuntime("pause:3.10", "used:1", "old:1", "newer:1", "fresh:1")
	for ref, size := range map[string]uint64{"pause:3.10": 1 * mb, "used:1": 10 * mb, "old:1": 20 * mb, "newer:1": 30 * mb, "fresh:1": 40 * mb} {
		rt.SetImageSize(ref, size)
	}
	runContainer(t, rt, "u1", "app", "used:1")
	capacity := uint64(200 * mb)
	fs := func(string) (uint64, uint64, error) {
		info, _ := rt.ImageFsInfo(context.Background())
		used := info.ImageFilesystems[0].UsedBytes.Value
		return capacity, capacity - used - 80*mb, nil // 80 MB of other data on the disk
	}
	g := NewImageGC(rt, clk, nil, ImagePolicy{HighThresholdPercent: 90, LowThresholdPercent: 70, MinAge: time.Minute, Keep: []string{"pause:3.10"}}, fs)
	ctx := context.Background()
	// Usage (80+101)/200 = 90%: at the high threshold, but every image is too young.
	if _, err := g.GarbageCollect(ctx); err == nil {
		t.Fatal("freeing with only young images should report it could not free enough")
	}
	// "newer" gets used for a while, then its container goes away.
	clk.Step(30 * time.Second)
	_, id := runContainer(t, rt, "u2", "app", "newer:1")
	if _, err := g.GarbageCollect(ctx); err == nil {
		t.Fatal("still too young")
	}
	if err := rt.StopContainer(ctx, id, 0); err != nil {
		t.Fatal(err)
	}
	if err := rt.RemoveContainer(ctx, id); err != nil {
		t.Fatal(err)
	}
	rt.AddImage("fresh:2") // detected late: too young to go
	clk.Step(2 * time.Minute)
	// Need: 200*(100-70)% = 60 MB free; available is 200-80-101-1 = 18 MB → free 42 MB.
	freed, err := g.GarbageCollect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Never used images go first (old, then fresh: same detection time, so
	// either; 20+40 ≥ 42); "newer" was used later and stays, so does "used".
	if hasImage(t, rt, "old:1") || !hasImage(t, rt, "used:1") || !hasImage(t, rt, "pause:3.10") || !hasImage(t, rt, "newer:1") {
		t.Fatalf("images after GC: %v", rt.Calls())
	}
	if freed < 42*mb {
		t.Fatalf("freed %d", freed)
	}
	// Below the high threshold nothing happens.
	rt.ResetCalls()
	if freed, err := g.GarbageCollect(ctx); err != nil || freed != 0 || slices.Contains(rt.Calls(), "RemoveImage") {
		t.Fatalf("freed %d err %v calls %v", freed, err, rt.Calls())
	}
	// 100 disables image GC.
	off := NewImageGC(rt, clk, nil, ImagePolicy{HighThresholdPercent: 100}, func(string) (uint64, uint64, error) { return 1, 0, nil })
	if freed, err := off.GarbageCollect(ctx); err != nil || freed != 0 {
		t.Fatalf("disabled GC: %d %v", freed, err)
	}
}

func TestContainerGC(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Unix(1_700_000_000, 0))
	rt := cri.NewFakeRuntime("img")
	rt.Now = clk.Now
	ctx := context.Background()
	sb, _ := runContainer(t, rt, "u1", "app", "img")
	// Three dead instances of "app" in the same sandbox, and a running one.
	var dead []string
	for i := range 3 {
		clk.Step(time.Second)
		id, err := rt.CreateContainer(ctx, sb, &runtimeapi.ContainerConfig{Metadata: &runtimeapi.ContainerMetadata{Name: "app", Attempt: uint32(i + 1)},
			Image: &runtimeapi.ImageSpec{Image: "img"}, Labels: map[string]string{container.LabelPodUID: "u1", container.LabelContainerName: "app"}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		_ = rt.StartContainer(ctx, id)
		_ = rt.SetContainerExited(id, 1)
		dead = append(dead, id)
	}
	// An old sandbox of pod u2 with nothing in it, and its newer one.
	old, id := runContainer(t, rt, "u2", "app", "img")
	_ = rt.StopContainer(ctx, id, 0)
	_ = rt.RemoveContainer(ctx, id)
	_ = rt.StopPodSandbox(ctx, old)
	clk.Step(time.Second)
	newest, _ := runContainer(t, rt, "u2", "app", "img")

	g := NewContainerGC(rt, clk, nil, ContainerPolicy{MaxPerPodContainer: 1})
	c, s, err := g.GarbageCollect(ctx)
	if err != nil || c != 2 || s != 1 {
		t.Fatalf("removed %d containers, %d sandboxes, err %v", c, s, err)
	}
	left, _ := rt.ListContainers(ctx, nil)
	var ids []string
	for _, c := range left {
		ids = append(ids, c.Id)
	}
	if !slices.Contains(ids, dead[2]) || slices.Contains(ids, dead[0]) || slices.Contains(ids, dead[1]) || len(ids) != 3 {
		t.Fatalf("containers left %v (dead %v)", ids, dead)
	}
	sbs, _ := rt.ListPodSandbox(ctx, nil)
	for _, s := range sbs {
		if s.Id == old {
			t.Fatal("the old empty sandbox stayed")
		}
	}
	if len(sbs) != 2 || !slices.ContainsFunc(sbs, func(s *runtimeapi.PodSandbox) bool { return s.Id == newest }) {
		t.Fatalf("sandboxes %v", sbs)
	}
}
