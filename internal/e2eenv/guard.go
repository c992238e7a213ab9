//go:build e2e

package e2eenv

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Guard-rail defaults (DESIGN.md §6). The pod CIDR is hack/containerd.sh's
// CNI subnet; the service CIDR is what StartCluster gives kube-apiserver.
const (
	DefaultPodCIDR     = "10.88.77.0/24"
	DefaultServiceCIDR = "10.96.77.0/24"
	// ContainerdProxy is the closed local port the test containerd's
	// HTTP(S)_PROXY points at, so no image pull can leave the machine.
	ContainerdProxy = "http://127.0.0.1:9"
)

// PodCIDR is the test containerd's pod subnet ($EDGEHIVE_CNI_SUBNET, as in
// hack/containerd.sh).
func PodCIDR() string {
	if s := os.Getenv("EDGEHIVE_CNI_SUBNET"); s != "" {
		return s
	}
	return DefaultPodCIDR
}

const hostsFile = "/etc/hosts"

// hostsMu serialises this process's edits of /etc/hosts.
var hostsMu sync.Mutex

// ResolveToLoopback makes name resolve to 127.0.0.1 for the test: the API
// server reaches a node by its Hostname address, and an unknown name would
// be asked of the system's DNS server, off this machine. It adds one line to
// /etc/hosts (written in place: in containers it is often a bind mount) and
// removes exactly that line at cleanup. It fails the test when name does not
// then resolve to loopback only.
func ResolveToLoopback(t testing.TB, name string) {
	t.Helper()
	line := fmt.Sprintf("127.0.0.1 %s # edgehive-e2e pid %d %d", name, os.Getpid(), time.Now().UnixNano())
	hostsMu.Lock()
	err := editHosts(func(lines []string) []string { return append(lines, line) })
	hostsMu.Unlock()
	if err != nil {
		t.Fatalf("guard rail: add %q to %s: %v", name, hostsFile, err)
	}
	t.Cleanup(func() {
		hostsMu.Lock()
		defer hostsMu.Unlock()
		if err := editHosts(func(lines []string) []string {
			return slices.DeleteFunc(lines, func(l string) bool { return l == line })
		}); err != nil {
			t.Errorf("guard rail: remove %q from %s: %v", name, hostsFile, err)
		}
	})
	// Checked by reading the files, never by a lookup: a lookup that missed
	// /etc/hosts would ask the DNS server, the very thing this prevents
	// (and Go's resolver caches /etc/hosts for seconds).
	if err := checkResolvesToLoopback(name, line); err != nil {
		t.Fatalf("guard rail: %v", err)
	}
}

// checkResolvesToLoopback checks that /etc/hosts has line and no other
// address for name, and that the system resolver reads files before DNS.
func checkResolvesToLoopback(name, line string) error {
	b, err := os.ReadFile(hostsFile)
	if err != nil {
		return err
	}
	found := false
	for _, l := range strings.Split(string(b), "\n") {
		if l == line {
			found = true
			continue
		}
		fields := strings.Fields(strings.SplitN(l, "#", 2)[0])
		if len(fields) < 2 || !slices.Contains(fields[1:], name) {
			continue
		}
		if ip := net.ParseIP(fields[0]); ip == nil || !ip.IsLoopback() {
			return fmt.Errorf("%s maps %s to %s as well", hostsFile, name, fields[0])
		}
	}
	if !found {
		return fmt.Errorf("%s lacks the line added for %s", hostsFile, name)
	}
	ns, err := os.ReadFile("/etc/nsswitch.conf")
	if err != nil {
		return nil // no NSS config: glibc and Go read files first
	}
	for _, l := range strings.Split(string(ns), "\n") {
		fields := strings.Fields(strings.SplitN(l, "#", 2)[0])
		if len(fields) == 0 || fields[0] != "hosts:" {
			continue
		}
		for _, src := range fields[1:] {
			if src == "files" {
				return nil
			}
			if strings.HasPrefix(src, "dns") || strings.HasPrefix(src, "resolve") {
				return fmt.Errorf("/etc/nsswitch.conf asks %s before files for host names", src)
			}
		}
		return fmt.Errorf("/etc/nsswitch.conf does not read files for host names: %q", l)
	}
	return nil
}

func editHosts(edit func([]string) []string) error {
	b, err := os.ReadFile(hostsFile)
	if err != nil {
		return err
	}
	text := strings.TrimRight(string(b), "\n")
	var lines []string
	if text != "" {
		lines = strings.Split(text, "\n")
	}
	lines = edit(lines)
	out := strings.Join(lines, "\n") + "\n"
	f, err := os.OpenFile(hostsFile, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(out); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// ExternalInterfaces are the interfaces of the default routes (IPv4), read
// from /proc/net/route.
func ExternalInterfaces() ([]string, error) {
	f, err := os.Open("/proc/net/route")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	sc.Scan() // header
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 8 && fields[1] == "00000000" && fields[7] == "00000000" && !slices.Contains(out, fields[0]) {
			out = append(out, fields[0])
		}
	}
	return out, sc.Err()
}

// iptablesMu serialises this process's rule edits.
var iptablesMu sync.Mutex

// RejectLeaving adds iptables rules that reject any packet from or to the
// given CIDRs (pods, services) leaving by an external interface, in OUTPUT
// and FORWARD, and removes exactly those rules at cleanup. Each rule carries
// a comment naming this test process, so the removal matches only them.
// Without iptables the test fails: running without the guard rail would let
// traffic leave the machine.
func RejectLeaving(t testing.TB, cidrs ...string) {
	t.Helper()
	ipt, err := exec.LookPath("iptables")
	if err != nil {
		t.Fatalf("guard rail: iptables not found (install it: hack/setup.sh): %v", err)
	}
	ifaces, err := ExternalInterfaces()
	if err != nil {
		t.Fatalf("guard rail: external interfaces: %v", err)
	}
	if len(ifaces) == 0 {
		t.Logf("guard rail: no default route, so nothing can leave by an external interface; no iptables rules needed")
		return
	}
	tag := fmt.Sprintf("edgehive-e2e-%d-%d", os.Getpid(), time.Now().UnixNano())
	var rules [][]string
	for _, ifc := range ifaces {
		for _, c := range cidrs {
			for _, chain := range []string{"OUTPUT", "FORWARD"} {
				for _, dir := range []string{"-s", "-d"} {
					rules = append(rules, []string{chain, dir, c, "-o", ifc,
						"-m", "comment", "--comment", tag, "-j", "REJECT"})
				}
			}
		}
	}
	iptablesMu.Lock()
	defer iptablesMu.Unlock()
	var added [][]string
	remove := func() {
		for _, r := range added {
			args := append([]string{"-w", "5", "-D"}, r...)
			if out, err := exec.Command(ipt, args...).CombinedOutput(); err != nil {
				t.Errorf("guard rail: iptables %s: %v: %s", strings.Join(args, " "), err, out)
			}
		}
		added = nil
	}
	for _, r := range rules {
		args := append([]string{"-w", "5", "-I"}, r...)
		if out, err := exec.Command(ipt, args...).CombinedOutput(); err != nil {
			remove()
			t.Fatalf("guard rail: iptables %s: %v: %s", strings.Join(args, " "), err, out)
		}
		added = append(added, r)
	}
	t.Logf("guard rail: %d iptables rules (%s) reject %v leaving by %v", len(added), tag, cidrs, ifaces)
	t.Cleanup(func() {
		iptablesMu.Lock()
		defer iptablesMu.Unlock()
		remove()
	})
}

// IptablesRules lists the current rules of chain that carry substr (for the
// harness's own test: the guard rails are in place, then gone).
func IptablesRules(chain, substr string) ([]string, error) {
	out, err := exec.Command("iptables", "-w", "5", "-S", chain).CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("iptables -S %s: %w: %s", chain, err, out)
	}
	var rules []string
	for _, l := range strings.Split(string(out), "\n") {
		if strings.Contains(l, substr) {
			rules = append(rules, l)
		}
	}
	return rules, nil
}

// CheckContainerdProxy fails the test unless the containerd with this pid
// file runs with HTTPS_PROXY and HTTP_PROXY pointing at the closed local
// port (hack/containerd.sh starts it that way).
func CheckContainerdProxy(t testing.TB, pidFile string) {
	t.Helper()
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatalf("guard rail: containerd pid file: %v", err)
	}
	pid := strings.TrimSpace(string(b))
	env, err := os.ReadFile("/proc/" + pid + "/environ")
	if err != nil {
		t.Fatalf("guard rail: environment of containerd pid %s: %v", pid, err)
	}
	vars := strings.Split(string(env), "\x00")
	for _, want := range []string{"HTTPS_PROXY=" + ContainerdProxy, "HTTP_PROXY=" + ContainerdProxy} {
		if !slices.Contains(vars, want) {
			t.Fatalf("guard rail: containerd (pid %s) runs without %s; start it with hack/containerd.sh", pid, want)
		}
	}
	for _, v := range vars {
		if strings.HasPrefix(strings.ToUpper(v), "NO_PROXY=") {
			t.Fatalf("guard rail: containerd (pid %s) has %s set", pid, v)
		}
	}
	// The pid must be alive, or the check proved nothing.
	n, err := strconv.Atoi(pid)
	if err != nil {
		t.Fatalf("guard rail: bad containerd pid %q: %v", pid, err)
	}
	if err := syscall.Kill(n, 0); err != nil {
		t.Fatalf("guard rail: containerd pid %d: %v", n, err)
	}
}
