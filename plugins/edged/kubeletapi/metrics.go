package kubeletapi

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	statsapi "k8s.io/kubelet/pkg/apis/stats/v1alpha1"
)

// metricFamily is one metric of /metrics/resource, named as the kubelet's
// resource metrics that metrics-server reads.
type metricFamily struct {
	name, help, kind string
	samples          []string
}

func (f *metricFamily) add(labels [][2]string, value float64, at metav1.Time) {
	var b strings.Builder
	b.WriteString(f.name)
	if len(labels) > 0 {
		b.WriteByte('{')
		for i, l := range labels {
			if i > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, "%s=\"%s\"", l[0], labelEscaper.Replace(l[1]))
		}
		b.WriteByte('}')
	}
	b.WriteByte(' ')
	b.WriteString(strconv.FormatFloat(value, 'g', -1, 64))
	if !at.IsZero() {
		b.WriteByte(' ')
		b.WriteString(strconv.FormatInt(at.UnixMilli(), 10))
	}
	f.samples = append(f.samples, b.String())
}

// labelEscaper escapes a label value as the Prometheus text format wants.
var labelEscaper = strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)

// resourceMetrics renders a summary as the kubelet's /metrics/resource
// (Prometheus text format 0.0.4, samples with their measurement time).
func resourceMetrics(sum *statsapi.Summary) []byte {
	nodeCPU := &metricFamily{name: "node_cpu_usage_seconds_total", kind: "counter",
		help: "Cumulative cpu time consumed by the node in core-seconds"}
	nodeMem := &metricFamily{name: "node_memory_working_set_bytes", kind: "gauge",
		help: "Current working set of the node in bytes"}
	podCPU := &metricFamily{name: "pod_cpu_usage_seconds_total", kind: "counter",
		help: "Cumulative cpu time consumed by the pod in core-seconds"}
	podMem := &metricFamily{name: "pod_memory_working_set_bytes", kind: "gauge",
		help: "Current working set of the pod in bytes"}
	ctrCPU := &metricFamily{name: "container_cpu_usage_seconds_total", kind: "counter",
		help: "Cumulative cpu time consumed by the container in core-seconds"}
	ctrMem := &metricFamily{name: "container_memory_working_set_bytes", kind: "gauge",
		help: "Current working set of the container in bytes"}
	ctrStart := &metricFamily{name: "container_start_time_seconds", kind: "gauge",
		help: "Start time of the container since unix epoch in seconds"}
	scrapeErr := &metricFamily{name: "resource_scrape_error", kind: "gauge",
		help: "1 if there was an error while getting container metrics, 0 otherwise"}

	if c := sum.Node.CPU; c != nil && c.UsageCoreNanoSeconds != nil {
		nodeCPU.add(nil, float64(*c.UsageCoreNanoSeconds)/1e9, c.Time)
	}
	if m := sum.Node.Memory; m != nil && m.WorkingSetBytes != nil {
		nodeMem.add(nil, float64(*m.WorkingSetBytes), m.Time)
	}
	for _, p := range sum.Pods {
		pl := [][2]string{{"namespace", p.PodRef.Namespace}, {"pod", p.PodRef.Name}}
		if c := p.CPU; c != nil && c.UsageCoreNanoSeconds != nil {
			podCPU.add(pl, float64(*c.UsageCoreNanoSeconds)/1e9, c.Time)
		}
		if m := p.Memory; m != nil && m.WorkingSetBytes != nil {
			podMem.add(pl, float64(*m.WorkingSetBytes), m.Time)
		}
		for _, c := range p.Containers {
			cl := [][2]string{{"container", c.Name}, {"namespace", p.PodRef.Namespace}, {"pod", p.PodRef.Name}}
			if cpu := c.CPU; cpu != nil && cpu.UsageCoreNanoSeconds != nil {
				ctrCPU.add(cl, float64(*cpu.UsageCoreNanoSeconds)/1e9, cpu.Time)
			}
			if m := c.Memory; m != nil && m.WorkingSetBytes != nil {
				ctrMem.add(cl, float64(*m.WorkingSetBytes), m.Time)
			}
			if !c.StartTime.IsZero() {
				ctrStart.add(cl, float64(c.StartTime.UnixNano())/1e9, metav1.Time{})
			}
		}
	}
	scrapeErr.add(nil, 0, metav1.Time{})

	var b bytes.Buffer
	for _, f := range []*metricFamily{ctrCPU, ctrMem, ctrStart, nodeCPU, nodeMem, podCPU, podMem, scrapeErr} {
		fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s %s\n", f.name, f.help, f.name, f.kind)
		for _, s := range f.samples {
			b.WriteString(s)
			b.WriteByte('\n')
		}
	}
	return b.Bytes()
}
