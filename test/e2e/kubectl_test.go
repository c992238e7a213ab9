//go:build e2e

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclwrite"
	"github.com/zclconf/go-cty/cty"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/tools/remotecommand"
	"k8s.io/client-go/transport/spdy"
	statsv1alpha1 "k8s.io/kubelet/pkg/apis/stats/v1alpha1"

	"github.com/edgehive/edgehive/internal/e2eenv"
	"github.com/edgehive/edgehive/plugins/edged/cri"
)

// TestKubectl does what kubectl logs/exec/attach/port-forward do, with
// client-go against a real kube-apiserver, whose egress selector sends every
// node connection through cloudhive's CONNECT proxy and the node's tunnel
// session to edged's real kubelet API, running real containers.
//
// The node is unreachable directly: its name resolves to 127.0.0.1 and it
// reports kubelet port P, but edged's kubelet API listens on 127.0.0.2:P,
// which only the tunnel's edge side dials (edgehub's local_kubelet).
func TestKubectl(t *testing.T) {
	bin := e2eenv.BinDir(t)
	ctrd := e2eenv.ContainerdFromEnv(t)
	rt := e2eenv.NewCRI(t, ctrd)
	dir := t.TempDir()

	eg := e2eenv.NewEgress(t, dir)
	// StartCluster already gives kube-apiserver --kubelet-client-certificate
	// (CN kube-apiserver-kubelet-client, signed by cluster.CA).
	cluster := e2eenv.StartCluster(t, e2eenv.ClusterOptions{PodCIDR: ctrd.PodCIDR,
		ExtraAPIServerArgs: []string{eg.APIServerArg()}})
	client := cluster.Client
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := eg.SeedCASecret(ctx, client); err != nil {
		t.Fatal(err)
	}

	// P is free on 127.0.0.1 (where the node name resolves) and stays so:
	// the kubelet API takes it on 127.0.0.2.
	kubeletPort := e2eenv.FreePort(t)
	kubeletAddr := fmt.Sprintf("127.0.0.2:%d", kubeletPort)
	cloud := e2eenv.StartCloudhive(t, bin, "cloudhive", e2eenv.CloudhiveConfig{Kubeconfig: cluster.Kubeconfig,
		ExtraHCL: fmt.Sprintf("tunnel {\n  listen            = %q\n  connect_listen    = %q\n  connect_client_ca = %q\n  allowed_ports     = [%d]\n}\n",
			eg.TunnelAddr, eg.ConnectAddr, eg.CA.CertFile, kubeletPort)})
	token, err := cloud.Token(ctx)
	if err != nil {
		t.Fatal(err)
	}

	node := e2eenv.NodeName("kubectl")
	edge := e2eenv.JoinEdge(t, bin, cloud, token, node, ctrd)
	enableKubeletAPI(t, edge.ConfigFile, eg.TunnelAddr, kubeletAddr, cluster.CA.CertFile)
	// Registered before the edge starts, so it runs after the edge stopped:
	// the shared containerd keeps no sandbox of this test.
	var uids []types.UID
	t.Cleanup(func() { sweepSandboxes(t, rt, uids) })
	edge.Start(t)
	n, err := e2eenv.WaitForNode(ctx, client, node, e2eenv.NodeReady)
	if err != nil {
		t.Fatal(err)
	}
	if got := n.Status.DaemonEndpoints.KubeletEndpoint.Port; got != int32(kubeletPort) {
		t.Fatalf("node reports kubelet port %d, want %d", got, kubeletPort)
	}
	// Nothing answers where a direct dial of the node would go.
	if c, err := net.DialTimeout("tcp", net.JoinHostPort(node, fmt.Sprint(kubeletPort)), time.Second); err == nil {
		c.Close()
		t.Fatalf("%s:%d answers directly; the test needs the node unreachable but through the tunnel", node, kubeletPort)
	}

	// One pod for logs/exec/attach/port-forward, one that restarts once.
	work := kubectlPod("kubectl-work", node)
	restarter := restartOncePod("kubectl-restart", node)
	for _, p := range []*v1.Pod{work, restarter} {
		made, err := client.CoreV1().Pods("default").Create(ctx, p, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		uids = append(uids, made.UID)
		name := p.Name
		t.Cleanup(func() {
			_ = client.CoreV1().Pods("default").Delete(context.Background(), name, metav1.DeleteOptions{GracePeriodSeconds: new(int64)})
		})
	}
	if _, err := e2eenv.WaitForPod(ctx, client, "default", work.Name, e2eenv.PodRunning); err != nil {
		t.Fatal(err)
	}
	// The tunnel session comes up beside the cloud link: wait for the first
	// log answer before timing anything.
	var logs string
	deadline := time.Now().Add(30 * time.Second)
	for {
		logs, err = podLogsOf(ctx, client, work.Name, &v1.PodLogOptions{Container: "logger"})
		if err == nil && strings.Contains(logs, "line 2\n") || time.Now().After(deadline) {
			break
		}
		time.Sleep(300 * time.Millisecond)
	}
	if err != nil || !strings.HasPrefix(logs, "line 0\nline 1\nline 2\n") {
		t.Fatalf("kubectl logs: %q, %v; want the container's lines from line 0", logs, err)
	}
	t.Logf("kubectl logs through the tunnel: %d lines", strings.Count(logs, "\n"))

	t.Run("logs --tail", func(t *testing.T) {
		full, err := podLogsOf(ctx, client, work.Name, &v1.PodLogOptions{Container: "logger"})
		if err != nil {
			t.Fatal(err)
		}
		var newest int
		all := strings.Split(strings.TrimSuffix(full, "\n"), "\n")
		if _, err := fmt.Sscanf(all[len(all)-1], "line %d", &newest); err != nil || newest < 2 {
			t.Fatalf("full log %q: newest line %d, %v", full, newest, err)
		}
		tail := int64(2)
		got, err := podLogsOf(ctx, client, work.Name, &v1.PodLogOptions{Container: "logger", TailLines: &tail})
		if err != nil {
			t.Fatal(err)
		}
		// The two newest lines: consecutive, and none older than the full
		// log's newest but one (a line may have been added in between).
		var a, b int
		if _, err := fmt.Sscanf(got, "line %d\nline %d\n", &a, &b); err != nil || b != a+1 || a < newest-1 || strings.Count(got, "\n") != 2 {
			t.Fatalf("tailLines=2: %q (full log ends at line %d), want the two newest lines", got, newest)
		}
	})

	t.Run("logs -f", func(t *testing.T) {
		fctx, fcancel := context.WithTimeout(ctx, 20*time.Second)
		defer fcancel()
		tail := int64(1)
		stream, err := client.CoreV1().Pods("default").GetLogs(work.Name,
			&v1.PodLogOptions{Container: "logger", Follow: true, TailLines: &tail}).Stream(fctx)
		if err != nil {
			t.Fatal(err)
		}
		defer stream.Close()
		sc := bufio.NewScanner(stream)
		var first, last int
		start := time.Now()
		for i := 0; i < 4; i++ {
			if !sc.Scan() {
				t.Fatalf("follow ended after %d lines: %v", i, sc.Err())
			}
			var n int
			if _, err := fmt.Sscanf(sc.Text(), "line %d", &n); err != nil {
				t.Fatalf("follow line %q: %v", sc.Text(), err)
			}
			if i == 0 {
				first = n
			} else if n != last+1 {
				t.Fatalf("follow: line %d after %d", n, last)
			}
			last = n
		}
		// The container writes a line every 300 ms: three new ones took time.
		if el := time.Since(start); el < 500*time.Millisecond {
			t.Fatalf("follow: lines %d..%d in %s; want lines written after the request", first, last, el)
		}
		t.Logf("logs -f: lines %d..%d arrived in %s", first, last, time.Since(start).Round(time.Millisecond))
	})

	t.Run("exec", func(t *testing.T) {
		var stdout, stderr bytes.Buffer
		start := time.Now()
		err := execIn(ctx, cluster.Config, client, work.Name, "logger", []string{"sh", "-c", "echo out-$((6*7)); echo err-1 >&2"}, false,
			remotecommand.StreamOptions{Stdout: &stdout, Stderr: &stderr})
		if err != nil {
			t.Fatal(err)
		}
		if stdout.String() != "out-42\n" || stderr.String() != "err-1\n" {
			t.Fatalf("exec: stdout %q, stderr %q", stdout.String(), stderr.String())
		}
		t.Logf("exec of a command: %s", time.Since(start).Round(time.Millisecond))
		// A failing command's exit code comes back.
		err = execIn(ctx, cluster.Config, client, work.Name, "logger", []string{"sh", "-c", "exit 3"}, false,
			remotecommand.StreamOptions{Stdout: io.Discard, Stderr: io.Discard})
		var exit interface{ ExitStatus() int }
		if err == nil || !asExit(err, &exit) || exit.ExitStatus() != 3 {
			t.Fatalf("exec exit 3: %v", err)
		}
	})

	t.Run("exec -i sh", func(t *testing.T) {
		inR, inW := io.Pipe()
		outR, outW := io.Pipe()
		done := make(chan error, 1)
		go func() {
			done <- execIn(ctx, cluster.Config, client, work.Name, "logger", []string{"sh"}, true,
				remotecommand.StreamOptions{Stdin: inR, Stdout: outW, Stderr: io.Discard})
			outW.Close()
		}()
		out := bufio.NewScanner(outR)
		for i, cmd := range []string{"x=6", "echo $((x*7))", "echo $HOSTNAME"} {
			if _, err := io.WriteString(inW, cmd+"\n"); err != nil {
				t.Fatalf("stdin %d: %v", i, err)
			}
		}
		if !out.Scan() || out.Text() != "42" {
			t.Fatalf("interactive sh: %q, %v; want 42", out.Text(), out.Err())
		}
		if !out.Scan() || out.Text() != work.Name {
			t.Fatalf("interactive sh: hostname %q, want %s", out.Text(), work.Name)
		}
		if _, err := io.WriteString(inW, "exit 0\n"); err != nil {
			t.Fatal(err)
		}
		inW.Close()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("interactive sh ended: %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Fatal("interactive sh did not end after exit")
		}
	})

	t.Run("attach", func(t *testing.T) {
		// The echoer container reads its stdin (spec stdin: true) and
		// writes got:<line>; attach feeds it and reads what it writes.
		inR, inW := io.Pipe()
		outR, outW := io.Pipe()
		actx, acancel := context.WithCancel(ctx)
		defer acancel()
		done := make(chan error, 1)
		go func() {
			u := client.CoreV1().RESTClient().Post().Namespace("default").Resource("pods").Name(work.Name).SubResource("attach").
				VersionedParams(&v1.PodAttachOptions{Container: "echoer", Stdin: true, Stdout: true, Stderr: true}, scheme.ParameterCodec).URL()
			ex, err := remotecommand.NewSPDYExecutor(cluster.Config, "POST", u)
			if err != nil {
				done <- err
				return
			}
			done <- ex.StreamWithContext(actx, remotecommand.StreamOptions{Stdin: inR, Stdout: outW, Stderr: io.Discard})
			outW.Close()
		}()
		out := bufio.NewScanner(outR)
		token := fmt.Sprintf("attach-%d", time.Now().UnixNano())
		if _, err := io.WriteString(inW, token+"\n"); err != nil {
			t.Fatal(err)
		}
		lines := make(chan string, 1)
		go func() {
			for out.Scan() {
				if strings.Contains(out.Text(), token) {
					lines <- out.Text()
					return
				}
			}
			close(lines)
		}()
		select {
		case l, ok := <-lines:
			if !ok || l != "got:"+token {
				t.Fatalf("attach: %q (stream ended: %v)", l, !ok)
			}
		case err := <-done:
			t.Fatalf("attach ended early: %v", err)
		case <-time.After(15 * time.Second):
			t.Fatal("attach: no echo in 15 s")
		}
		acancel()
		inW.Close()
	})

	t.Run("port-forward", func(t *testing.T) {
		u := client.CoreV1().RESTClient().Post().Namespace("default").Resource("pods").Name(work.Name).SubResource("portforward").URL()
		transport, upgrader, err := spdy.RoundTripperFor(cluster.Config)
		if err != nil {
			t.Fatal(err)
		}
		dialer := spdy.NewDialer(upgrader, &http.Client{Transport: transport}, "POST", u)
		stop, ready := make(chan struct{}), make(chan struct{})
		fw, err := portforward.NewOnAddresses(dialer, []string{"127.0.0.1"}, []string{"0:8080"}, stop, ready, io.Discard, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- fw.ForwardPorts() }()
		defer func() {
			close(stop)
			<-done
		}()
		select {
		case <-ready:
		case err := <-done:
			t.Fatalf("port-forward: %v", err)
		case <-time.After(15 * time.Second):
			t.Fatal("port-forward not ready in 15 s")
		}
		ports, err := fw.GetPorts()
		if err != nil || len(ports) != 1 {
			t.Fatalf("port-forward ports: %v, %v", ports, err)
		}
		hc := &http.Client{Timeout: 10 * time.Second}
		for i := range 5 {
			start := time.Now()
			body, err := httpGet(ctx, hc, fmt.Sprintf("http://127.0.0.1:%d/index.html", ports[0].Local))
			if err != nil || body != "served by "+work.Name+"\n" {
				t.Fatalf("GET #%d through port-forward: %q, %v", i, body, err)
			}
			if i == 0 {
				t.Logf("first GET through port-forward: %s", time.Since(start).Round(time.Millisecond))
			}
		}
	})

	t.Run("logs --previous", func(t *testing.T) {
		p, err := e2eenv.WaitForPod(ctx, client, "default", restarter.Name, func(p *v1.Pod, exists bool) (bool, error) {
			if !exists || len(p.Status.ContainerStatuses) == 0 {
				return false, nil
			}
			cs := p.Status.ContainerStatuses[0]
			return cs.RestartCount >= 1 && cs.State.Running != nil, nil
		})
		if err != nil {
			t.Fatal(err)
		}
		cur, err := podLogsOf(ctx, client, p.Name, &v1.PodLogOptions{Container: "c"})
		if err != nil || cur != "second run\n" {
			t.Fatalf("logs after the restart: %q, %v", cur, err)
		}
		prev, err := podLogsOf(ctx, client, p.Name, &v1.PodLogOptions{Container: "c", Previous: true})
		if err != nil || prev != "first run\n" {
			t.Fatalf("logs --previous: %q, %v; want the first instance's", prev, err)
		}
	})

	t.Run("stats/summary", func(t *testing.T) {
		// kubectl top's figures: the node proxy subresource if the API
		// server allows it for this node.
		raw, err := client.CoreV1().RESTClient().Get().AbsPath("/api/v1/nodes", node, "proxy", "stats", "summary").DoRaw(ctx)
		if err != nil {
			if !strings.Contains(err.Error(), "not allowed") && !strings.Contains(string(raw), "not allowed") {
				t.Fatalf("nodes/%s/proxy/stats/summary: %v: %s", node, err, raw)
			}
			t.Logf("SKIPPED PART: kube-apiserver refuses nodes/%s/proxy/stats/summary because the node's address resolves to loopback "+
				"(%v: %s); checking /stats/summary instead on the path the API server uses for pods/log and exec: "+
				"cloudhive's CONNECT (egress client certificate) and the node's tunnel, with the kubelet-client certificate", node, err, bytes.TrimSpace(raw))
			raw, err = statsThroughConnect(ctx, eg.ConnectAddr, eg.CloudCAFile, eg.Client, cluster, node, kubeletPort)
			if err != nil {
				t.Fatal(err)
			}
		}
		var s statsv1alpha1.Summary
		if err := json.Unmarshal(raw, &s); err != nil {
			t.Fatalf("summary: %v: %.200s", err, raw)
		}
		if s.Node.NodeName != node || s.Node.Memory == nil || s.Node.Memory.WorkingSetBytes == nil || *s.Node.Memory.WorkingSetBytes == 0 {
			t.Fatalf("summary node: %+v", s.Node)
		}
		var found bool
		for _, ps := range s.Pods {
			if ps.PodRef.Name == work.Name {
				found = true
				if ps.Memory == nil || ps.Memory.WorkingSetBytes == nil || *ps.Memory.WorkingSetBytes == 0 || len(ps.Containers) != 3 {
					t.Fatalf("summary of %s: memory %+v, %d containers", work.Name, ps.Memory, len(ps.Containers))
				}
				t.Logf("stats/summary: pod %s working set %d bytes", work.Name, *ps.Memory.WorkingSetBytes)
			}
		}
		if !found {
			t.Fatalf("summary has no pod %s", work.Name)
		}
	})

	t.Run("no certificate", func(t *testing.T) {
		// Straight at the kubelet API (on the edge's own loopback): no
		// client certificate is 401.
		hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+kubeletAddr+"/pods", nil)
		resp, err := hc.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode != http.StatusUnauthorized {
				t.Fatalf("kubelet API without a client certificate: %s, want 401", resp.Status)
			}
		} else if !strings.Contains(err.Error(), "certificate") {
			t.Fatalf("kubelet API without a client certificate: %v", err)
		}
	})

	t.Run("other node", func(t *testing.T) {
		// Node B exists, has a pod, and no tunnel session: its requests do
		// not go to node A's session (cloudhive answers 503).
		other := e2eenv.NodeName("kubectl-b")
		e2eenv.ResolveToLoopback(t, other)
		if _, err := client.CoreV1().Nodes().Create(ctx, &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: other},
			Status: v1.NodeStatus{
				Addresses:       []v1.NodeAddress{{Type: v1.NodeHostName, Address: other}},
				DaemonEndpoints: v1.NodeDaemonEndpoints{KubeletEndpoint: v1.DaemonEndpoint{Port: int32(kubeletPort)}},
			}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		defer func() { _ = client.CoreV1().Nodes().Delete(context.Background(), other, metav1.DeleteOptions{}) }()
		bindPod(ctx, t, client, "kubectl-on-b", other)
		_, err := podLogsOf(ctx, client, "kubectl-on-b", &v1.PodLogOptions{Container: "c"})
		if err == nil || !strings.Contains(err.Error(), "code 503") {
			t.Fatalf("logs of a pod on node B: %v; want cloudhive's 503", err)
		}
		err = execIn(ctx, cluster.Config, client, "kubectl-on-b", "c", []string{"true"}, false,
			remotecommand.StreamOptions{Stdout: io.Discard, Stderr: io.Discard})
		if err == nil || !strings.Contains(err.Error(), "code 503") {
			t.Fatalf("exec in a pod on node B: %v; want cloudhive's 503", err)
		}
		t.Logf("node B: logs and exec refused (%v)", err)
	})
}

// kubectlPod: logger writes "line N" every 300 ms; echoer echoes its stdin
// (for attach); web is busybox httpd on 8080 (for port-forward).
func kubectlPod(name, node string) *v1.Pod {
	grace := int64(1)
	return &v1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
		Spec: v1.PodSpec{NodeName: node, TerminationGracePeriodSeconds: &grace, Containers: []v1.Container{
			{Name: "logger", Image: e2eenv.BusyboxImage, Command: []string{"sh", "-c",
				"trap 'exit 0' TERM; i=0; while true; do echo line $i; i=$((i+1)); sleep 0.3; done"}},
			{Name: "echoer", Image: e2eenv.BusyboxImage, Stdin: true, Command: []string{"sh", "-c",
				"while read l; do echo got:$l; done"}},
			{Name: "web", Image: e2eenv.BusyboxImage, Command: []string{"sh", "-c",
				"mkdir -p /www && echo served by $HOSTNAME > /www/index.html && exec httpd -f -p 8080 -h /www"},
				Ports: []v1.ContainerPort{{ContainerPort: 8080}}},
		}},
	}
}

// restartOncePod's container exits after its first run (remembered in an
// emptyDir) and keeps running after its second.
func restartOncePod(name, node string) *v1.Pod {
	grace := int64(1)
	return &v1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
		Spec: v1.PodSpec{NodeName: node, TerminationGracePeriodSeconds: &grace,
			Volumes: []v1.Volume{{Name: "state", VolumeSource: v1.VolumeSource{EmptyDir: &v1.EmptyDirVolumeSource{}}}},
			Containers: []v1.Container{{Name: "c", Image: e2eenv.BusyboxImage,
				VolumeMounts: []v1.VolumeMount{{Name: "state", MountPath: "/state"}},
				Command: []string{"sh", "-c",
					"if [ -f /state/ran ]; then echo second run; trap 'exit 0' TERM; while true; do sleep 1; done; fi; touch /state/ran; echo first run; exit 1"}}}},
	}
}

func podLogsOf(ctx context.Context, client kubernetes.Interface, pod string, o *v1.PodLogOptions) (string, error) {
	b, err := client.CoreV1().Pods("default").GetLogs(pod, o).DoRaw(ctx)
	if err != nil {
		return "", fmt.Errorf("%w: %s", err, b)
	}
	return string(b), nil
}

func execIn(ctx context.Context, cfg *rest.Config, client kubernetes.Interface, pod, container string, cmd []string, stdin bool, o remotecommand.StreamOptions) error {
	u := client.CoreV1().RESTClient().Post().Namespace("default").Resource("pods").Name(pod).SubResource("exec").
		VersionedParams(&v1.PodExecOptions{Container: container, Command: cmd, Stdin: stdin, Stdout: true, Stderr: true}, scheme.ParameterCodec).URL()
	ex, err := remotecommand.NewSPDYExecutor(cfg, "POST", u)
	if err != nil {
		return fmt.Errorf("executor: %w", err)
	}
	return ex.StreamWithContext(ctx, o)
}

func asExit(err error, exit *interface{ ExitStatus() int }) bool {
	for e := err; e != nil; {
		if x, ok := e.(interface{ ExitStatus() int }); ok {
			*exit = x
			return true
		}
		u, ok := e.(interface{ Unwrap() error })
		if !ok {
			return false
		}
		e = u.Unwrap()
	}
	return false
}

func httpGet(ctx context.Context, hc *http.Client, u string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return "", err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return string(b), fmt.Errorf("%s", resp.Status)
	}
	return string(b), err
}

// statsThroughConnect GETs /stats/summary the way kube-apiserver reaches a
// kubelet: CONNECT node:port at cloudhive with the egress client
// certificate, then TLS to the kubelet with the API server's kubelet-client
// certificate, over the tunnel.
func statsThroughConnect(ctx context.Context, connectAddr, cloudCAFile string, egress e2eenv.CertFiles, cluster *e2eenv.Cluster, node string, port int) ([]byte, error) {
	loadTLS := func(caFile string, cert e2eenv.CertFiles) (*tls.Config, error) {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, err
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(pem)
		kp, err := tls.LoadX509KeyPair(cert.CertFile, cert.KeyFile)
		if err != nil {
			return nil, err
		}
		return &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{kp}, MinVersion: tls.VersionTLS12}, nil
	}
	proxyTLS, err := loadTLS(cloudCAFile, egress)
	if err != nil {
		return nil, err
	}
	kubeletClient := e2eenv.CertFiles{CertFile: filepath.Join(cluster.Dir, "pki", "apiserver-kubelet-client.crt"),
		KeyFile: filepath.Join(cluster.Dir, "pki", "apiserver-kubelet-client.key")}
	kubeletTLS, err := loadTLS(cluster.CA.CertFile, kubeletClient)
	if err != nil {
		return nil, err
	}
	// The API server does not verify the kubelet's serving certificate
	// without --kubelet-certificate-authority; neither does this client.
	kubeletTLS.InsecureSkipVerify = true
	dctx, dcancel := context.WithTimeout(ctx, 15*time.Second)
	defer dcancel()
	proxyConn, err := (&tls.Dialer{Config: proxyTLS}).DialContext(dctx, "tcp", connectAddr)
	if err != nil {
		return nil, fmt.Errorf("dial cloudhive's CONNECT proxy: %w", err)
	}
	defer proxyConn.Close()
	if dl, ok := dctx.Deadline(); ok {
		_ = proxyConn.SetDeadline(dl)
	}
	target := net.JoinHostPort(node, fmt.Sprint(port))
	if _, err := fmt.Fprintf(proxyConn, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target); err != nil {
		return nil, err
	}
	br := bufio.NewReader(proxyConn)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		return nil, fmt.Errorf("CONNECT %s: %w", target, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("CONNECT %s: %s", target, resp.Status)
	}
	kc := tls.Client(&bufferedConn{Conn: proxyConn, r: br}, kubeletTLS)
	req, err := http.NewRequestWithContext(dctx, http.MethodGet, "https://"+target+"/stats/summary", nil)
	if err != nil {
		return nil, err
	}
	if err := req.Write(kc); err != nil {
		return nil, fmt.Errorf("GET /stats/summary: %w", err)
	}
	resp, err = http.ReadResponse(bufio.NewReader(kc), req)
	if err != nil {
		return nil, fmt.Errorf("GET /stats/summary: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /stats/summary: %s, %v: %.200s", resp.Status, err, body)
	}
	return body, nil
}

// bufferedConn reads first what a bufio.Reader already took off the conn.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// enableKubeletAPI turns on edgehub's tunnel (to localKubelet) and edged's
// kubelet API on that address, trusting clientCA for its clients.
func enableKubeletAPI(t *testing.T, file, server, localKubelet, clientCA string) {
	t.Helper()
	src, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	f, diags := hclwrite.ParseConfig(src, file, hcl.InitialPos)
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	configOf := func(plugin string) *hclwrite.Body {
		pb := f.Body().FirstMatchingBlock("plugin", []string{plugin})
		if pb == nil {
			t.Fatalf("%s has no plugin %q block", file, plugin)
		}
		cfg := pb.Body().FirstMatchingBlock("config", nil)
		if cfg == nil {
			cfg = pb.Body().AppendNewBlock("config", nil)
		}
		return cfg.Body()
	}
	tb := configOf("edgehub").AppendNewBlock("tunnel", nil).Body()
	tb.SetAttributeValue("enabled", cty.True)
	tb.SetAttributeValue("server", cty.StringVal(server))
	tb.SetAttributeValue("local_kubelet", cty.StringVal(localKubelet))
	kb := configOf("edged").AppendNewBlock("kubelet_api", nil).Body()
	kb.SetAttributeValue("enabled", cty.True)
	kb.SetAttributeValue("listen", cty.StringVal(localKubelet))
	kb.SetAttributeValue("client_ca_file", cty.StringVal(clientCA))
	kb.SetAttributeValue("authorized_users", cty.ListVal([]cty.Value{cty.StringVal("kube-apiserver-kubelet-client")}))
	if err := os.WriteFile(file, f.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// sweepSandboxes removes what the runtime still has of the test's pods.
func sweepSandboxes(t *testing.T, rt *cri.Client, uids []types.UID) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, uid := range uids {
		sbs, err := e2eenv.PodSandboxes(ctx, rt, uid)
		if err != nil {
			t.Logf("sweep %s: %v", uid, err)
			continue
		}
		for _, sb := range sbs {
			if err := rt.StopPodSandbox(ctx, sb.GetId()); err != nil {
				t.Logf("sweep: stop sandbox %s: %v", sb.GetId(), err)
			}
			if err := rt.RemovePodSandbox(ctx, sb.GetId()); err != nil {
				t.Logf("sweep: remove sandbox %s: %v", sb.GetId(), err)
			}
		}
	}
}
