package edged

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/edgehive/edgehive/sdk"
)

func TestEventRecorder(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Unix(1_700_000_000, 0))
	var mu sync.Mutex
	var sent []*sdk.Message
	r := newEventRecorder("node-1", clk, func(_ context.Context, m *sdk.Message) error {
		mu.Lock()
		sent = append(sent, m)
		mu.Unlock()
		return nil
	})
	drops := 0
	r.drops = func() { drops++ }
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() { r.run(ctx); close(done) }()
	pod := &v1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "ns", UID: "uid-1"},
		Spec: v1.PodSpec{InitContainers: []v1.Container{{Name: "init"}}, Containers: []v1.Container{{Name: "app"}}}}
	wait := func(n int) []*sdk.Message {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for time.Now().Before(deadline) {
			mu.Lock()
			got := append([]*sdk.Message(nil), sent...)
			mu.Unlock()
			if len(got) >= n {
				return got
			}
			time.Sleep(5 * time.Millisecond)
		}
		t.Fatalf("events sent: %d, want %d", len(sent), n)
		return nil
	}
	// A repeat is the same event with a count, sent as an update.
	for range 3 {
		r.record(pod, "app", v1.EventTypeWarning, "BackOff", "Back-off restarting failed container app")
	}
	got := wait(3)
	var ev v1.Event
	for i, m := range got {
		want := sdk.OpUpdate
		if i == 0 {
			want = sdk.OpInsert
		}
		if m.Router.Operation != want || m.Router.Group != sdk.GroupMeta || m.Router.Source != Name {
			t.Fatalf("event %d route %+v", i, m.Router)
		}
		if err := m.DecodeContent(&ev); err != nil {
			t.Fatal(err)
		}
		if m.Router.Resource != "ns/event/"+ev.Name || ev.Count != int32(i+1) {
			t.Fatalf("event %d: resource %s count %d", i, m.Router.Resource, ev.Count)
		}
	}
	if ev.InvolvedObject.FieldPath != "spec.containers{app}" || ev.InvolvedObject.UID != "uid-1" || ev.Source.Host != "node-1" ||
		ev.Type != v1.EventTypeWarning || ev.Reason != "BackOff" {
		t.Fatalf("event %+v", ev)
	}
	r.record(pod, "init", v1.EventTypeNormal, "Started", "Started container init")
	got = wait(4)
	if err := got[3].DecodeContent(&ev); err != nil || ev.InvolvedObject.FieldPath != "spec.initContainers{init}" {
		t.Fatalf("init event %+v %v", ev.InvolvedObject, err)
	}
	// A burst beyond the token bucket is not sent (burst 25, 4 used).
	for i := range 40 {
		r.record(pod, "app", v1.EventTypeNormal, "Pulled", fmt.Sprintf("message %d", i))
	}
	time.Sleep(200 * time.Millisecond)
	mu.Lock()
	n := len(sent)
	mu.Unlock()
	if n != eventBurst {
		t.Fatalf("sent %d events after a burst, want %d (the bucket)", n, eventBurst)
	}
	// Tokens come back with time.
	clk.Step(time.Second)
	r.record(pod, "app", v1.EventTypeNormal, "Pulled", "later")
	wait(eventBurst + 1)
	cancel()
	<-done
	// A full queue drops instead of blocking.
	for range eventQueueSize + 10 {
		r.record(pod, "app", v1.EventTypeNormal, "X", "y")
	}
	if drops != 10 {
		t.Fatalf("drops %d", drops)
	}
}
