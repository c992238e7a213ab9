//go:build e2e && conformance

// Package conformance runs the upstream Kubernetes conformance tests
// (k8s.io/kubernetes/test/e2e, built by hack/kube.sh e2e.test) against a
// cluster whose only node is an edgehive node: etcd, kube-apiserver,
// kube-scheduler, kube-controller-manager, cloudhive with its tunnel, and
// one joined edgehive on the private containerd, behind the guard rails.
// `make conformance` runs it; it is not part of `make test`.
package conformance

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/edgehive/edgehive/internal/e2eenv"
	"github.com/edgehive/edgehive/plugins/edged/cri"
)

// The tests issue 6 asks for: sig-node conformance, and the sig-storage
// volume kinds an edge node serves itself.
const (
	defaultFocus = `\[sig-node\].*\[Conformance\]|\[sig-storage\].*(ConfigMap|Secret|Projected|Downward API|EmptyDir).*\[Conformance\]`
	defaultSkip  = `\[Serial\]|\[Disruptive\]`
)

var (
	focus     = flag.String("conformance.focus", defaultFocus, "ginkgo focus regexp for e2e.test")
	skip      = flag.String("conformance.skip", defaultSkip, "ginkgo skip regexp for e2e.test")
	reportDir = flag.String("conformance.report-dir", "", "directory for e2e.test's reports and log (default: a temp dir)")
	e2eBin    = flag.String("conformance.e2e-test", "", "the e2e.test binary (default: e2eenv.KubeBinDir()/e2e.test)")
	timeout   = flag.Duration("conformance.timeout", 100*time.Minute, "time e2e.test may take")
	procs     = flag.Int("conformance.procs", 4, "parallel ginkgo processes (1: e2e.test alone; more: run by the ginkgo CLI, built by hack/kube.sh ginkgo)")
)

func TestConformance(t *testing.T) {
	bin := e2eenv.BinDir(t)
	kubeBin := e2eenv.KubeBinDir()
	e2eTest := *e2eBin
	if e2eTest == "" {
		e2eTest = filepath.Join(kubeBin, "e2e.test")
	}
	for _, b := range []string{e2eTest, filepath.Join(kubeBin, "kube-scheduler"), filepath.Join(kubeBin, "kube-controller-manager")} {
		if _, err := os.Stat(b); err != nil {
			t.Fatalf("%v (build it with hack/kube.sh e2e.test agnhost kube-scheduler kube-controller-manager)", err)
		}
	}
	out := *reportDir
	if out == "" {
		out = t.TempDir()
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		t.Fatal(err)
	}
	out, _ = filepath.Abs(out)

	c := startCluster(t, bin, kubeBin)
	c.alive(t)
	if t.Failed() {
		t.FailNow()
	}
	t.Logf("conformance: cluster up, node %s Ready; running e2e.test (focus %q, skip %q), reports in %s", c.node, *focus, *skip, out)

	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	jsonReport := filepath.Join(out, "report.json")
	os.Remove(jsonReport)
	// Flags for the suite itself; ginkgo's own are spelled --ginkgo.X to
	// e2e.test and --X to the ginkgo CLI.
	suiteArgs := []string{
		"--kubeconfig=" + c.cluster.Kubeconfig,
		"--provider=skeleton",
		"--report-dir=" + out,
		// Nothing in kube-system to wait for: no add-ons run here.
		"--minStartupPods=0",
		"--allowed-not-ready-nodes=0",
		"--node-os-distro=debian",
		"--dump-logs-on-failure=false",
	}
	ginkgoArgs := []string{
		"focus=" + *focus,
		"skip=" + *skip,
		"json-report=" + jsonReport,
		"no-color",
		"silence-skips",
		// Each test's name and steps as it runs: a run cut short still
		// says what passed.
		"v",
		"timeout=" + timeout.String(),
	}
	name, args := e2eTest, suiteArgs
	if *procs > 1 {
		// Most tests wait on the node, not the CPU: several at once
		// bring the run from over an hour to a fraction of it.
		name = filepath.Join(kubeBin, "ginkgo")
		if _, err := os.Stat(name); err != nil {
			t.Fatalf("%v (build it with hack/kube.sh ginkgo, or run with -conformance.procs=1)", err)
		}
		args = []string{"run", fmt.Sprintf("--procs=%d", *procs)}
		for _, a := range ginkgoArgs {
			args = append(args, "--"+a)
		}
		args = append(append(append(args, e2eTest), "--"), suiteArgs...)
	} else {
		for _, a := range ginkgoArgs {
			args = append(args, "--ginkgo."+a)
		}
	}
	logFile, err := os.Create(filepath.Join(out, "e2e.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = out
	// The guard rail for the suite itself: anything it sends by HTTP(S) that
	// is not loopback (Go never proxies loopback) or inside the cluster's
	// ranges goes to a dead proxy.
	noProxy := strings.Join([]string{"127.0.0.1", "localhost", c.cluster.PodCIDR, c.cluster.ServiceCIDR, c.node}, ",")
	cmd.Env = append(os.Environ(),
		"HTTP_PROXY=http://127.0.0.1:9", "HTTPS_PROXY=http://127.0.0.1:9",
		"http_proxy=http://127.0.0.1:9", "https_proxy=http://127.0.0.1:9",
		"NO_PROXY="+noProxy, "no_proxy="+noProxy,
		"KUBECONFIG="+c.cluster.Kubeconfig,
	)
	cmd.Stdout = io.MultiWriter(logFile, os.Stdout)
	cmd.Stderr = io.MultiWriter(logFile, os.Stderr)
	start := time.Now()
	runErr := cmd.Run()
	elapsed := time.Since(start).Round(time.Second)

	c.alive(t)
	sum, err := readReport(jsonReport)
	if err != nil {
		t.Fatalf("e2e.test (%v after %s) left no report: %v; see %s", runErr, elapsed, err, logFile.Name())
	}
	sum.print(os.Stdout, elapsed)
	if err := os.WriteFile(filepath.Join(out, "summary.txt"), []byte(sum.text(elapsed)), 0o644); err != nil {
		t.Error(err)
	}
	if sum.ran() == 0 {
		t.Fatalf("e2e.test ran no test for focus %q", *focus)
	}
	if len(sum.failed) > 0 {
		t.Errorf("%d of %d conformance tests failed (e2e.test: %v); reports in %s", len(sum.failed), sum.ran(), runErr, out)
	}
}

// conformanceCluster is everything the suite talks to.
type conformanceCluster struct {
	cluster                      *e2eenv.Cluster
	node                         string
	scheduler, controllerManager *e2eenv.Process
}

// startCluster brings up the cluster the way test/e2e's tunnel tests do
// (API server egress through cloudhive's CONNECT proxy and the node's
// tunnel to edged's kubelet API, so logs, exec and port-forward work), plus
// the scheduler and the controller manager the suite relies on (namespaces'
// default ServiceAccount, kube-root-ca.crt, garbage collection, ReplicaSets).
func startCluster(t *testing.T, bin, kubeBin string) *conformanceCluster {
	ctrd := e2eenv.ContainerdFromEnv(t)
	rt := e2eenv.NewCRI(t, ctrd)
	dir := t.TempDir()

	eg := e2eenv.NewEgress(t, dir)
	cluster := e2eenv.StartCluster(t, e2eenv.ClusterOptions{
		PodCIDR:                 ctrd.PodCIDR,
		ServiceAccountAdmission: true,
		ExtraAPIServerArgs:      []string{eg.APIServerArg()},
	})
	client := cluster.Client
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	logs := filepath.Join(cluster.Dir, "logs")
	sched := e2eenv.StartProcess(t, e2eenv.ProcessSpec{
		Name: "kube-scheduler", Path: filepath.Join(kubeBin, "kube-scheduler"), LogDir: logs,
		Args: []string{
			"--kubeconfig=" + cluster.Kubeconfig,
			"--authentication-kubeconfig=" + cluster.Kubeconfig,
			"--authorization-kubeconfig=" + cluster.Kubeconfig,
			"--bind-address=127.0.0.1", fmt.Sprintf("--secure-port=%d", e2eenv.FreePort(t)),
			"--leader-elect=false", "--v=1",
		},
	})
	kcm := e2eenv.StartProcess(t, e2eenv.ProcessSpec{
		Name: "kube-controller-manager", Path: filepath.Join(kubeBin, "kube-controller-manager"), LogDir: logs,
		Args: []string{
			"--kubeconfig=" + cluster.Kubeconfig,
			"--authentication-kubeconfig=" + cluster.Kubeconfig,
			"--authorization-kubeconfig=" + cluster.Kubeconfig,
			"--bind-address=127.0.0.1", fmt.Sprintf("--secure-port=%d", e2eenv.FreePort(t)),
			"--leader-elect=false",
			"--service-account-private-key-file=" + cluster.SAKeyFile,
			"--root-ca-file=" + cluster.CA.CertFile,
			"--use-service-account-credentials=false",
			"--service-cluster-ip-range=" + cluster.ServiceCIDR,
			"--allocate-node-cidrs=false",
			// No cloud, no node IPAM: the edge's CNI network has its range.
			"--controllers=*,-node-ipam-controller",
			"--v=1",
		},
	})

	// The controller manager works once it has made the default
	// namespace's ServiceAccount; the suite waits for one in each of its own.
	if err := waitDefaultServiceAccount(ctx, client, kcm); err != nil {
		t.Fatal(err)
	}
	if err := eg.SeedCASecret(ctx, client); err != nil {
		t.Fatal(err)
	}

	// The node reports kubelet port P; its name resolves to 127.0.0.1, where
	// nothing listens on P: only the tunnel reaches edged's API on 127.0.0.2.
	kubeletPort := e2eenv.FreePort(t)
	kubeletAddr := fmt.Sprintf("127.0.0.2:%d", kubeletPort)
	cloud, token := e2eenv.StartTunnelCloudhive(ctx, t, bin, cluster.Kubeconfig, eg, kubeletPort)
	node := e2eenv.NodeName("conformance")
	edge := e2eenv.JoinEdge(t, bin, cloud, token, node, ctrd)
	// The pod range too: the API server's pods/proxy and services/proxy
	// (the PreStop test) reach pods through the tunnel.
	edge.EnableTunnel(t, e2eenv.TunnelOptions{Server: eg.TunnelAddr, LocalKubelet: kubeletAddr, KubeletAPIClientCA: cluster.CA.CertFile,
		PodCIDRs: []string{ctrd.PodCIDR}})
	// Registered before the edge starts, so it runs after the edge stopped:
	// the containerd keeps no sandbox of the suite's pods.
	before, err := sandboxIDs(ctx, rt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sweepRuntime(t, rt, before) })
	edge.Start(t)
	if _, err := e2eenv.WaitForNode(ctx, client, node, e2eenv.NodeReady); err != nil {
		t.Fatal(err)
	}
	return &conformanceCluster{cluster: cluster, node: node, scheduler: sched, controllerManager: kcm}
}

// waitDefaultServiceAccount waits for the serviceaccount controller to make
// default/default, or for kcm to exit.
func waitDefaultServiceAccount(ctx context.Context, client kubernetes.Interface, kcm *e2eenv.Process) error {
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		_, err := client.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{})
		if err == nil {
			return nil
		}
		select {
		case <-kcm.Done():
			_, exitErr := kcm.Exited()
			return fmt.Errorf("kube-controller-manager exited (%v); see %s", exitErr, kcm.LogPath)
		case <-ctx.Done():
			return fmt.Errorf("no default ServiceAccount from kube-controller-manager: %w (last: %v)", ctx.Err(), err)
		case <-tick.C:
		}
	}
}

// alive fails the test when a control-plane process has exited: the
// suite's results would say nothing about the node.
func (c *conformanceCluster) alive(t *testing.T) {
	t.Helper()
	for _, p := range []*e2eenv.Process{c.scheduler, c.controllerManager} {
		select {
		case <-p.Done():
			_, err := p.Exited()
			t.Errorf("%s exited during the run (%v); see %s", p.Name, err, p.LogPath)
		default:
		}
	}
}

func sandboxIDs(ctx context.Context, rt *cri.Client) (map[string]bool, error) {
	sbs, err := rt.ListPodSandbox(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("list sandboxes: %w", err)
	}
	ids := map[string]bool{}
	for _, sb := range sbs {
		ids[sb.GetId()] = true
	}
	return ids, nil
}

// sweepRuntime removes every sandbox the edge made: the suite's namespaces
// are random and gone with the API server, so it is every sandbox that was
// not there before the edge started.
func sweepRuntime(t *testing.T, rt *cri.Client, before map[string]bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	now, err := sandboxIDs(ctx, rt)
	if err != nil {
		t.Logf("sweep: %v", err)
		return
	}
	for id := range now {
		if before[id] {
			continue
		}
		if err := rt.StopPodSandbox(ctx, id); err != nil {
			t.Logf("sweep: stop sandbox %s: %v", id, err)
		}
		if err := rt.RemovePodSandbox(ctx, id); err != nil {
			t.Logf("sweep: remove sandbox %s: %v", id, err)
		}
	}
}
