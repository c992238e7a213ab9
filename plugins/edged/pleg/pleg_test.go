package pleg

import (
	"context"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/edgehive/edgehive/plugins/edged/container"
	"github.com/edgehive/edgehive/plugins/edged/cri"
)

const img = "edgehive.local/busybox:1.36"

func startPod(t *testing.T, rt *cri.FakeRuntime, uid string, names ...string) (string, []string) {
	t.Helper()
	ctx := context.Background()
	labels := container.PodLabels("p-"+uid, "default", typesUID(uid))
	sb, err := rt.RunPodSandbox(ctx, &runtimeapi.PodSandboxConfig{
		Metadata: &runtimeapi.PodSandboxMetadata{Name: "p-" + uid, Namespace: "default", Uid: uid},
		Labels:   labels,
	}, "")
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, n := range names {
		l := container.PodLabels("p-"+uid, "default", typesUID(uid))
		l[container.LabelContainerName] = n
		id, err := rt.CreateContainer(ctx, sb, &runtimeapi.ContainerConfig{
			Metadata: &runtimeapi.ContainerMetadata{Name: n}, Image: &runtimeapi.ImageSpec{Image: img}, Labels: l,
		}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := rt.StartContainer(ctx, id); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	return sb, ids
}

func drain(p *PLEG) map[string]EventType {
	out := map[string]EventType{}
	for {
		select {
		case e := <-p.Watch():
			if prev, ok := out[e.Data]; ok {
				out[e.Data] = prev + "," + e.Type
			} else {
				out[e.Data] = e.Type
			}
		default:
			return out
		}
	}
}

func TestRelist(t *testing.T) {
	ctx := context.Background()
	rt := cri.NewFakeRuntime(img)
	clk := clocktesting.NewFakeClock(time.Unix(1000, 0))
	p := New(rt, clk, nil)

	// Something that is not a pod of ours is ignored.
	if _, err := rt.RunPodSandbox(ctx, &runtimeapi.PodSandboxConfig{Metadata: &runtimeapi.PodSandboxMetadata{Name: "x", Namespace: "y", Uid: "z"}}, ""); err != nil {
		t.Fatal(err)
	}
	sb, ids := startPod(t, rt, "u1", "a", "b")
	if !p.Relist(ctx) {
		t.Fatal("relist failed")
	}
	ev := drain(p)
	if len(ev) != 3 || ev[sb] != ContainerStarted || ev[ids[0]] != ContainerStarted {
		t.Fatalf("first relist events = %v", ev)
	}
	c, ok := p.Get("u1")
	if !ok || c.Err != nil || len(c.Status.Containers) != 2 || len(c.Status.Sandboxes) != 1 || c.Status.PodIP() != "10.88.0.2" {
		t.Fatalf("cache = %+v", c)
	}
	if pods := p.Pods(); len(pods) != 1 || pods["u1"].Name != "p-u1" || !pods["u1"].Running {
		t.Fatalf("pods = %v", pods)
	}

	// No change, no event.
	clk.Step(time.Second)
	p.Relist(ctx)
	if ev := drain(p); len(ev) != 0 {
		t.Fatalf("events without change: %v", ev)
	}

	// A container exits: ContainerDied, and the cache is refreshed.
	if err := rt.SetContainerExited(ids[1], 1); err != nil {
		t.Fatal(err)
	}
	clk.Step(time.Second)
	p.Relist(ctx)
	if ev := drain(p); len(ev) != 1 || ev[ids[1]] != ContainerDied {
		t.Fatalf("events = %v", ev)
	}
	if c, _ := p.Get("u1"); c.Status.FindContainer("b").Exited() == false || !c.Time.Equal(clk.Now()) {
		t.Fatalf("cache not refreshed: %+v", c)
	}

	// A running container removed: Died then Removed; the exited one: Removed.
	if err := rt.StopContainer(ctx, ids[0], 0); err != nil {
		t.Fatal(err)
	}
	if err := rt.RemoveContainer(ctx, ids[0]); err != nil {
		t.Fatal(err)
	}
	p.Relist(ctx)
	if ev := drain(p); ev[ids[0]] != "ContainerDied,ContainerRemoved" {
		t.Fatalf("events = %v", ev)
	}
	rt.RemoveContainer(ctx, ids[1])
	rt.StopPodSandbox(ctx, sb)
	rt.RemovePodSandbox(ctx, sb)
	p.Relist(ctx)
	if ev := drain(p); ev[ids[1]] != ContainerRemoved || ev[sb] != "ContainerDied,ContainerRemoved" {
		t.Fatalf("events = %v", ev)
	}
	if _, ok := p.Get("u1"); ok || len(p.Pods()) != 0 {
		t.Fatal("gone pod still cached")
	}
}

func TestRelistError(t *testing.T) {
	rt := cri.NewFakeRuntime()
	p := New(rt, clocktesting.NewFakeClock(time.Now()), nil)
	rt.InjectError("ListContainers", context.DeadlineExceeded)
	if p.Relist(context.Background()) {
		t.Fatal("relist succeeded with a failing runtime")
	}
}

func TestRunTicks(t *testing.T) {
	rt := cri.NewFakeRuntime(img)
	clk := clocktesting.NewFakeClock(time.Unix(1000, 0))
	p := New(rt, clk, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	deadline := time.Now().Add(5 * time.Second)
	for !p.LastRelist().Equal(clk.Now()) && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	startPod(t, rt, "u2", "c")
	for time.Now().Before(deadline) {
		if clk.HasWaiters() {
			clk.Step(RelistPeriod)
		}
		select {
		case e := <-p.Watch():
			if e.ID != "u2" {
				t.Fatalf("event %+v", e)
			}
			return
		case <-time.After(5 * time.Millisecond):
		}
	}
	t.Fatal("no event from the ticking PLEG")
}
