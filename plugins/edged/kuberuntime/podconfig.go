package kuberuntime

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	v1 "k8s.io/api/core/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Kubelet constants for cgroup resources.
const (
	minShares     = 2
	sharesPerCPU  = 1024
	quotaPeriodUs = 100000
	minQuotaUs    = 1000
)

// PodDir is where edged keeps a pod's files (etc-hosts, termination logs).
func (m *Manager) PodDir(pod *v1.Pod) string {
	return filepath.Join(m.cfg.PodLogsRoot, string(pod.UID))
}

// podMounts are the mounts the kubelet adds to every container: the
// termination message file and, unless the container mounts its own, the
// kubelet-managed /etc/hosts.
func (m *Manager) podMounts(pod *v1.Pod, c *v1.Container, podIP string, restartCount int) ([]*runtimeapi.Mount, error) {
	var out []*runtimeapi.Mount
	if m.cfg.PodLogsRoot == "" {
		return nil, nil // no place for pod files (unit tests)
	}
	mountsPath := func(p string) bool {
		for _, vm := range c.VolumeMounts {
			if filepath.Clean(vm.MountPath) == p {
				return true
			}
		}
		return false
	}
	if p := c.TerminationMessagePath; p != "" && !mountsPath(filepath.Clean(p)) {
		dir := filepath.Join(m.PodDir(pod), "containers", c.Name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
		// One file per instance: the previous one stays readable for lastState.
		host := filepath.Join(dir, "termination-log-"+strconv.Itoa(restartCount))
		if err := os.WriteFile(host, nil, 0o666); err != nil {
			return nil, err
		}
		_ = os.Chmod(host, 0o666) // any container user may write it (umask aside)
		out = append(out, &runtimeapi.Mount{ContainerPath: p, HostPath: host})
	}
	if !mountsPath("/etc/hosts") {
		host, err := m.ensureHostsFile(pod, podIP)
		if err != nil {
			return nil, err
		}
		if host != "" {
			out = append(out, &runtimeapi.Mount{ContainerPath: "/etc/hosts", HostPath: host})
		}
	}
	return out, nil
}

// ensureHostsFile writes the pod's /etc/hosts: for a pod network the
// kubelet's localhost lines and the pod's IP with its hostname; on the host
// network the node's /etc/hosts. hostAliases are appended to both.
func (m *Manager) ensureHostsFile(pod *v1.Pod, podIP string) (string, error) {
	var b bytes.Buffer
	b.WriteString("# Kubernetes-managed hosts file.\n")
	if pod.Spec.HostNetwork {
		src := m.cfg.HostsFile
		if src == "" {
			src = "/etc/hosts"
		}
		data, err := os.ReadFile(src)
		if err != nil && !os.IsNotExist(err) {
			return "", err
		}
		b.Reset()
		b.WriteString("# Kubernetes-managed hosts file (host network).\n")
		b.Write(data)
		if len(data) > 0 && data[len(data)-1] != '\n' {
			b.WriteByte('\n')
		}
	} else {
		b.WriteString("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n")
		b.WriteString("fe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n")
		if podIP != "" {
			hostname := podHostname(pod)
			if pod.Spec.Subdomain != "" {
				fmt.Fprintf(&b, "%s\t%s.%s.%s.svc.%s\t%s\n", podIP, hostname, pod.Spec.Subdomain, pod.Namespace, m.cfg.ClusterDomain, hostname)
			} else {
				fmt.Fprintf(&b, "%s\t%s\n", podIP, hostname)
			}
		}
	}
	if len(pod.Spec.HostAliases) > 0 {
		b.WriteString("\n# Entries added by HostAliases.\n")
		for _, ha := range pod.Spec.HostAliases {
			fmt.Fprintf(&b, "%s\t%s\n", ha.IP, strings.Join(ha.Hostnames, "\t"))
		}
	}
	dir := m.PodDir(pod)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	p := filepath.Join(dir, "etc-hosts")
	if old, err := os.ReadFile(p); err == nil && bytes.Equal(old, b.Bytes()) {
		return p, nil
	}
	// Rewritten in place (not renamed): running containers bind-mount this inode.
	if err := os.WriteFile(p, b.Bytes(), 0o644); err != nil {
		return "", err
	}
	return p, nil
}

// linuxResources maps the container's requests and limits to cgroup values.
func linuxResources(c *v1.Container) *runtimeapi.LinuxContainerResources {
	r := &runtimeapi.LinuxContainerResources{}
	cpuReq, hasReq := c.Resources.Requests[v1.ResourceCPU]
	cpuLim, hasLim := c.Resources.Limits[v1.ResourceCPU]
	if !hasReq && hasLim {
		cpuReq, hasReq = cpuLim, true
	}
	shares := int64(minShares)
	if hasReq {
		shares = max(cpuReq.MilliValue()*sharesPerCPU/1000, minShares)
	}
	r.CpuShares = shares
	if hasLim && !cpuLim.IsZero() {
		r.CpuPeriod = quotaPeriodUs
		r.CpuQuota = max(cpuLim.MilliValue()*quotaPeriodUs/1000, minQuotaUs)
	}
	if mem, ok := c.Resources.Limits[v1.ResourceMemory]; ok && !mem.IsZero() {
		r.MemoryLimitInBytes = mem.Value()
	}
	return r
}

// securityContext merges the pod's and the container's security contexts
// (the container's wins) into CRI's.
func securityContext(pod *v1.Pod, c *v1.Container) *runtimeapi.LinuxContainerSecurityContext {
	sc := &runtimeapi.LinuxContainerSecurityContext{NamespaceOptions: namespaces(pod)}
	psc := pod.Spec.SecurityContext
	if psc == nil {
		psc = &v1.PodSecurityContext{}
	}
	csc := c.SecurityContext
	if csc == nil {
		csc = &v1.SecurityContext{}
	}
	if u := firstInt64(csc.RunAsUser, psc.RunAsUser); u != nil {
		sc.RunAsUser = &runtimeapi.Int64Value{Value: *u}
	}
	if g := firstInt64(csc.RunAsGroup, psc.RunAsGroup); g != nil {
		sc.RunAsGroup = &runtimeapi.Int64Value{Value: *g}
	}
	if psc.FSGroup != nil {
		sc.SupplementalGroups = append(sc.SupplementalGroups, *psc.FSGroup)
	}
	sc.SupplementalGroups = append(sc.SupplementalGroups, psc.SupplementalGroups...)
	if csc.ReadOnlyRootFilesystem != nil {
		sc.ReadonlyRootfs = *csc.ReadOnlyRootFilesystem
	}
	if csc.Privileged != nil {
		sc.Privileged = *csc.Privileged
	}
	if csc.AllowPrivilegeEscalation != nil {
		sc.NoNewPrivs = !*csc.AllowPrivilegeEscalation
	}
	if caps := csc.Capabilities; caps != nil {
		sc.Capabilities = &runtimeapi.Capability{}
		for _, a := range caps.Add {
			sc.Capabilities.AddCapabilities = append(sc.Capabilities.AddCapabilities, string(a))
		}
		for _, d := range caps.Drop {
			sc.Capabilities.DropCapabilities = append(sc.Capabilities.DropCapabilities, string(d))
		}
	}
	if !sc.Privileged {
		// The kubelet's default masked and read-only /proc paths.
		sc.MaskedPaths = []string{"/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
			"/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap"}
		sc.ReadonlyPaths = []string{"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"}
	}
	return sc
}

// runAsNonRootCheck refuses a container that must not run as root but
// would: its runAsUser is 0, or without one its image's user is root or a
// name that cannot be checked (the kubelet's rules). imageUser reads the
// image's user (uid, or the user name when it is not numeric).
func runAsNonRootCheck(pod *v1.Pod, c *v1.Container, imageUser func() (*int64, string, error)) error {
	var nonRoot *bool
	var uid *int64
	if psc := pod.Spec.SecurityContext; psc != nil {
		nonRoot, uid = psc.RunAsNonRoot, psc.RunAsUser
	}
	if csc := c.SecurityContext; csc != nil {
		if csc.RunAsNonRoot != nil {
			nonRoot = csc.RunAsNonRoot
		}
		if csc.RunAsUser != nil {
			uid = csc.RunAsUser
		}
	}
	if nonRoot == nil || !*nonRoot {
		return nil
	}
	if uid != nil {
		if *uid == 0 {
			return configErr("container's runAsUser breaks non-root policy")
		}
		return nil
	}
	if imageUser == nil {
		return configErr("container has runAsNonRoot and its image's user is unknown")
	}
	imgUID, name, err := imageUser()
	if err != nil {
		return configErr("container has runAsNonRoot and its image's user cannot be read: %v", err)
	}
	switch {
	case imgUID != nil && *imgUID != 0:
		return nil
	case name != "":
		return configErr("container has runAsNonRoot and image has non-numeric user (%s), cannot verify user is non-root", name)
	}
	return configErr("container has runAsNonRoot and image will run as root")
}

// oomScoreAdj is the kubelet's OOM score by QoS class: guaranteed pods are
// killed last, best-effort first, burstable by their memory request.
func oomScoreAdj(pod *v1.Pod, c *v1.Container, qos v1.PodQOSClass, nodeMemory int64) int64 {
	switch qos {
	case v1.PodQOSGuaranteed:
		return -997
	case v1.PodQOSBestEffort:
		return 1000
	}
	req := c.Resources.Requests.Memory().Value()
	if nodeMemory <= 0 {
		return 999
	}
	adj := 1000 - (1000*req)/nodeMemory
	return min(max(adj, 2), 999)
}

func firstInt64(vs ...*int64) *int64 {
	for _, v := range vs {
		if v != nil {
			return v
		}
	}
	return nil
}

// sandboxSecurity is the sandbox's share of the pod security context and sysctls.
func sandboxSecurity(pod *v1.Pod, cfg *runtimeapi.PodSandboxConfig) {
	psc := pod.Spec.SecurityContext
	sc := cfg.Linux.SecurityContext
	if psc != nil {
		if psc.RunAsUser != nil {
			sc.RunAsUser = &runtimeapi.Int64Value{Value: *psc.RunAsUser}
		}
		if psc.RunAsGroup != nil {
			sc.RunAsGroup = &runtimeapi.Int64Value{Value: *psc.RunAsGroup}
		}
		if psc.FSGroup != nil {
			sc.SupplementalGroups = append(sc.SupplementalGroups, *psc.FSGroup)
		}
		sc.SupplementalGroups = append(sc.SupplementalGroups, psc.SupplementalGroups...)
		if len(psc.Sysctls) > 0 {
			cfg.Linux.Sysctls = map[string]string{}
			for _, s := range psc.Sysctls {
				cfg.Linux.Sysctls[s.Name] = s.Value
			}
		}
	}
}

// dockerConfig is the content of a kubernetes.io/dockerconfigjson secret.
type dockerConfig struct {
	Auths map[string]struct {
		Username string `json:"username"`
		Password string `json:"password"`
		Auth     string `json:"auth"`
	} `json:"auths"`
}

// registryOf is the registry host of an image reference.
func registryOf(image string) string {
	i := strings.IndexByte(image, '/')
	if i < 0 {
		return "docker.io"
	}
	first := image[:i]
	if strings.ContainsAny(first, ".:") || first == "localhost" {
		return first
	}
	return "docker.io"
}

// pullAuth finds credentials for image in the pod's imagePullSecrets.
func (m *Manager) pullAuth(ctx context.Context, pod *v1.Pod, image string) *runtimeapi.AuthConfig {
	if m.Fetch == nil || pod == nil {
		return nil
	}
	reg := registryOf(image)
	for _, ref := range pod.Spec.ImagePullSecrets {
		data, err := m.Fetch(ctx, KindSecret, pod.Namespace, ref.Name)
		if err != nil {
			m.log.Warn("image pull secret", "pod", pod.Namespace+"/"+pod.Name, "secret", ref.Name, "error", err)
			continue
		}
		raw := data[v1.DockerConfigJsonKey]
		var cfg dockerConfig
		if len(raw) > 0 {
			if err := json.Unmarshal(raw, &cfg); err != nil {
				continue
			}
		} else if legacy := data[v1.DockerConfigKey]; len(legacy) > 0 {
			if err := json.Unmarshal(legacy, &cfg.Auths); err != nil {
				continue
			}
		}
		for server, a := range cfg.Auths {
			host := strings.TrimPrefix(strings.TrimPrefix(server, "https://"), "http://")
			host = strings.SplitN(host, "/", 2)[0]
			if host == "index.docker.io" {
				host = "docker.io"
			}
			if host != reg {
				continue
			}
			auth := &runtimeapi.AuthConfig{Username: a.Username, Password: a.Password, ServerAddress: server}
			if a.Auth != "" && a.Username == "" {
				if dec, err := base64.StdEncoding.DecodeString(a.Auth); err == nil {
					if u, p, ok := strings.Cut(string(dec), ":"); ok {
						auth.Username, auth.Password = u, p
					}
				}
			}
			return auth
		}
	}
	return nil
}

// maxHostnameLen is the longest hostname the kernel's UTS namespace takes.
const maxHostnameLen = 63

// podHostname is spec.hostname, or the pod's name cut to 63 characters
// without a trailing '-' or '.', as the kubelet does: pod names may be
// longer than a hostname can be.
func podHostname(pod *v1.Pod) string {
	name := pod.Name
	if pod.Spec.Hostname != "" {
		name = pod.Spec.Hostname
	}
	if len(name) <= maxHostnameLen {
		return name
	}
	return strings.TrimRight(name[:maxHostnameLen], "-.")
}
