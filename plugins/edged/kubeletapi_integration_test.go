//go:build containerd

// The kubelet HTTPS API against a real containerd, driven by client-go's own
// clients: logs, exec (SPDY) with a command and an interactive shell,
// port-forward, stats, and refusal of a request without a client certificate.
package edged

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/tools/remotecommand"
	"k8s.io/client-go/transport/spdy"
	"k8s.io/client-go/util/exec"
	statsapi "k8s.io/kubelet/pkg/apis/stats/v1alpha1"
	"k8s.io/utils/clock"

	"github.com/edgehive/edgehive/plugins/edged/container"
	"github.com/edgehive/edgehive/sdk"
	"github.com/edgehive/edgehive/sdk/sdktest"
)

// itClientPKI writes a client CA and returns its path with a client
// certificate and key (PEM) it signed.
func itClientPKI(t *testing.T, dir string) (caFile string, certPEM, keyPEM []byte) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "kubelet-client-ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "kube-apiserver-kubelet-client"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(key)
	caFile = filepath.Join(dir, "client-ca.crt")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o644); err != nil {
		t.Fatal(err)
	}
	return caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
}

func TestContainerdKubeletAPI(t *testing.T) {
	dataDir, pkiDir := t.TempDir(), t.TempDir()
	caFile, certPEM, keyPEM := itClientPKI(t, pkiDir)
	m := NewWithRuntime(itRuntime(t), clock.RealClock{})
	cfg := fmt.Sprintf(`{"sandbox_image":"edgehive.local/pause:3.10","http_address":"127.0.0.1:0",
		"kubelet_api":{"enabled":true,"listen":"127.0.0.1:0","client_ca_file":%q,"authorized_users":["kube-apiserver-kubelet-client"]}}`, caFile)
	h := sdktest.New(t, m, sdktest.Options{ConfigJSON: cfg, DataDir: dataDir})
	h.OnSync(metaManager, func(req *sdk.Message) (*sdk.Message, error) {
		resp := sdk.NewMessage(req.Header.ID).BuildRouter(metaManager, sdk.GroupMeta, req.Router.Resource, sdk.OpResponse)
		return resp, resp.FillBody([]string{})
	})
	addr := m.KubeletAPIAddr()
	if addr == "" {
		t.Fatal("kubelet API not serving")
	}
	if p := m.httpPort(); strconv.Itoa(int(p)) != addr[strings.LastIndex(addr, ":")+1:] {
		t.Fatalf("node status would report port %d, the API serves on %s", p, addr)
	}
	servingPEM, err := os.ReadFile(filepath.Join(dataDir, "kubelet-api", "kubelet.crt"))
	if err != nil {
		t.Fatal(err)
	}
	restCfg := &rest.Config{Host: "https://" + addr, TLSClientConfig: rest.TLSClientConfig{
		CertData: certPEM, KeyData: keyPEM, CAData: servingPEM}}
	httpClient, err := rest.HTTPClientFor(restCfg)
	if err != nil {
		t.Fatal(err)
	}

	suffix := time.Now().Format("150405")
	pod := mkPod("it-kapi-"+suffix, "it-kapi-"+suffix, false, "logger", "web")
	pod.Spec.Containers[0].Command = []string{"sh", "-c", `i=0; while true; do i=$((i+1)); echo line$i; sleep 0.2; done`}
	pod.Spec.Containers[1].Command = []string{"sh", "-c", `mkdir -p /tmp/www && echo hello-pf > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www`}
	grace := int64(1)
	pod.Spec.TerminationGracePeriodSeconds = &grace
	if err := h.Deliver(podMsg(t, sdk.OpInsert, pod)); err != nil {
		t.Fatal(err)
	}
	check := itRuntime(t)
	defer check.Close()
	defer func() {
		// Remove the pod and wait for it to be gone before edged stops.
		if err := h.Deliver(podMsg(t, sdk.OpDelete, pod)); err != nil {
			t.Error(err)
		}
		deadline := time.Now().Add(30 * time.Second)
		for time.Now().Before(deadline) {
			ps, err := container.GetPodStatus(context.Background(), check, pod.UID, pod.Name, pod.Namespace)
			if err == nil && len(ps.Sandboxes) == 0 && len(ps.Containers) == 0 {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Errorf("pod %s not removed", pod.Name)
	}()
	waitStatus(t, h, pod.Name, 60*time.Second, running)
	time.Sleep(time.Second) // a few log lines

	base := "https://" + addr
	get := func(path string) (int, []byte) {
		t.Helper()
		resp, err := httpClient.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}

	t.Run("no client certificate", func(t *testing.T) {
		roots := x509.NewCertPool()
		roots.AppendCertsFromPEM(servingPEM)
		c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
		for _, p := range []string{"/pods", "/healthz", "/containerLogs/default/" + pod.Name + "/logger", "/stats/summary"} {
			resp, err := c.Get(base + p)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusUnauthorized {
				t.Errorf("%s without a certificate: %d, want 401", p, resp.StatusCode)
			}
		}
	})

	t.Run("healthz and pods", func(t *testing.T) {
		if code, body := get("/healthz"); code != 200 || string(body) != "ok" {
			t.Fatalf("healthz %d %q", code, body)
		}
		code, body := get("/pods")
		var list v1.PodList
		if err := json.Unmarshal(body, &list); code != 200 || err != nil || len(list.Items) != 1 || list.Items[0].Name != pod.Name {
			t.Fatalf("pods %d %v %s", code, err, body)
		}
	})

	logsPath := "/containerLogs/default/" + pod.Name + "/logger"
	t.Run("logs", func(t *testing.T) {
		code, body := get(logsPath + "?tailLines=2")
		lines := strings.Split(strings.TrimSuffix(string(body), "\n"), "\n")
		if code != 200 || len(lines) != 2 || !strings.HasPrefix(lines[0], "line") || !strings.HasPrefix(lines[1], "line") {
			t.Fatalf("tailLines=2: %d %q", code, body)
		}
		code, body = get(logsPath + "?timestamps=true&limitBytes=40")
		if code != 200 || len(body) != 40 {
			t.Fatalf("limitBytes=40: %d %q", code, body)
		}
		if _, err := time.Parse(time.RFC3339Nano, strings.Fields(string(body))[0]); err != nil {
			t.Fatalf("timestamps: %q: %v", body, err)
		}
		code, body = get(logsPath)
		if code != 200 || !strings.HasPrefix(string(body), "line1\nline2\n") {
			t.Fatalf("all: %d %q", code, body)
		}
		if code, body = get(logsPath + "?previous=true"); code != 404 {
			t.Fatalf("previous of a first instance: %d %q", code, body)
		}
		if code, body = get(logsPath + "?sinceSeconds=1"); code != 200 || strings.HasPrefix(string(body), "line1\n") || len(body) == 0 {
			t.Fatalf("sinceSeconds=1: %d %q", code, body)
		}
		if code, _ = get(logsPath + "?tailLines=x"); code != 400 {
			t.Fatalf("bad tailLines: %d", code)
		}
	})

	t.Run("logs follow", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, "GET", base+logsPath+"?follow=true&tailLines=1", nil)
		resp, err := httpClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		var nums []int
		t0 := time.Now()
		for len(nums) < 4 && sc.Scan() {
			n, err := strconv.Atoi(strings.TrimPrefix(sc.Text(), "line"))
			if err != nil {
				t.Fatalf("line %q", sc.Text())
			}
			nums = append(nums, n)
		}
		if len(nums) < 4 {
			t.Fatalf("followed lines %v: %v", nums, sc.Err())
		}
		for i := 1; i < len(nums); i++ {
			if nums[i] != nums[i-1]+1 {
				t.Fatalf("followed lines not consecutive: %v", nums)
			}
		}
		t.Logf("follow: tail line then 3 new lines %v in %v", nums, time.Since(t0))
	})

	execURL := func(container string, q url.Values) *url.URL {
		u, _ := url.Parse(base + "/exec/default/" + pod.Name + "/" + container + "?" + q.Encode())
		return u
	}
	t.Run("exec command", func(t *testing.T) {
		q := url.Values{"command": {"sh", "-c", "echo out; echo err >&2; exit 3"}, "output": {"1"}, "error": {"1"}}
		ex, err := remotecommand.NewSPDYExecutor(restCfg, "POST", execURL("web", q))
		if err != nil {
			t.Fatal(err)
		}
		var stdout, stderr bytes.Buffer
		t0 := time.Now()
		err = ex.StreamWithContext(context.Background(), remotecommand.StreamOptions{Stdout: &stdout, Stderr: &stderr})
		var exitErr exec.ExitError
		if !errors.As(err, &exitErr) || exitErr.ExitStatus() != 3 {
			t.Fatalf("exit: %v", err)
		}
		if stdout.String() != "out\n" || stderr.String() != "err\n" {
			t.Fatalf("stdout %q stderr %q", stdout.String(), stderr.String())
		}
		t.Logf("exec round trip %v", time.Since(t0))
	})

	t.Run("exec interactive shell", func(t *testing.T) {
		q := url.Values{"command": {"sh"}, "input": {"1"}, "output": {"1"}, "error": {"1"}}
		ex, err := remotecommand.NewSPDYExecutor(restCfg, "POST", execURL("web", q))
		if err != nil {
			t.Fatal(err)
		}
		inR, inW := io.Pipe()
		outR, outW := io.Pipe()
		done := make(chan error, 1)
		go func() {
			done <- ex.StreamWithContext(context.Background(), remotecommand.StreamOptions{Stdin: inR, Stdout: outW, Stderr: io.Discard})
			outW.Close()
		}()
		out := bufio.NewReader(outR)
		for i, step := range []struct{ in, want string }{
			{"echo $((6*7))\n", "42"},
			{"cat /tmp/www/index.html\n", "hello-pf"},
			{"x=edge; echo ${x}hive\n", "edgehive"},
		} {
			if _, err := inW.Write([]byte(step.in)); err != nil {
				t.Fatal(err)
			}
			line, err := out.ReadString('\n')
			if err != nil || strings.TrimSpace(line) != step.want {
				t.Fatalf("step %d: %q %v, want %q", i, line, err, step.want)
			}
		}
		_, _ = inW.Write([]byte("exit 0\n"))
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("shell ended with %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("shell did not end after exit")
		}
		inW.Close()
	})

	t.Run("exec in a missing container", func(t *testing.T) {
		q := url.Values{"command": {"true"}, "output": {"1"}}
		ex, err := remotecommand.NewSPDYExecutor(restCfg, "POST", execURL("nope", q))
		if err != nil {
			t.Fatal(err)
		}
		if err := ex.StreamWithContext(context.Background(), remotecommand.StreamOptions{Stdout: io.Discard}); err == nil {
			t.Fatal("exec in a missing container succeeded")
		}
	})

	t.Run("attach", func(t *testing.T) {
		u, _ := url.Parse(base + "/attach/default/" + pod.Name + "/logger?output=1&error=1")
		ex, err := remotecommand.NewSPDYExecutor(restCfg, "POST", u)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		outR, outW := io.Pipe()
		done := make(chan error, 1)
		go func() {
			done <- ex.StreamWithContext(ctx, remotecommand.StreamOptions{Stdout: outW, Stderr: io.Discard})
			outW.Close()
		}()
		sc := bufio.NewScanner(outR)
		for i := 0; i < 2; i++ {
			if !sc.Scan() || !strings.HasPrefix(sc.Text(), "line") {
				t.Fatalf("attached output %q: %v", sc.Text(), sc.Err())
			}
		}
		cancel()
		go func() { _, _ = io.Copy(io.Discard, outR) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("attach did not end when cancelled")
		}
	})

	t.Run("port-forward", func(t *testing.T) {
		transport, upgrader, err := spdy.RoundTripperFor(restCfg)
		if err != nil {
			t.Fatal(err)
		}
		u, _ := url.Parse(base + "/portForward/default/" + pod.Name)
		dialer := spdy.NewDialer(upgrader, &http.Client{Transport: transport}, "POST", u)
		stop, ready := make(chan struct{}), make(chan struct{})
		fw, err := portforward.NewOnAddresses(dialer, []string{"127.0.0.1"}, []string{"0:8080"}, stop, ready, io.Discard, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		fwDone := make(chan error, 1)
		go func() { fwDone <- fw.ForwardPorts() }()
		defer func() {
			close(stop)
			<-fwDone
		}()
		select {
		case <-ready:
		case err := <-fwDone:
			t.Fatalf("port-forward ended: %v", err)
		case <-time.After(20 * time.Second):
			t.Fatal("port-forward not ready")
		}
		ports, err := fw.GetPorts()
		if err != nil || len(ports) != 1 {
			t.Fatalf("ports %v %v", ports, err)
		}
		for i := range 3 { // several connections over one forward
			t0 := time.Now()
			resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/index.html", ports[0].Local))
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || string(body) != "hello-pf\n" {
				t.Fatalf("through port-forward: %d %q", resp.StatusCode, body)
			}
			t.Logf("port-forward GET %d: %v", i, time.Since(t0))
		}
	})

	t.Run("previous logs and follow ending with the container", func(t *testing.T) {
		crash := mkPod("it-kapi-crash-"+suffix, "it-kapi-crash-"+suffix, true, "crash")
		crash.Spec.TerminationGracePeriodSeconds = &grace
		crash.Spec.Containers[0].Command = []string{"sh", "-c", "echo run; sleep 2; exit 1"}
		if err := h.Deliver(podMsg(t, sdk.OpInsert, crash)); err != nil {
			t.Fatal(err)
		}
		defer h.Deliver(podMsg(t, sdk.OpDelete, crash))
		waitStatus(t, h, crash.Name, 60*time.Second, func(s v1.PodStatus) bool {
			return len(s.ContainerStatuses) == 1 && s.ContainerStatuses[0].RestartCount >= 1
		})
		path := "/containerLogs/default/" + crash.Name + "/crash"
		if code, body := get(path + "?previous=true"); code != 200 || string(body) != "run\n" {
			t.Fatalf("previous: %d %q", code, body)
		}
		t0 := time.Now()
		code, body := get(path + "?follow=true")
		if code != 200 || string(body) != "run\n" {
			t.Fatalf("follow: %d %q", code, body)
		}
		if d := time.Since(t0); d > 8*time.Second {
			t.Fatalf("follow took %v: it did not end when the container exited", d)
		}
		t.Logf("follow of a container ended %v after the request, with its exit", time.Since(t0))
	})

	t.Run("stats", func(t *testing.T) {
		code, body := get("/stats/summary")
		var sum statsapi.Summary
		if err := json.Unmarshal(body, &sum); code != 200 || err != nil {
			t.Fatalf("summary %d %v %s", code, err, body)
		}
		n := sum.Node
		if n.CPU == nil || n.CPU.UsageCoreNanoSeconds == nil || *n.CPU.UsageCoreNanoSeconds == 0 ||
			n.Memory == nil || n.Memory.WorkingSetBytes == nil || *n.Memory.WorkingSetBytes == 0 {
			t.Fatalf("node stats %s", body)
		}
		var p *statsapi.PodStats
		for i := range sum.Pods {
			if sum.Pods[i].PodRef.Name == pod.Name {
				p = &sum.Pods[i]
			}
		}
		if p == nil || len(p.Containers) != 2 {
			t.Fatalf("pod stats %s", body)
		}
		if p.PodRef.Name != pod.Name || p.CPU == nil || *p.CPU.UsageCoreNanoSeconds == 0 || p.Memory == nil || *p.Memory.WorkingSetBytes == 0 {
			t.Fatalf("pod %s", body)
		}
		for _, c := range p.Containers {
			if c.CPU == nil || c.CPU.UsageCoreNanoSeconds == nil || *c.CPU.UsageCoreNanoSeconds == 0 ||
				c.Memory == nil || c.Memory.WorkingSetBytes == nil || *c.Memory.WorkingSetBytes == 0 || c.StartTime.IsZero() {
				t.Fatalf("container %s: %s", c.Name, body)
			}
		}
		t.Logf("node cpu %d ns (%d nanocores), memory ws %d; pod cpu %d ns, memory ws %d", *n.CPU.UsageCoreNanoSeconds,
			*n.CPU.UsageNanoCores, *n.Memory.WorkingSetBytes, *p.CPU.UsageCoreNanoSeconds, *p.Memory.WorkingSetBytes)

		code, body = get("/metrics/resource")
		text := string(body)
		for _, want := range []string{
			`container_cpu_usage_seconds_total{container="logger",namespace="default",pod="` + pod.Name + `"} `,
			`container_memory_working_set_bytes{container="web",namespace="default",pod="` + pod.Name + `"} `,
			`pod_cpu_usage_seconds_total{namespace="default",pod="` + pod.Name + `"} `,
			`pod_memory_working_set_bytes{namespace="default",pod="` + pod.Name + `"} `,
			"\nnode_cpu_usage_seconds_total ", "\nnode_memory_working_set_bytes ",
		} {
			if code != 200 || !strings.Contains(text, want) {
				t.Errorf("metrics/resource %d lacks %q:\n%s", code, want, text)
			}
		}
	})
}
