//go:build e2e

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/remotecommand"
	statsv1alpha1 "k8s.io/kubelet/pkg/apis/stats/v1alpha1"

	"github.com/edgehive/edgehive/internal/e2eenv"
	"github.com/edgehive/edgehive/plugins/edged/cri"
)

// TestKubectl runs the real kubectl (hack/kube.sh kubectl, the admin
// kubeconfig, proxies that lead nowhere) for logs, exec, attach and
// port-forward against a real kube-apiserver, whose egress selector sends
// every node connection through cloudhive's CONNECT proxy and the node's
// tunnel session to edged's real kubelet API, running real containers.
// kubectl speaks WebSockets (v5.channel.k8s.io, SPDY tunnelled over a
// websocket for port-forward) by default, which kube-apiserver translates
// to SPDY toward the kubelet; with KUBECTL_*_WEBSOCKETS=false it speaks
// SPDY all the way. Both are run.
//
// The node is unreachable directly: its name resolves to 127.0.0.1 and it
// reports kubelet port P, but edged's kubelet API listens on 127.0.0.2:P,
// which only the tunnel's edge side dials (edgehub's local_kubelet).
func TestKubectl(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	// P is free on 127.0.0.1 (where the node name resolves) and stays so:
	// the kubelet API takes it on 127.0.0.2.
	kubeletPort := e2eenv.FreePort(t)
	kubeletAddr := fmt.Sprintf("127.0.0.2:%d", kubeletPort)
	// StartCluster already gives kube-apiserver --kubelet-client-certificate
	// (CN kube-apiserver-kubelet-client, signed by cluster.CA).
	env := e2eenv.NewTunnelEnv(ctx, t, kubeletPort)
	cluster, client, eg := env.Cluster, env.Client, env.Egress
	kubectl := cluster.Kubectl(t)
	rt := e2eenv.NewCRI(t, env.Containerd)

	node := e2eenv.NodeName("kubectl")
	edge := e2eenv.JoinEdge(t, env.Bin, env.Cloud, env.Token, node, env.Containerd)
	edge.EnableTunnel(t, e2eenv.TunnelOptions{Server: eg.TunnelAddr, LocalKubelet: kubeletAddr, KubeletAPIClientCA: cluster.CA.CertFile})
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
	var logs, stderr string
	deadline := time.Now().Add(30 * time.Second)
	for {
		logs, stderr, err = kubectl.Run(ctx, nil, "logs", work.Name, "-c", "logger")
		if err == nil && strings.Contains(logs, "line 2\n") || time.Now().After(deadline) {
			break
		}
		time.Sleep(300 * time.Millisecond)
	}
	if err != nil || !strings.HasPrefix(logs, "line 0\nline 1\nline 2\n") {
		t.Fatalf("kubectl logs: %q, %v: %s; want the container's lines from line 0", logs, err, stderr)
	}
	t.Logf("kubectl logs through the tunnel: %d lines", strings.Count(logs, "\n"))

	t.Run("logs --tail", func(t *testing.T) {
		full := kubectlOK(ctx, t, kubectl, nil, "logs", work.Name, "-c", "logger")
		var newest int
		all := strings.Split(strings.TrimSuffix(full, "\n"), "\n")
		if _, err := fmt.Sscanf(all[len(all)-1], "line %d", &newest); err != nil || newest < 2 {
			t.Fatalf("full log %q: newest line %d, %v", full, newest, err)
		}
		got := kubectlOK(ctx, t, kubectl, nil, "logs", "--tail=2", work.Name, "-c", "logger")
		// The two newest lines: consecutive, and none older than the full
		// log's newest but one (a line may have been added in between).
		var a, b int
		if _, err := fmt.Sscanf(got, "line %d\nline %d\n", &a, &b); err != nil || b != a+1 || a < newest-1 || strings.Count(got, "\n") != 2 {
			t.Fatalf("kubectl logs --tail=2: %q (full log ends at line %d), want the two newest lines", got, newest)
		}
	})

	t.Run("logs -f", func(t *testing.T) {
		bg := startKubectl(ctx, t, kubectl, false, "logs", "-f", "--tail=1", work.Name, "-c", "logger")
		var first, last int
		start := time.Now()
		for i := 0; i < 4; i++ {
			l := bg.line(t, func(string) bool { return true }, 10*time.Second)
			var n int
			if _, err := fmt.Sscanf(l, "line %d", &n); err != nil {
				t.Fatalf("kubectl logs -f line %q: %v", l, err)
			}
			if i == 0 {
				first = n
			} else if n != last+1 {
				t.Fatalf("kubectl logs -f: line %d after %d", n, last)
			}
			last = n
		}
		// The container writes a line every 300 ms: three new ones took time.
		if el := time.Since(start); el < 500*time.Millisecond {
			t.Fatalf("kubectl logs -f: lines %d..%d in %s; want lines written after the request", first, last, el)
		}
		t.Logf("kubectl logs -f: lines %d..%d arrived in %s", first, last, time.Since(start).Round(time.Millisecond))
		// Still following: it has not ended on its own.
		select {
		case <-bg.done:
			t.Fatalf("kubectl logs -f ended by itself: %v: %s", bg.err, bg.stderr.String())
		default:
		}
		// Interrupted as a user would, it stops.
		if err := bg.cmd.Process.Signal(os.Interrupt); err != nil {
			t.Fatal(err)
		}
		select {
		case <-bg.done:
		case <-time.After(10 * time.Second):
			t.Fatal("kubectl logs -f did not stop on SIGINT")
		}
	})

	// exec, attach and port-forward over both of kubectl's protocols. The
	// -v=7 request headers show which one it spoke.
	for _, mode := range []struct {
		name string
		env  []string
		// proto is in the upgrade request kubectl logs at -v=7; notProto,
		// the other protocol's, is not (no fallback happened).
		proto, notProto string
	}{
		{name: "websocket", proto: "Sec-Websocket-Protocol: v5.channel.k8s.io", notProto: "X-Stream-Protocol-Version"},
		{name: "spdy", env: []string{"KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false", "KUBECTL_PORT_FORWARD_WEBSOCKETS=false"},
			proto: "X-Stream-Protocol-Version: v4.channel.k8s.io", notProto: "Sec-Websocket-Protocol"},
	} {
		k := kubectl.With(mode.env...)
		t.Run(mode.name, func(t *testing.T) {
			t.Run("exec", func(t *testing.T) {
				start := time.Now()
				stdout, stderr, err := k.Run(ctx, nil, "exec", work.Name, "-c", "logger", "--",
					"sh", "-c", "echo out-$((6*7)); echo err-1 >&2")
				if err != nil {
					t.Fatalf("kubectl exec: %v: %s", err, stderr)
				}
				if stdout != "out-42\n" || stderr != "err-1\n" {
					t.Fatalf("kubectl exec: stdout %q, stderr %q", stdout, stderr)
				}
				t.Logf("kubectl exec of a command (%s): %s", mode.name, time.Since(start).Round(time.Millisecond))
				// A failing command's exit code is kubectl's.
				_, stderr, err = k.Run(ctx, nil, "exec", work.Name, "-c", "logger", "--", "sh", "-c", "exit 3")
				var exit *exec.ExitError
				if !errors.As(err, &exit) || exit.ExitCode() != 3 {
					t.Fatalf("kubectl exec of exit 3: %v: %s; want exit status 3", err, stderr)
				}
				_, stderr, err = k.Run(ctx, nil, "-v=7", "exec", work.Name, "-c", "logger", "--", "true")
				if err != nil {
					t.Fatalf("kubectl -v=7 exec: %v: %s", err, lastLines(stderr, 5))
				}
				checkProtocol(t, "exec", stderr, mode.proto, mode.notProto)
			})

			t.Run("exec -i sh", func(t *testing.T) {
				script := "x=6\necho $((x*7))\necho $HOSTNAME\nexit 0\n"
				got, stderr, err := k.Run(ctx, strings.NewReader(script), "exec", "-i", work.Name, "-c", "logger", "--", "sh")
				if err != nil || got != "42\n"+work.Name+"\n" {
					t.Fatalf("kubectl exec -i sh: %q, %v: %s; want 42 and the hostname", got, err, stderr)
				}
				// No exit in the script: the end of stdin ends the shell.
				got, stderr, err = k.Run(ctx, strings.NewReader("echo $((6*7))\n"), "exec", "-i", work.Name, "-c", "logger", "--", "sh")
				if err != nil || got != "42\n" {
					t.Fatalf("kubectl exec -i sh, stdin closed: %q, %v: %s", got, err, stderr)
				}
			})

			t.Run("exec, a megabyte each way", func(t *testing.T) {
				// Many frames through the translation and the tunnel, in
				// order and none lost: 1 MiB in on stdin, counted; ~1.3 MB out.
				in := bytes.Repeat([]byte("0123456789abcde\n"), 1<<16)
				got := kubectlOK(ctx, t, k, bytes.NewReader(in), "exec", "-i", work.Name, "-c", "logger", "--", "wc", "-c")
				if strings.TrimSpace(got) != fmt.Sprint(len(in)) {
					t.Fatalf("kubectl exec -i wc -c of %d bytes: %q", len(in), got)
				}
				start := time.Now()
				got = kubectlOK(ctx, t, k, nil, "exec", work.Name, "-c", "logger", "--", "awk", "BEGIN { for (i = 1; i <= 200000; i++) print i }")
				lines := strings.Split(strings.TrimSuffix(got, "\n"), "\n")
				if len(lines) != 200000 || lines[0] != "1" || lines[len(lines)-1] != "200000" || lines[123456] != "123457" {
					t.Fatalf("kubectl exec printing 1..200000: %d lines, %d bytes", len(lines), len(got))
				}
				el := time.Since(start)
				// The same command by the runtime's own exec, no kubectl,
				// API server or tunnel: what the path adds.
				c, err := e2eenv.RunningContainer(ctx, rt, uids[0], "logger")
				if err != nil {
					t.Fatal(err)
				}
				start = time.Now()
				if _, err := e2eenv.Exec(ctx, rt, c.GetId(), "awk", "BEGIN { for (i = 1; i <= 200000; i++) print i }"); err != nil {
					t.Fatal(err)
				}
				t.Logf("kubectl exec (%s): %d bytes of output in %s (the runtime's exec alone: %s)", mode.name, len(got),
					el.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
			})

			t.Run("attach -i", func(t *testing.T) {
				// The echoer container reads its stdin (spec stdin: true)
				// and writes got:<line>; attach feeds it and reads it.
				bg := startKubectl(ctx, t, k, true, "-v=7", "attach", "-i", work.Name, "-c", "echoer")
				token := fmt.Sprintf("attach-%s-%d", mode.name, time.Now().UnixNano())
				if _, err := io.WriteString(bg.stdin, token+"\n"); err != nil {
					t.Fatal(err)
				}
				if l := bg.line(t, func(l string) bool { return strings.Contains(l, token) }, 20*time.Second); l != "got:"+token {
					t.Fatalf("kubectl attach: %q, want got:%s", l, token)
				}
				checkProtocol(t, "attach", bg.stderr.String(), mode.proto, mode.notProto)
				// Attached without stdin to a container that only writes:
				// its new lines arrive.
				out := startKubectl(ctx, t, k, false, "attach", work.Name, "-c", "logger")
				if l := out.line(t, func(string) bool { return true }, 10*time.Second); !strings.HasPrefix(l, "line ") {
					t.Fatalf("kubectl attach to the logger: %q", l)
				}
			})

			t.Run("port-forward", func(t *testing.T) {
				local := e2eenv.FreePort(t)
				bg := startKubectl(ctx, t, k, false, "-v=7", "port-forward", "--address=127.0.0.1", work.Name, fmt.Sprintf("%d:8080", local))
				l := bg.line(t, func(l string) bool { return strings.HasPrefix(l, "Forwarding from") }, 20*time.Second)
				if want := fmt.Sprintf("Forwarding from 127.0.0.1:%d -> 8080", local); l != want {
					t.Fatalf("kubectl port-forward: %q, want %q", l, want)
				}
				hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Proxy: nil}}
				for i := range 5 {
					start := time.Now()
					body, err := httpGet(ctx, hc, fmt.Sprintf("http://127.0.0.1:%d/index.html", local))
					if err != nil || body != "served by "+work.Name+"\n" {
						t.Fatalf("GET #%d through kubectl port-forward: %q, %v: %s", i, body, err, lastLines(bg.stderr.String(), 5))
					}
					if i == 0 {
						t.Logf("first GET through kubectl port-forward (%s): %s", mode.name, time.Since(start).Round(time.Millisecond))
					}
				}
				// Port-forward's upgrade is its own: SPDY/3.1, tunnelled in a
				// websocket or not.
				if mode.name == "websocket" {
					checkProtocol(t, "port-forward", bg.stderr.String(), "Sec-Websocket-Protocol: SPDY/3.1+portforward.k8s.io", "X-Stream-Protocol-Version")
				} else {
					checkProtocol(t, "port-forward", bg.stderr.String(), "X-Stream-Protocol-Version: portforward.k8s.io", "Sec-Websocket-Protocol")
				}
			})
		})
	}

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
		if cur := kubectlOK(ctx, t, kubectl, nil, "logs", p.Name, "-c", "c"); cur != "second run\n" {
			t.Fatalf("kubectl logs after the restart: %q", cur)
		}
		if prev := kubectlOK(ctx, t, kubectl, nil, "logs", "--previous", p.Name, "-c", "c"); prev != "first run\n" {
			t.Fatalf("kubectl logs --previous: %q; want the first instance's", prev)
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
		// kubectl says so too, and fails.
		if _, stderr, err := kubectl.Run(ctx, nil, "exec", "kubectl-on-b", "-c", "c", "--", "true"); err == nil || !strings.Contains(stderr, "503") {
			t.Fatalf("kubectl exec in a pod on node B: %v: %s; want a failure naming cloudhive's 503", err, stderr)
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

// kubectlOK runs kubectl, failing the test unless it succeeds, and returns
// its stdout.
func kubectlOK(ctx context.Context, t *testing.T, k *e2eenv.Kubectl, stdin io.Reader, args ...string) string {
	t.Helper()
	out, stderr, err := k.Run(ctx, stdin, args...)
	if err != nil {
		t.Fatalf("kubectl %s: %v: %s", strings.Join(args, " "), err, stderr)
	}
	return out
}

// lastLines is the end of a (verbose) kubectl stderr, for failure messages.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// checkProtocol fails the test unless kubectl's -v=7 log shows it asked
// for want and never for notWant (which a fallback would have).
func checkProtocol(t *testing.T, what, log, want, notWant string) {
	t.Helper()
	if !strings.Contains(log, want) || strings.Contains(log, notWant) {
		t.Fatalf("kubectl %s: want %q and no %q in its upgrade requests:\n%s", what, want, notWant, upgradeLines(log))
	}
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, want) {
			t.Logf("kubectl %s asked for %s", what, strings.TrimSpace(l[strings.Index(l, want):]))
			return
		}
	}
}

// upgradeLines are kubectl's -v=7 lines about the protocol it asked for.
func upgradeLines(s string) string {
	var keep []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, "Protocol") || strings.Contains(l, "Upgrade") || strings.Contains(l, "Response Status") {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "\n")
}

// background is a kubectl the test talks to while it runs.
type background struct {
	cmd    *exec.Cmd
	args   []string
	stdin  io.WriteCloser // nil unless asked for
	lines  chan string    // stdout line by line; closed at its end
	stderr *lockedBuffer
	done   chan struct{} // closed when kubectl has exited, with err set
	err    error
}

// startKubectl starts kubectl args (with a stdin pipe if stdin) and stops
// it at the end of the test.
func startKubectl(ctx context.Context, t *testing.T, k *e2eenv.Kubectl, stdin bool, args ...string) *background {
	t.Helper()
	ctx, cancel := context.WithCancel(ctx)
	bg := &background{cmd: k.Command(ctx, args...), args: args, lines: make(chan string, 256), stderr: &lockedBuffer{}, done: make(chan struct{})}
	bg.cmd.Stderr = bg.stderr
	var err error
	if stdin {
		if bg.stdin, err = bg.cmd.StdinPipe(); err != nil {
			t.Fatal(err)
		}
	}
	out, err := bg.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := bg.cmd.Start(); err != nil {
		cancel()
		t.Fatalf("kubectl %s: %v", strings.Join(args, " "), err)
	}
	scanned := make(chan struct{})
	go func() {
		// Lines nobody waits for any more are dropped once kubectl stops.
		defer close(bg.lines)
		defer close(scanned)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			select {
			case bg.lines <- sc.Text():
			case <-ctx.Done():
				return
			}
		}
	}()
	go func() {
		// Wait after the pipe is read to its end, as os/exec asks.
		<-scanned
		bg.err = bg.cmd.Wait()
		close(bg.done)
	}()
	t.Cleanup(func() {
		cancel()
		<-bg.done
	})
	return bg
}

// line waits for the first stdout line that match accepts, failing the test
// when kubectl ends or timeout passes first.
func (bg *background) line(t *testing.T, match func(string) bool, timeout time.Duration) string {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case l, ok := <-bg.lines:
			if !ok {
				<-bg.done
				t.Fatalf("kubectl %s ended (%v) before the line the test waits for: %s",
					strings.Join(bg.args, " "), bg.err, lastLines(bg.stderr.String(), 5))
			}
			if match(l) {
				return l
			}
		case <-deadline:
			t.Fatalf("kubectl %s: not the line the test waits for in %s: %s",
				strings.Join(bg.args, " "), timeout, lastLines(bg.stderr.String(), 5))
		}
	}
}

// lockedBuffer is a bytes.Buffer that a process's stderr copier writes
// while the test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
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
