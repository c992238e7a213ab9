//go:build e2e

package e2eenv

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// KubeVersion is the Kubernetes release hack/kube.sh builds.
const KubeVersion = "v1.37.2"

// ClusterOptions shape StartCluster. The zero value is the default.
type ClusterOptions struct {
	// ServiceCIDR is kube-apiserver's --service-cluster-ip-range; default
	// DefaultServiceCIDR. The guard rails reject it leaving the machine.
	ServiceCIDR string
	// PodCIDR is rejected leaving the machine too; default PodCIDR().
	PodCIDR string
	// ExtraAPIServerArgs are appended to kube-apiserver's flags.
	ExtraAPIServerArgs []string
	// NoGuardRails leaves out the iptables rules (the caller adds them).
	NoGuardRails bool
	// ServiceAccountAdmission keeps kube-apiserver's ServiceAccount
	// admission plugin on; only for a cluster that runs
	// kube-controller-manager (its token controller) with SAKeyFile.
	ServiceAccountAdmission bool
}

// Cluster is a running etcd and kube-apiserver on loopback.
type Cluster struct {
	Dir         string // temp dir with pki/, etcd data, logs
	URL         string // https://127.0.0.1:PORT
	Kubeconfig  string // admin kubeconfig (system:masters)
	CA          *CA    // signs the serving, admin and kubelet-client certs
	Admin       CertFiles
	Config      *rest.Config
	Client      kubernetes.Interface
	Etcd        *Process
	APIServer   *Process
	ServiceCIDR string
	PodCIDR     string
	// SAKeyFile signs service account tokens (kube-apiserver's
	// --service-account-signing-key-file), for kube-controller-manager.
	SAKeyFile string
}

// KubeBinDir is where hack/kube.sh caches the Kubernetes binaries:
// $KUBE_BIN_DIR, else ${EDGEHIVE_CACHE:-$HOME/.cache/edgehive}/kubernetes-VERSION/bin.
func KubeBinDir() string {
	if d := os.Getenv("KUBE_BIN_DIR"); d != "" {
		return d
	}
	cache := os.Getenv("EDGEHIVE_CACHE")
	if cache == "" {
		home, _ := os.UserHomeDir()
		cache = filepath.Join(home, ".cache", "edgehive")
	}
	return filepath.Join(cache, "kubernetes-"+KubeVersion, "bin")
}

// FreePort returns a loopback TCP port that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// StartCluster starts etcd (Debian's etcd-server) and kube-apiserver (from
// KubeBinDir) on 127.0.0.1 with a fresh PKI, writes an admin kubeconfig and
// waits for /readyz. The guard rails go up first and come down last.
func StartCluster(t testing.TB, opts ClusterOptions) *Cluster {
	t.Helper()
	if opts.ServiceCIDR == "" {
		opts.ServiceCIDR = DefaultServiceCIDR
	}
	if opts.PodCIDR == "" {
		opts.PodCIDR = PodCIDR()
	}
	etcdBin, err := exec.LookPath("etcd")
	if err != nil {
		t.Fatalf("etcd not found (Debian etcd-server; hack/setup.sh installs it): %v", err)
	}
	apiserverBin := filepath.Join(KubeBinDir(), "kube-apiserver")
	if _, err := os.Stat(apiserverBin); err != nil {
		t.Fatalf("kube-apiserver not found (build it with hack/kube.sh): %v", err)
	}
	if !opts.NoGuardRails {
		RejectLeaving(t, opts.PodCIDR, opts.ServiceCIDR)
	}
	dir := t.TempDir()
	c := &Cluster{Dir: dir, ServiceCIDR: opts.ServiceCIDR, PodCIDR: opts.PodCIDR}
	pki := filepath.Join(dir, "pki")
	logs := filepath.Join(dir, "logs")
	for _, d := range []string{pki, logs} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}

	// etcd: client and peer on loopback, no metrics listener.
	clientPort, peerPort := FreePort(t), FreePort(t)
	etcdURL := fmt.Sprintf("http://127.0.0.1:%d", clientPort)
	peerURL := fmt.Sprintf("http://127.0.0.1:%d", peerPort)
	c.Etcd = StartProcess(t, ProcessSpec{
		Name: "etcd", Path: etcdBin, LogDir: logs, Dir: dir,
		Args: []string{
			"--name=e2e", "--data-dir=" + filepath.Join(dir, "etcd"),
			"--listen-client-urls=" + etcdURL, "--advertise-client-urls=" + etcdURL,
			"--listen-peer-urls=" + peerURL, "--initial-advertise-peer-urls=" + peerURL,
			"--initial-cluster=e2e=" + peerURL, "--initial-cluster-state=new",
			"--logger=zap", "--log-outputs=stderr",
			// A test cluster: small, and no snapshots to wait for.
			"--quota-backend-bytes=2147483648", "--snapshot-count=100000",
		},
		// etcd reads ETCD_* variables; none from the caller's environment.
		Env: []string{"ETCD_UNSUPPORTED_ARCH="},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := waitHTTP(ctx, http.DefaultClient, etcdURL+"/health", c.Etcd); err != nil {
		t.Fatalf("etcd: %v", err)
	}

	// PKI: one CA for serving, client and kubelet-client certificates.
	if c.CA, err = NewCA(pki, "ca"); err != nil {
		t.Fatal(err)
	}
	_, svcNet, err := net.ParseCIDR(opts.ServiceCIDR)
	if err != nil {
		t.Fatalf("service CIDR %q: %v", opts.ServiceCIDR, err)
	}
	firstSvcIP := make(net.IP, len(svcNet.IP.To4()))
	copy(firstSvcIP, svcNet.IP.To4())
	firstSvcIP[3]++
	serving, err := c.CA.Issue(pki, "apiserver", CertSpec{
		CommonName: "kube-apiserver", Server: true,
		DNSNames: []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"},
		IPs:      []net.IP{net.ParseIP("127.0.0.1"), firstSvcIP},
	})
	if err != nil {
		t.Fatal(err)
	}
	if c.Admin, err = c.CA.Issue(pki, "admin", CertSpec{
		CommonName: "e2e-admin", Organization: []string{"system:masters"}, Client: true,
	}); err != nil {
		t.Fatal(err)
	}
	kubeletClient, err := c.CA.Issue(pki, "apiserver-kubelet-client", CertSpec{
		CommonName: "kube-apiserver-kubelet-client", Organization: []string{"system:masters"}, Client: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	saKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	saKeyFile, saPubFile := filepath.Join(pki, "sa.key"), filepath.Join(pki, "sa.pub")
	if err := writeKey(saKeyFile, saKey); err != nil {
		t.Fatal(err)
	}
	if err := writePublicKey(saPubFile, saKey); err != nil {
		t.Fatal(err)
	}
	c.SAKeyFile = saKeyFile

	port := FreePort(t)
	c.URL = fmt.Sprintf("https://127.0.0.1:%d", port)
	args := []string{
		"--etcd-servers=" + etcdURL,
		"--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", "--secure-port=" + strconv.Itoa(port),
		"--cert-dir=" + filepath.Join(dir, "apiserver-certs"),
		"--tls-cert-file=" + serving.CertFile, "--tls-private-key-file=" + serving.KeyFile,
		"--client-ca-file=" + c.CA.CertFile,
		"--service-account-key-file=" + saPubFile,
		"--service-account-signing-key-file=" + saKeyFile,
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-cluster-ip-range=" + opts.ServiceCIDR,
		"--authorization-mode=Node,RBAC",
		"--allow-privileged=true",
		// The API server reaches a node by its name, which the guard rail
		// makes resolve to 127.0.0.1; never by an address off this machine.
		"--kubelet-preferred-address-types=Hostname",
		"--kubelet-client-certificate=" + kubeletClient.CertFile,
		"--kubelet-client-key=" + kubeletClient.KeyFile,
		// 127.0.0.1 may not be an endpoint of the kubernetes service; no
		// pod here talks to the API server through it.
		"--endpoint-reconciler-type=none",
		"--profiling=false",
		"--enable-priority-and-fairness=false",
		"--v=1",
	}
	if !opts.ServiceAccountAdmission {
		// No controller-manager runs: the ServiceAccount admission would
		// refuse every pod until a token controller made the default
		// ServiceAccount, and would mount a projected token the edge has no
		// controller to fill.
		args = append(args, "--disable-admission-plugins=ServiceAccount")
	}
	args = append(args, opts.ExtraAPIServerArgs...)
	c.APIServer = StartProcess(t, ProcessSpec{Name: "kube-apiserver", Path: apiserverBin, LogDir: logs, Dir: dir, Args: args})

	c.Kubeconfig = filepath.Join(dir, "admin.kubeconfig")
	if err := writeKubeconfig(c.Kubeconfig, c.URL, c.CA.CertFile, c.Admin); err != nil {
		t.Fatal(err)
	}
	c.Config, err = clientcmd.BuildConfigFromFlags("", c.Kubeconfig)
	if err != nil {
		t.Fatalf("admin kubeconfig: %v", err)
	}
	c.Config.QPS, c.Config.Burst = 100, 200
	if c.Client, err = kubernetes.NewForConfig(c.Config); err != nil {
		t.Fatalf("clientset: %v", err)
	}
	httpClient, err := c.adminHTTPClient()
	if err != nil {
		t.Fatal(err)
	}
	rctx, rcancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer rcancel()
	start := time.Now()
	if err := waitHTTP(rctx, httpClient, c.URL+"/readyz", c.APIServer); err != nil {
		t.Fatalf("kube-apiserver: %v", err)
	}
	t.Logf("e2eenv: kube-apiserver %s ready in %s at %s", KubeVersion, time.Since(start).Round(time.Millisecond), c.URL)
	return c
}

func (c *Cluster) adminHTTPClient() (*http.Client, error) {
	cert, err := tls.LoadX509KeyPair(c.Admin.CertFile, c.Admin.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("admin cert: %w", err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(c.CA.Cert)
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
	}}, nil
}

// waitHTTP polls url until it answers 200, p exits, or ctx ends. A process
// health endpoint has nothing to watch, so this one loop polls.
func waitHTTP(ctx context.Context, client *http.Client, url string, p *Process) error {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var last string
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err == nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Sprintf("%s: %s", resp.Status, strings.TrimSpace(string(body)))
		} else {
			last = err.Error()
		}
		select {
		case <-p.Done():
			_, exitErr := p.Exited()
			return fmt.Errorf("%s exited (%v) before %s answered", p.Name, exitErr, url)
		case <-ctx.Done():
			return fmt.Errorf("%s not ready: %w (last: %s)", url, ctx.Err(), last)
		case <-tick.C:
		}
	}
}

func writeKubeconfig(path, server, caFile string, user CertFiles) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["e2e"] = &clientcmdapi.Cluster{Server: server, CertificateAuthority: caFile}
	cfg.AuthInfos["admin"] = &clientcmdapi.AuthInfo{ClientCertificate: user.CertFile, ClientKey: user.KeyFile}
	cfg.Contexts["e2e"] = &clientcmdapi.Context{Cluster: "e2e", AuthInfo: "admin"}
	cfg.CurrentContext = "e2e"
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		return fmt.Errorf("write kubeconfig: %w", err)
	}
	return nil
}
