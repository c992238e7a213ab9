//go:build e2e

package e2eenv

import (
	"bytes"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// KubectlPath is the kubectl hack/kube.sh builds (`hack/kube.sh kubectl`).
func KubectlPath() string { return filepath.Join(KubeBinDir(), "kubectl") }

// DeadProxyEnv points HTTP(S)_PROXY (both spellings) at the closed local
// port, so a client process that tried to reach anything but loopback and
// noProxy would get nowhere; Go never proxies loopback.
func DeadProxyEnv(noProxy ...string) []string {
	no := strings.Join(append([]string{"127.0.0.1", "localhost"}, noProxy...), ",")
	return []string{
		"HTTP_PROXY=" + ContainerdProxy, "HTTPS_PROXY=" + ContainerdProxy,
		"http_proxy=" + ContainerdProxy, "https_proxy=" + ContainerdProxy,
		"NO_PROXY=" + no, "no_proxy=" + no,
	}
}

// Kubectl runs the real kubectl against a cluster as its admin user.
type Kubectl struct {
	Path       string
	Kubeconfig string
	// CacheDir is kubectl's discovery cache, private to the test.
	CacheDir string
	// Env is set on top of the test's environment and the dead proxy.
	Env []string
}

// Kubectl is kubectl for the cluster's admin kubeconfig. It fails the test
// when hack/kube.sh has not built kubectl.
func (c *Cluster) Kubectl(t testing.TB) *Kubectl {
	t.Helper()
	path := KubectlPath()
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("kubectl not found (build it with hack/kube.sh kubectl): %v", err)
	}
	return &Kubectl{Path: path, Kubeconfig: c.Kubeconfig, CacheDir: t.TempDir()}
}

// With is a copy of k that adds env (e.g. KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false).
func (k *Kubectl) With(env ...string) *Kubectl {
	c := *k
	c.Env = append(append([]string(nil), k.Env...), env...)
	return &c
}

// Command is `kubectl --kubeconfig K --cache-dir D ARGS...`, killed when ctx
// ends. The environment has no KUBECONFIG of the caller's and proxies that
// lead nowhere.
func (k *Kubectl) Command(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, k.Path, append([]string{"--kubeconfig=" + k.Kubeconfig, "--cache-dir=" + k.CacheDir}, args...)...)
	var env []string
	for _, v := range os.Environ() {
		name, _, _ := strings.Cut(v, "=")
		switch strings.ToUpper(name) {
		case "KUBECONFIG", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY",
			"KUBECTL_REMOTE_COMMAND_WEBSOCKETS", "KUBECTL_PORT_FORWARD_WEBSOCKETS":
			continue
		}
		env = append(env, v)
	}
	cmd.Env = append(append(env, DeadProxyEnv()...), k.Env...)
	return cmd
}

// Run runs kubectl to the end with stdin (nil: none) and returns what it
// wrote to stdout and stderr; err is an *exec.ExitError when it failed.
func (k *Kubectl) Run(ctx context.Context, stdin io.Reader, args ...string) (stdout, stderr string, err error) {
	cmd := k.Command(ctx, args...)
	var o, e bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, &o, &e
	err = cmd.Run()
	return o.String(), e.String(), err
}
