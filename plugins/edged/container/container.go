// Package container holds what edged's control loops share about pods in the
// container runtime: the labels edged puts on sandboxes and containers, and
// the runtime-side status of one pod (kubelet's kubecontainer, reduced).
package container

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/edgehive/edgehive/plugins/edged/cri"
)

// Labels and annotations on sandboxes and containers, as the kubelet names them.
const (
	LabelPodName       = "io.kubernetes.pod.name"
	LabelPodNamespace  = "io.kubernetes.pod.namespace"
	LabelPodUID        = "io.kubernetes.pod.uid"
	LabelContainerName = "io.kubernetes.container.name"

	AnnotationContainerHash  = "io.kubernetes.container.hash"
	AnnotationRestartCount   = "io.kubernetes.container.restartCount"
	AnnotationGracePeriod    = "io.kubernetes.pod.terminationGracePeriod"
	AnnotationTerminationMsg = "io.kubernetes.container.terminationMessagePath"
	// AnnotationTerminationMsgPolicy is the container's terminationMessagePolicy.
	AnnotationTerminationMsgPolicy = "io.kubernetes.container.terminationMessagePolicy"
	// AnnotationResources holds the container's requests and limits (JSON)
	// at its creation: what was applied until an in-place resize.
	AnnotationResources = "io.edgehive.container.resources"
)

// PodStatus is what the runtime knows about one pod: its sandboxes and
// containers, newest first.
type PodStatus struct {
	ID        types.UID
	Name      string
	Namespace string
	// IPs of the newest ready sandbox; empty on the host network.
	IPs        []string
	Sandboxes  []*runtimeapi.PodSandboxStatus
	Containers []*ContainerStatus
}

// ContainerStatus is one container instance.
type ContainerStatus struct {
	*runtimeapi.ContainerStatus
	SandboxID    string
	Name         string // the pod spec's container name
	Hash         string
	RestartCount int
	// Resources are the requests and limits applied to this instance (at
	// its creation or by an in-place resize); nil when unknown. Set by the
	// runtime manager, which records them.
	Resources *v1.ResourceRequirements
}

// Running reports whether the container runs.
func (c *ContainerStatus) Running() bool {
	return c.State == runtimeapi.ContainerState_CONTAINER_RUNNING
}

// Exited reports whether the container ran and ended.
func (c *ContainerStatus) Exited() bool {
	return c.State == runtimeapi.ContainerState_CONTAINER_EXITED
}

// FindContainer returns the newest instance of the named container, or nil.
func (s *PodStatus) FindContainer(name string) *ContainerStatus {
	if s == nil {
		return nil
	}
	for _, c := range s.Containers {
		if c.Name == name {
			return c
		}
	}
	return nil
}

// ContainersNamed returns every instance of the named container, newest first.
func (s *PodStatus) ContainersNamed(name string) []*ContainerStatus {
	var out []*ContainerStatus
	if s == nil {
		return nil
	}
	for _, c := range s.Containers {
		if c.Name == name {
			out = append(out, c)
		}
	}
	return out
}

// PodIP returns the first pod IP, or "".
func (s *PodStatus) PodIP() string {
	if s == nil || len(s.IPs) == 0 {
		return ""
	}
	return s.IPs[0]
}

// PodLabels are the labels that tie a sandbox or container to a pod.
func PodLabels(name, namespace string, uid types.UID) map[string]string {
	return map[string]string{LabelPodName: name, LabelPodNamespace: namespace, LabelPodUID: string(uid)}
}

// GetPodStatus asks the runtime for everything it has of pod uid.
func GetPodStatus(ctx context.Context, rt cri.Runtime, uid types.UID, name, namespace string) (*PodStatus, error) {
	sel := map[string]string{LabelPodUID: string(uid)}
	sandboxes, err := rt.ListPodSandbox(ctx, &runtimeapi.PodSandboxFilter{LabelSelector: sel})
	if err != nil {
		return nil, err
	}
	ps := &PodStatus{ID: uid, Name: name, Namespace: namespace}
	sort.Slice(sandboxes, func(i, j int) bool {
		if sandboxes[i].CreatedAt != sandboxes[j].CreatedAt {
			return sandboxes[i].CreatedAt > sandboxes[j].CreatedAt
		}
		return sandboxes[i].GetMetadata().GetAttempt() > sandboxes[j].GetMetadata().GetAttempt()
	})
	for i, sb := range sandboxes {
		st, err := rt.PodSandboxStatus(ctx, sb.Id, false)
		if err != nil {
			if cri.IsNotFound(err) {
				continue
			}
			return nil, err
		}
		s := st.GetStatus()
		ps.Sandboxes = append(ps.Sandboxes, s)
		if ps.Name == "" {
			ps.Name, ps.Namespace = s.GetMetadata().GetName(), s.GetMetadata().GetNamespace()
		}
		if i == 0 && s.State == runtimeapi.PodSandboxState_SANDBOX_READY && s.GetNetwork().GetIp() != "" {
			ps.IPs = append(ps.IPs, s.Network.Ip)
			for _, ip := range s.Network.AdditionalIps {
				ps.IPs = append(ps.IPs, ip.Ip)
			}
		}
	}
	containers, err := rt.ListContainers(ctx, &runtimeapi.ContainerFilter{LabelSelector: sel})
	if err != nil {
		return nil, err
	}
	for _, c := range containers {
		st, err := rt.ContainerStatus(ctx, c.Id, false)
		if err != nil {
			if cri.IsNotFound(err) {
				continue
			}
			return nil, err
		}
		cs := &ContainerStatus{ContainerStatus: st.GetStatus(), SandboxID: c.PodSandboxId}
		cs.Name = c.GetLabels()[LabelContainerName]
		if cs.Name == "" {
			cs.Name = c.GetMetadata().GetName()
		}
		cs.Hash = c.GetAnnotations()[AnnotationContainerHash]
		cs.RestartCount, _ = strconv.Atoi(c.GetAnnotations()[AnnotationRestartCount])
		if cs.Exited() {
			cs.Message = terminationMessage(cs.ContainerStatus, c.GetAnnotations())
		}
		ps.Containers = append(ps.Containers, cs)
	}
	sort.SliceStable(ps.Containers, func(i, j int) bool {
		a, b := ps.Containers[i], ps.Containers[j]
		if a.CreatedAt != b.CreatedAt {
			return a.CreatedAt > b.CreatedAt
		}
		return a.RestartCount > b.RestartCount
	})
	return ps, nil
}

// FullName is the kubelet's name of a pod: name_namespace.
func FullName(name, namespace string) string { return fmt.Sprintf("%s_%s", name, namespace) }

// KeepContainers returns the containers (for their restart counts and last
// states when a new sandbox is made); nil-safe.
func (s *PodStatus) KeepContainers() []*ContainerStatus {
	if s == nil {
		return nil
	}
	return s.Containers
}

// Limits of a termination message, as the kubelet's.
const (
	maxTerminationMessage = 4096
	fallbackLogLines      = 80
	fallbackLogBytes      = 2048
)

// terminationMessage reads what an exited container wrote to its
// terminationMessagePath (the host file mounted there); with
// FallbackToLogsOnError an empty message of a failed container is the tail
// of its log. Without either, the runtime's message stays.
func terminationMessage(st *runtimeapi.ContainerStatus, annotations map[string]string) string {
	path := annotations[AnnotationTerminationMsg]
	msg := ""
	if path != "" {
		for _, m := range st.GetMounts() {
			if m.GetContainerPath() != path {
				continue
			}
			if f, err := os.Open(m.GetHostPath()); err == nil {
				b, _ := io.ReadAll(io.LimitReader(f, maxTerminationMessage))
				f.Close()
				msg = string(b)
			}
		}
	}
	if msg == "" && st.GetExitCode() != 0 && annotations[AnnotationTerminationMsgPolicy] == "FallbackToLogsOnError" {
		msg = logTail(st.GetLogPath(), fallbackLogLines, fallbackLogBytes)
	}
	if msg == "" {
		return st.GetMessage()
	}
	return msg
}

// logTail returns the last lines (at most maxBytes) of the messages of a CRI
// log file ("<time> <stream> <P|F> <message>" per line; P lines are partial).
func logTail(path string, lines, maxBytes int) string {
	if path == "" {
		return ""
	}
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	const window = 64 << 10
	if fi, err := f.Stat(); err == nil && fi.Size() > window {
		_, _ = f.Seek(fi.Size()-window, io.SeekStart)
	}
	data, _ := io.ReadAll(f)
	// As the kubelet reads it: a full (F) line's message ends with a
	// newline, a partial (P) one does not, so output cut off without a
	// newline ("echo -n") comes back as it was written.
	var text strings.Builder
	for _, line := range strings.Split(string(data), "\n") {
		parts := strings.SplitN(line, " ", 4)
		if len(parts) < 4 {
			continue
		}
		text.WriteString(parts[3])
		if parts[2] != "P" {
			text.WriteByte('\n')
		}
	}
	out := text.String()
	// The last lines: count newlines back from the end (a trailing
	// newline ends the last line, it does not start another).
	cut, seen := 0, 0
	for i := len(out) - 1; i >= 0; i-- {
		if out[i] == '\n' && i != len(out)-1 {
			seen++
			if seen == lines {
				cut = i + 1
				break
			}
		}
	}
	out = out[cut:]
	if len(out) > maxBytes {
		out = out[len(out)-maxBytes:]
	}
	return out
}

// LogFile is the newest "<restart>.log" of a container, or the one before it.
func LogFile(dir string, previous bool) (string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return "", fmt.Errorf("no logs for this container: %w", err)
	}
	var restarts []int
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), ".log")
		if !ok {
			continue
		}
		if n, err := strconv.Atoi(name); err == nil {
			restarts = append(restarts, n)
		}
	}
	sort.Ints(restarts)
	idx := len(restarts) - 1
	if previous {
		idx--
	}
	if idx < 0 {
		if previous {
			return "", errors.New("no previous instance of this container")
		}
		return "", errors.New("no logs for this container")
	}
	return filepath.Join(dir, strconv.Itoa(restarts[idx])+".log"), nil
}

// InSpec reports whether the pod's spec has a container (app, init or
// ephemeral) of that name.
func InSpec(pod *v1.Pod, name string) bool {
	for _, c := range pod.Spec.Containers {
		if c.Name == name {
			return true
		}
	}
	for _, c := range pod.Spec.InitContainers {
		if c.Name == name {
			return true
		}
	}
	for _, c := range pod.Spec.EphemeralContainers {
		if c.Name == name {
			return true
		}
	}
	return false
}

// IsSidecar says whether an init container is a sidecar: restartPolicy
// Always makes it start with the other init containers and keep running
// beside the app containers.
func IsSidecar(c *v1.Container) bool {
	return c.RestartPolicy != nil && *c.RestartPolicy == v1.ContainerRestartPolicyAlways
}

// FindSpec returns the container or init container of pod named name.
func FindSpec(pod *v1.Pod, name string) *v1.Container {
	for i := range pod.Spec.Containers {
		if pod.Spec.Containers[i].Name == name {
			return &pod.Spec.Containers[i]
		}
	}
	for i := range pod.Spec.InitContainers {
		if pod.Spec.InitContainers[i].Name == name {
			return &pod.Spec.InitContainers[i]
		}
	}
	return nil
}
