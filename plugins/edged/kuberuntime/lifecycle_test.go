package kuberuntime

import (
	"context"
	"encoding/base64"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/edgehive/edgehive/plugins/edged/cri"
)

func TestLifecycleHooks(t *testing.T) {
	rt := cri.NewFakeRuntime(busybox, pause)
	clk := clocktesting.NewFakeClock(time.Unix(10000, 0))
	m := newManager(t, rt, clk)
	var mu sync.Mutex
	var events []string
	m.Events = func(_ *v1.Pod, c, typ, reason, msg string) {
		mu.Lock()
		events = append(events, reason+" "+c)
		mu.Unlock()
	}
	var order []string
	postStartFails := false
	rt.ExecFunc = func(id string, cmd []string) ([]byte, []byte, int32) {
		mu.Lock()
		defer mu.Unlock()
		order = append(order, strings.Join(cmd, " "))
		if cmd[0] == "post" && postStartFails {
			return nil, []byte("boom"), 1
		}
		return nil, nil, 0
	}
	pod := testPod(v1.RestartPolicyAlways, "app")
	pod.Spec.Containers[0].Lifecycle = &v1.Lifecycle{
		PostStart: &v1.LifecycleHandler{Exec: &v1.ExecAction{Command: []string{"post"}}},
		PreStop:   &v1.LifecycleHandler{Exec: &v1.ExecAction{Command: []string{"pre"}}},
	}
	if _, _, err := syncOnce(t, m, pod); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(order, []string{"post"}) {
		t.Fatalf("exec calls %v", order)
	}
	for _, want := range []string{"Pulled app", "Created app", "Started app"} {
		if !slices.Contains(events, want) {
			t.Errorf("no event %q in %v", want, events)
		}
	}
	// The preStop hook runs before the stop.
	ps, _ := m.GetPodStatus(context.Background(), pod.UID, pod.Name, pod.Namespace)
	rt.ResetCalls()
	if err := m.KillPod(context.Background(), pod, ps, 30, true); err != nil {
		t.Fatal(err)
	}
	calls := rt.Calls()
	if i, j := slices.Index(calls, "ExecSync"), slices.Index(calls, "StopContainer"); i < 0 || j < 0 || i > j {
		t.Fatalf("preStop not before the stop: %v", calls)
	}
	if !slices.Contains(events, "Killing app") {
		t.Errorf("no Killing event: %v", events)
	}
	// A failing postStart hook kills the container and says why.
	postStartFails = true
	_, after, err := syncOnce(t, m, pod)
	if err == nil || !strings.Contains(err.Error(), ReasonPostStartHookError) {
		t.Fatalf("err %v", err)
	}
	if r := m.Reasons(pod.UID)["app"]; r.Reason != ReasonPostStartHookError || !strings.Contains(r.Message, "boom") {
		t.Fatalf("reason %+v", r)
	}
	if cs := after.FindContainer("app"); cs == nil || cs.Running() {
		t.Fatalf("container after a failed postStart: %+v", cs)
	}
	if !slices.Contains(events, EventFailedPostStartHook+" app") {
		t.Errorf("no FailedPostStartHook event: %v", events)
	}
}

func TestPullAuth(t *testing.T) {
	rt := cri.NewFakeRuntime(busybox, pause)
	m := newManager(t, rt, clocktesting.NewFakeClock(time.Unix(10000, 0)))
	auth := base64.StdEncoding.EncodeToString([]byte("bob:pw2"))
	m.Fetch = func(_ context.Context, kind, ns, name string) (map[string][]byte, error) {
		if kind != KindSecret || ns != "default" {
			t.Errorf("fetch %s %s/%s", kind, ns, name)
		}
		switch name {
		case "regcred":
			return map[string][]byte{v1.DockerConfigJsonKey: []byte(`{"auths":{"https://registry.example.com:5000/v2/":{"username":"alice","password":"pw1"},"index.docker.io":{"auth":"` + auth + `"}}}`)}, nil
		}
		return nil, ErrNotFound
	}
	pod := testPod(v1.RestartPolicyAlways, "app")
	pod.Spec.ImagePullSecrets = []v1.LocalObjectReference{{Name: "missing"}, {Name: "regcred"}}
	tests := []struct{ image, user, pass string }{
		{"registry.example.com:5000/team/app:1", "alice", "pw1"},
		{"busybox:1.36", "bob", "pw2"},
		{"other.io/x:1", "", ""},
	}
	for _, tt := range tests {
		a := m.pullAuth(context.Background(), pod, tt.image)
		if a.GetUsername() != tt.user || a.GetPassword() != tt.pass {
			t.Errorf("%s: auth %+v, want %s/%s", tt.image, a, tt.user, tt.pass)
		}
	}
}
