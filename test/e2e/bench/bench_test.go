//go:build e2e

// Package bench measures the cloud link end to end (make bench-e2e): on the
// e2e environment it prints one JSON object per case — seq, burst, delete,
// node_ready — as the benchmark section defines them. It is a
// program that happens to be a test binary: it fails only when the
// environment cannot run, never on a figure.
package bench

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/edgehive/edgehive/internal/e2eenv"
)

var (
	outFile  = flag.String("bench.out", "", "also append the JSON lines to this file")
	seqPods  = flag.Int("bench.seq", 20, "pods created one at a time")
	burstPod = flag.Int("bench.burst", 10, "pods created at once, then deleted at once")
)

type recorder struct {
	t   *testing.T
	out *os.File
}

func (r *recorder) emit(v any) {
	b, err := json.Marshal(v)
	if err != nil {
		r.t.Fatal(err)
	}
	fmt.Println(string(b))
	r.t.Log(string(b))
	if r.out != nil {
		fmt.Fprintln(r.out, string(b))
	}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func TestBenchE2E(t *testing.T) {
	rec := &recorder{t: t}
	if *outFile != "" {
		f, err := os.Create(*outFile)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		rec.out = f
	}
	e := e2eenv.NewEnv(t, false)

	// node_ready: `edgehive run` started -> node Ready seen by a watch.
	edge := e2eenv.JoinEdge(t, e.Bin, e.Cloud, e.Token, e2eenv.NodeName("bench"), e.Containerd)
	start := time.Now()
	edge.Start(t)
	if _, err := e2eenv.WaitForNode(e.Ctx(2*time.Minute), e.Client, edge.Node, e2eenv.NodeReady); err != nil {
		t.Fatal(err)
	}
	rec.emit(map[string]any{"case": "node_ready", "ms": ms(time.Since(start))})

	// seq: one pod at a time, create -> Running seen by a watch.
	var lat []float64
	for i := range *seqPods {
		name := fmt.Sprintf("seq-%d", i)
		pod := e2eenv.BusyboxPod(name, edge.Node, e2eenv.PodOptions{})
		pod.Labels["bench"] = "seq"
		start := time.Now()
		if _, err := e.Client.CoreV1().Pods("default").Create(e.Ctx(30*time.Second), pod, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := e2eenv.WaitForPod(e.Ctx(2*time.Minute), e.Client, "default", name, e2eenv.PodRunning); err != nil {
			t.Fatal(err)
		}
		lat = append(lat, ms(time.Since(start)))
	}
	slices.Sort(lat)
	rec.emit(map[string]any{"case": "seq", "pods": len(lat), "p50_ms": lat[len(lat)/2], "p99_ms": lat[min(len(lat)-1, int(0.99*float64(len(lat))))]})
	deleteAll(t, e, "bench=seq")

	// burst: N created at once -> all Running.
	var wg sync.WaitGroup
	start = time.Now()
	for i := range *burstPod {
		pod := e2eenv.BusyboxPod(fmt.Sprintf("burst-%d", i), edge.Node, e2eenv.PodOptions{})
		pod.Labels["bench"] = "burst"
		wg.Go(func() {
			if _, err := e.Client.CoreV1().Pods("default").Create(e.Ctx(30*time.Second), pod, metav1.CreateOptions{}); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if _, err := e2eenv.WaitForPods(e.Ctx(2*time.Minute), e.Client, "default", "bench=burst", func(ps map[string]*v1.Pod) bool {
		n := 0
		for _, p := range ps {
			if ok, _ := e2eenv.PodRunning(p, true); ok {
				n++
			}
		}
		return n == *burstPod
	}); err != nil {
		t.Fatal(err)
	}
	rec.emit(map[string]any{"case": "burst", "pods": *burstPod, "all_running_ms": ms(time.Since(start))})

	// delete: the N deleted at once (grace 1 s) -> all gone from the API.
	start = time.Now()
	deleteAll(t, e, "bench=burst")
	rec.emit(map[string]any{"case": "delete", "pods": *burstPod, "all_gone_ms": ms(time.Since(start))})
}

// deleteAll deletes the pods matching sel at once (grace 1 s) and waits
// until the edge confirmed every deletion.
func deleteAll(t *testing.T, e *e2eenv.Env, sel string) {
	t.Helper()
	grace := int64(1)
	pods, err := e.Client.CoreV1().Pods("default").List(e.Ctx(30*time.Second), metav1.ListOptions{LabelSelector: sel})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for _, p := range pods.Items {
		wg.Go(func() {
			if err := e.Client.CoreV1().Pods("default").Delete(e.Ctx(30*time.Second), p.Name, metav1.DeleteOptions{GracePeriodSeconds: &grace}); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if _, err := e2eenv.WaitForPods(e.Ctx(2*time.Minute), e.Client, "default", sel, func(ps map[string]*v1.Pod) bool { return len(ps) == 0 }); err != nil {
		t.Fatal(err)
	}
}
