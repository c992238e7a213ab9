package edged

import (
	"sync/atomic"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"

	"github.com/edgehive/edgehive/plugins/edged/cri"
	"github.com/edgehive/edgehive/sdk"
)

func podReady(s v1.PodStatus) (ready, containersReady bool) {
	for _, c := range s.Conditions {
		switch c.Type {
		case v1.PodReady:
			ready = c.Status == v1.ConditionTrue
		case v1.ContainersReady:
			containersReady = c.Status == v1.ConditionTrue
		}
	}
	return
}

func TestProbesReadinessAndLiveness(t *testing.T) {
	rt := cri.NewFakeRuntime(busybox, pause)
	var readyExit, liveExit atomic.Int32
	rt.ExecFunc = func(_ string, cmd []string) ([]byte, []byte, int32) {
		if cmd[0] == "ready" {
			return nil, nil, readyExit.Load()
		}
		return nil, nil, liveExit.Load()
	}
	h := start(t, rt)
	pod := mkPod("probed", "uid-probed", false, "app")
	pod.Spec.Containers[0].ReadinessProbe = &v1.Probe{ProbeHandler: v1.ProbeHandler{Exec: &v1.ExecAction{Command: []string{"ready"}}}, PeriodSeconds: 1}
	pod.Spec.Containers[0].LivenessProbe = &v1.Probe{ProbeHandler: v1.ProbeHandler{Exec: &v1.ExecAction{Command: []string{"live"}}}, PeriodSeconds: 1}
	if err := h.Deliver(podMsg(t, sdk.OpInsert, pod)); err != nil {
		t.Fatal(err)
	}
	st := waitStatus(t, h, "probed", 5*time.Second, running)
	if r, _ := podReady(st); r || st.ContainerStatuses[0].Ready {
		t.Fatalf("ready before the readiness probe ran: %+v", st.Conditions)
	}
	isReady := func(want bool) func(v1.PodStatus) bool {
		return func(s v1.PodStatus) bool {
			r, cr := podReady(s)
			return r == want && cr == want && len(s.ContainerStatuses) == 1 && s.ContainerStatuses[0].Ready == want
		}
	}
	waitStatus(t, h, "probed", 5*time.Second, isReady(true))
	readyExit.Store(1)
	waitStatus(t, h, "probed", 5*time.Second, isReady(false))
	readyExit.Store(0)
	waitStatus(t, h, "probed", 5*time.Second, isReady(true))

	liveExit.Store(1)
	st = waitStatus(t, h, "probed", 10*time.Second, func(s v1.PodStatus) bool {
		return len(s.ContainerStatuses) == 1 && s.ContainerStatuses[0].RestartCount >= 1 && s.ContainerStatuses[0].State.Running != nil
	})
	liveExit.Store(0)
	if lt := st.ContainerStatuses[0].LastTerminationState.Terminated; lt == nil || lt.ExitCode != 137 {
		t.Fatalf("last state after the liveness kill: %+v", st.ContainerStatuses[0].LastTerminationState)
	}
	// The new container is probed afresh and becomes ready again.
	waitStatus(t, h, "probed", 5*time.Second, isReady(true))
}
