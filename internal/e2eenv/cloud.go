//go:build e2e

package e2eenv

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// BinDir is where `make build` puts edgehive and cloudhive: $EDGEHIVE_BIN,
// else bin/ at the module root found from the working directory.
func BinDir(t testing.TB) string {
	t.Helper()
	if d := os.Getenv("EDGEHIVE_BIN"); d != "" {
		return d
	}
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return filepath.Join(dir, "bin")
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the working directory; set EDGEHIVE_BIN")
		}
		dir = parent
	}
}

// CloudhiveConfig is what StartCloudhive writes into cloudhive's HCL file.
// Empty addresses get free loopback ports.
type CloudhiveConfig struct {
	Kubeconfig      string
	Namespace       string // default "kubeedge"
	Listen          string // cloudhub websocket, 127.0.0.1:PORT
	BootstrapListen string // certificate service, 127.0.0.1:PORT
	AdminListen     string // /healthz
	ReusePort       bool   // several replicas on one address
	// ExtraHCL is appended to the file (more blocks, e.g. tunnel { }).
	ExtraHCL string
}

// HCL renders the config file.
func (c CloudhiveConfig) HCL() string {
	var b strings.Builder
	fmt.Fprintf(&b, "# written by internal/e2eenv\nkubeconfig = %q\nnamespace  = %q\n\n", c.Kubeconfig, c.Namespace)
	fmt.Fprintf(&b, "cloudhub {\n  listen              = %q\n  bootstrap_listen    = %q\n", c.Listen, c.BootstrapListen)
	b.WriteString("  advertise_addresses = [\"127.0.0.1\"]\n  dns_names           = [\"localhost\"]\n")
	fmt.Fprintf(&b, "  reuse_port          = %t\n}\n\nadmin {\n  listen = %q\n}\n", c.ReusePort, c.AdminListen)
	if c.ExtraHCL != "" {
		b.WriteString("\n" + c.ExtraHCL + "\n")
	}
	return b.String()
}

// Cloudhive is a running `cloudhive run -config FILE`.
type Cloudhive struct {
	*Process
	Config     CloudhiveConfig
	ConfigFile string
	Bin        string
}

// CloudPort is the cloudhub websocket port.
func (c *Cloudhive) CloudPort() int { return portOf(c.Config.Listen) }

// BootstrapPort is the certificate service's port.
func (c *Cloudhive) BootstrapPort() int { return portOf(c.Config.BootstrapListen) }

func portOf(addr string) int {
	i := strings.LastIndexByte(addr, ':')
	p, _ := strconv.Atoi(addr[i+1:])
	return p
}

// EnsureNamespace creates ns when missing (keadm init does this for
// cloudcore's kubeedge namespace).
func EnsureNamespace(ctx context.Context, client kubernetes.Interface, ns string) error {
	_, err := client.CoreV1().Namespaces().Create(ctx, &v1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("namespace %s: %w", ns, err)
	}
	return nil
}

// StartCloudhive writes cfg (free ports filled in) and starts
// binDir/cloudhive run -config FILE; it waits for /healthz on the admin
// address. Name tells replicas apart in logs.
func StartCloudhive(t testing.TB, binDir, name string, cfg CloudhiveConfig) *Cloudhive {
	t.Helper()
	if cfg.Namespace == "" {
		cfg.Namespace = "kubeedge"
	}
	for _, a := range []*string{&cfg.Listen, &cfg.BootstrapListen, &cfg.AdminListen} {
		if *a == "" {
			*a = fmt.Sprintf("127.0.0.1:%d", FreePort(t))
		}
	}
	dir := t.TempDir()
	c := &Cloudhive{Config: cfg, ConfigFile: filepath.Join(dir, name+".hcl"), Bin: filepath.Join(binDir, "cloudhive")}
	if err := os.WriteFile(c.ConfigFile, []byte(cfg.HCL()), 0o644); err != nil {
		t.Fatal(err)
	}
	c.Process = StartProcess(t, ProcessSpec{Name: name, Path: c.Bin, Args: []string{"run", "-config", c.ConfigFile}, LogDir: dir})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := c.WaitHealthy(ctx); err != nil {
		t.Fatalf("cloudhive %s: %v", name, err)
	}
	return c
}

// WaitHealthy waits for the admin /healthz to answer 200.
func (c *Cloudhive) WaitHealthy(ctx context.Context) error {
	return waitHTTP(ctx, &http.Client{Timeout: 2 * time.Second}, "http://"+c.Config.AdminListen+"/healthz", c.Process)
}

// Restart starts cloudhive again (after Stop or Kill) and waits until healthy.
func (c *Cloudhive) Restart(t testing.TB) {
	t.Helper()
	c.Process.Restart()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := c.WaitHealthy(ctx); err != nil {
		t.Fatalf("cloudhive %s after restart: %v", c.Name, err)
	}
}

// Token runs `cloudhive token -config FILE` and returns the join token.
func (c *Cloudhive) Token(ctx context.Context) (string, error) {
	out, err := RunCommand(ctx, nil, c.Bin, "token", "-config", c.ConfigFile)
	if err != nil {
		return "", err
	}
	tok := strings.TrimSpace(out)
	if tok == "" || strings.ContainsAny(tok, " \n") {
		return "", fmt.Errorf("cloudhive token printed %q, want one token", out)
	}
	return tok, nil
}
