package kubeletapi

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	statsapi "k8s.io/kubelet/pkg/apis/stats/v1alpha1"

	"github.com/edgehive/edgehive/plugins/edged/container"
)

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

// cpuSample is cumulative node CPU time at a moment.
type cpuSample struct {
	at    time.Time
	usage uint64 // core-nanoseconds
}

// jiffyNanos is one USER_HZ tick (100 Hz on Linux) in nanoseconds.
const jiffyNanos = uint64(time.Second / 100)

// parseProcStat reads the busy CPU time of all CPUs (user, nice, system, irq,
// softirq, steal) in core-nanoseconds and the boot time from /proc/stat.
func parseProcStat(data []byte) (usage uint64, boot time.Time, err error) {
	var sawCPU bool
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		switch f[0] {
		case "cpu":
			if len(f) < 9 {
				return 0, time.Time{}, fmt.Errorf("/proc/stat: cpu line has %d fields, want >= 9", len(f))
			}
			for _, i := range []int{1, 2, 3, 6, 7, 8} { // user nice system irq softirq steal
				n, err := strconv.ParseUint(f[i], 10, 64)
				if err != nil {
					return 0, time.Time{}, fmt.Errorf("/proc/stat: cpu field %d %q: %w", i, f[i], err)
				}
				usage += n * jiffyNanos
			}
			sawCPU = true
		case "btime":
			if len(f) == 2 {
				n, err := strconv.ParseInt(f[1], 10, 64)
				if err != nil {
					return 0, time.Time{}, fmt.Errorf("/proc/stat: btime %q: %w", f[1], err)
				}
				boot = time.Unix(n, 0)
			}
		}
	}
	if !sawCPU {
		return 0, time.Time{}, fmt.Errorf("/proc/stat: no cpu line")
	}
	return usage, boot, nil
}

// meminfo holds /proc/meminfo figures in bytes.
type meminfo struct{ total, free, available uint64 }

func parseMeminfo(data []byte) (meminfo, error) {
	var m meminfo
	found := 0
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 {
			continue
		}
		var dst *uint64
		switch f[0] {
		case "MemTotal:":
			dst = &m.total
		case "MemFree:":
			dst = &m.free
		case "MemAvailable:":
			dst = &m.available
		default:
			continue
		}
		n, err := strconv.ParseUint(f[1], 10, 64)
		if err != nil {
			return m, fmt.Errorf("/proc/meminfo: %s %q: %w", f[0], f[1], err)
		}
		if len(f) > 2 && f[2] == "kB" {
			n *= 1024
		}
		*dst = n
		found++
	}
	if m.total == 0 || found < 3 {
		return m, fmt.Errorf("/proc/meminfo: want MemTotal, MemFree and MemAvailable")
	}
	return m, nil
}

func u64(v uint64) *uint64 { return &v }

// nodeStats reads the node's CPU and memory from /proc; usageNanoCores is the
// rate since the previous request (or over 100 ms on the first).
func (s *Server) nodeStats(ctx context.Context, name string) (statsapi.NodeStats, error) {
	proc := s.cfg.ProcRoot
	if proc == "" {
		proc = "/proc"
	}
	sample := func() (uint64, time.Time, error) {
		data, err := os.ReadFile(filepath.Join(proc, "stat"))
		if err != nil {
			return 0, time.Time{}, fmt.Errorf("node cpu: %w", err)
		}
		return parseProcStat(data)
	}
	usage, boot, err := sample()
	if err != nil {
		return statsapi.NodeStats{}, err
	}
	now := time.Now()
	s.cpuMu.Lock()
	prev := s.lastCPU
	s.cpuMu.Unlock()
	if prev.at.IsZero() || now.Sub(prev.at) > time.Minute {
		prev = cpuSample{at: now, usage: usage}
		select {
		case <-ctx.Done():
			return statsapi.NodeStats{}, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if usage, _, err = sample(); err != nil {
			return statsapi.NodeStats{}, err
		}
		now = time.Now()
	}
	s.cpuMu.Lock()
	s.lastCPU = cpuSample{at: now, usage: usage}
	s.cpuMu.Unlock()
	var rate uint64
	if dt := now.Sub(prev.at); dt > 0 && usage >= prev.usage {
		rate = uint64(float64(usage-prev.usage) / dt.Seconds())
	}
	data, err := os.ReadFile(filepath.Join(proc, "meminfo"))
	if err != nil {
		return statsapi.NodeStats{}, fmt.Errorf("node memory: %w", err)
	}
	mi, err := parseMeminfo(data)
	if err != nil {
		return statsapi.NodeStats{}, err
	}
	t := metav1.NewTime(now)
	return statsapi.NodeStats{
		NodeName:  name,
		StartTime: metav1.NewTime(boot),
		CPU:       &statsapi.CPUStats{Time: t, UsageNanoCores: u64(rate), UsageCoreNanoSeconds: u64(usage)},
		Memory: &statsapi.MemoryStats{Time: t, AvailableBytes: u64(mi.available),
			UsageBytes: u64(mi.total - mi.free), WorkingSetBytes: u64(mi.total - mi.available)},
	}, nil
}

func cpuStats(c *runtimeapi.CpuUsage) *statsapi.CPUStats {
	if c == nil {
		return nil
	}
	out := &statsapi.CPUStats{Time: metav1.NewTime(time.Unix(0, c.Timestamp))}
	if c.UsageCoreNanoSeconds != nil {
		out.UsageCoreNanoSeconds = u64(c.UsageCoreNanoSeconds.Value)
	}
	if c.UsageNanoCores != nil {
		out.UsageNanoCores = u64(c.UsageNanoCores.Value)
	}
	return out
}

func memoryStats(m *runtimeapi.MemoryUsage) *statsapi.MemoryStats {
	if m == nil {
		return nil
	}
	out := &statsapi.MemoryStats{Time: metav1.NewTime(time.Unix(0, m.Timestamp))}
	for dst, src := range map[**uint64]*runtimeapi.UInt64Value{
		&out.WorkingSetBytes: m.WorkingSetBytes, &out.UsageBytes: m.UsageBytes, &out.AvailableBytes: m.AvailableBytes,
		&out.RSSBytes: m.RssBytes, &out.PageFaults: m.PageFaults, &out.MajorPageFaults: m.MajorPageFaults,
	} {
		if src != nil {
			*dst = u64(src.Value)
		}
	}
	return out
}

// addCPU and addMemory sum container figures into their pod's.
func addCPU(sum **statsapi.CPUStats, c *statsapi.CPUStats) {
	if c == nil {
		return
	}
	if *sum == nil {
		*sum = &statsapi.CPUStats{Time: c.Time, UsageNanoCores: u64(0), UsageCoreNanoSeconds: u64(0)}
	}
	if c.Time.After((*sum).Time.Time) {
		(*sum).Time = c.Time
	}
	if c.UsageNanoCores != nil {
		*(*sum).UsageNanoCores += *c.UsageNanoCores
	}
	if c.UsageCoreNanoSeconds != nil {
		*(*sum).UsageCoreNanoSeconds += *c.UsageCoreNanoSeconds
	}
}

func addMemory(sum **statsapi.MemoryStats, m *statsapi.MemoryStats) {
	if m == nil {
		return
	}
	if *sum == nil {
		*sum = &statsapi.MemoryStats{Time: m.Time, WorkingSetBytes: u64(0), UsageBytes: u64(0), RSSBytes: u64(0)}
	}
	if m.Time.After((*sum).Time.Time) {
		(*sum).Time = m.Time
	}
	for dst, src := range map[*uint64]*uint64{(*sum).WorkingSetBytes: m.WorkingSetBytes, (*sum).UsageBytes: m.UsageBytes, (*sum).RSSBytes: m.RSSBytes} {
		if src != nil {
			*dst += *src
		}
	}
}

// summary is /stats/summary: the node from /proc, pods and containers from
// CRI (running containers of edged's pods; a pod's figures are the sum of
// its containers').
func (s *Server) summary(ctx context.Context) (*statsapi.Summary, error) {
	rt, err := s.runtime()
	if err != nil {
		return nil, err
	}
	node, err := s.nodeStats(ctx, s.cfg.NodeName)
	if err != nil {
		return nil, err
	}
	running, err := rt.ListContainers(ctx, &runtimeapi.ContainerFilter{
		State: &runtimeapi.ContainerStateValue{State: runtimeapi.ContainerState_CONTAINER_RUNNING}})
	if err != nil {
		return nil, fmt.Errorf("list containers: %w", err)
	}
	started := map[string]time.Time{}
	for _, c := range running {
		started[c.Id] = time.Unix(0, c.CreatedAt)
	}
	stats, err := rt.ListContainerStats(ctx, &runtimeapi.ContainerStatsFilter{})
	if err != nil {
		return nil, fmt.Errorf("container stats: %w", err)
	}
	pods := map[string]*statsapi.PodStats{}
	for _, p := range s.src.Pods() {
		pods[string(p.UID)] = &statsapi.PodStats{
			PodRef:     statsapi.PodReference{Name: p.Name, Namespace: p.Namespace, UID: string(p.UID)},
			Containers: []statsapi.ContainerStats{},
		}
		if p.Status.StartTime != nil {
			pods[string(p.UID)].StartTime = *p.Status.StartTime
		}
	}
	for _, cs := range stats {
		a := cs.GetAttributes()
		start, ok := started[a.GetId()]
		ps := pods[a.GetLabels()[container.LabelPodUID]]
		if !ok || ps == nil {
			continue
		}
		c := statsapi.ContainerStats{Name: a.GetLabels()[container.LabelContainerName], StartTime: metav1.NewTime(start),
			CPU: cpuStats(cs.Cpu), Memory: memoryStats(cs.Memory)}
		if c.Name == "" {
			c.Name = a.GetMetadata().GetName()
		}
		ps.Containers = append(ps.Containers, c)
		addCPU(&ps.CPU, c.CPU)
		addMemory(&ps.Memory, c.Memory)
	}
	out := &statsapi.Summary{Node: node, Pods: []statsapi.PodStats{}}
	for _, ps := range pods {
		sort.Slice(ps.Containers, func(i, j int) bool { return ps.Containers[i].Name < ps.Containers[j].Name })
		out.Pods = append(out.Pods, *ps)
	}
	sort.Slice(out.Pods, func(i, j int) bool {
		a, b := out.Pods[i].PodRef, out.Pods[j].PodRef
		return a.Namespace+"/"+a.Name < b.Namespace+"/"+b.Name
	})
	return out, nil
}

func (s *Server) serveSummary(w http.ResponseWriter, r *http.Request) {
	sum, err := s.summary(r.Context())
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, sum)
}

func (s *Server) serveResourceMetrics(w http.ResponseWriter, r *http.Request) {
	sum, err := s.summary(r.Context())
	if err != nil {
		writeError(w, err)
		return
	}
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	_, _ = w.Write(resourceMetrics(sum))
}
