//go:build e2e

package edgecontroller

// Against a real etcd and kube-apiserver (what the fake clientset cannot
// show: strategic merge patches on status subresources, UID preconditions,
// field selectors, graceful deletion). KUBE_APISERVER names the binary;
// by default the one DESIGN.md §6 caches.

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	coordv1 "k8s.io/api/coordination/v1"
	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/edgehive/edgehive/cloud/nodelink/nodelinktest"
	"github.com/edgehive/edgehive/sdk"
)

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func startProcess(t *testing.T, dir, name string, args ...string) {
	t.Helper()
	logf, err := os.Create(filepath.Join(dir, filepath.Base(name)+".log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), "HTTPS_PROXY=http://127.0.0.1:9", "HTTP_PROXY=http://127.0.0.1:9", "NO_PROXY=127.0.0.1")
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			if len(b) > 3000 {
				b = b[len(b)-3000:]
			}
			t.Logf("--- %s log tail:\n%s", name, b)
		}
	})
}

// startAPIServer runs etcd and kube-apiserver on loopback ports and returns
// an admin client config.
func startAPIServer(t *testing.T) *rest.Config {
	t.Helper()
	bin := os.Getenv("KUBE_APISERVER")
	if bin == "" {
		home, _ := os.UserHomeDir()
		bin = filepath.Join(home, ".cache/edgehive/kubernetes-v1.37.2/bin/kube-apiserver")
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("kube-apiserver not found (%v); build it as DESIGN.md §6 says or set KUBE_APISERVER", err)
	}
	dir := t.TempDir()
	etcdPort, peerPort, apiPort := freePort(t), freePort(t), freePort(t)
	etcdURL := fmt.Sprintf("http://127.0.0.1:%d", etcdPort)
	startProcess(t, dir, "etcd", "--data-dir", filepath.Join(dir, "etcd"),
		"--listen-client-urls", etcdURL, "--advertise-client-urls", etcdURL,
		"--listen-peer-urls", fmt.Sprintf("http://127.0.0.1:%d", peerPort),
		"--initial-advertise-peer-urls", fmt.Sprintf("http://127.0.0.1:%d", peerPort),
		"--initial-cluster", fmt.Sprintf("default=http://127.0.0.1:%d", peerPort))

	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
	pubDER, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})
	const token = "edgecontroller-e2e-admin-token"
	for name, data := range map[string][]byte{
		"sa.key": keyPEM, "sa.pub": pubPEM,
		"tokens.csv": []byte(token + ",admin,admin,system:masters\n"),
	} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	startProcess(t, dir, bin,
		"--etcd-servers", etcdURL,
		"--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1",
		"--endpoint-reconciler-type", "none", // a loopback address cannot be advertised
		"--secure-port", fmt.Sprint(apiPort), "--cert-dir", filepath.Join(dir, "certs"),
		"--service-cluster-ip-range", "10.96.0.0/24",
		"--service-account-issuer", "https://kubernetes.default.svc",
		"--service-account-key-file", filepath.Join(dir, "sa.pub"),
		"--service-account-signing-key-file", filepath.Join(dir, "sa.key"),
		"--token-auth-file", filepath.Join(dir, "tokens.csv"),
		"--authorization-mode", "RBAC",
		"--disable-admission-plugins", "ServiceAccount",
		"--enable-priority-and-fairness=false")

	cfg := &rest.Config{Host: fmt.Sprintf("https://127.0.0.1:%d", apiPort), BearerToken: token,
		TLSClientConfig: rest.TLSClientConfig{Insecure: true}, QPS: 100, Burst: 200}
	hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	deadline := time.Now().Add(90 * time.Second)
	for {
		req, _ := http.NewRequest(http.MethodGet, cfg.Host+"/readyz", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := hc.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("kube-apiserver not ready: %v", err)
		}
		time.Sleep(250 * time.Millisecond)
	}
	// the system namespaces appear shortly after readyz
	cs := kubernetes.NewForConfigOrDie(cfg)
	for {
		if _, err := cs.CoreV1().Namespaces().Get(context.Background(), leaseNamespace, metav1.GetOptions{}); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("namespace %s never appeared", leaseNamespace)
		}
		time.Sleep(250 * time.Millisecond)
	}
	return cfg
}

func TestAgainstKubeAPIServer(t *testing.T) {
	restCfg := startAPIServer(t)
	restCfg.WarningHandler = rest.NoWarnings{} // v1 Endpoints are deprecated, and used on purpose
	client := kubernetes.NewForConfigOrDie(restCfg)
	sender := nodelinktest.New(edge1, edge2)
	logger := hclog.New(&hclog.LoggerOptions{Level: hclog.Info, Output: testWriter{t}})
	c, err := New(client, sender, logger, Config{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	go func() { runDone <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-runDone; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	h := &harness{t: t, ctx: ctx, sender: sender, c: c}
	bg := context.Background()

	// Registration.
	reg := &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: edge1, Labels: map[string]string{"kubernetes.io/hostname": edge1}},
		Status: v1.NodeStatus{Capacity: v1.ResourceList{v1.ResourcePods: resourceQuantity("110")},
			Conditions: []v1.NodeCondition{{Type: v1.NodeReady, Status: v1.ConditionFalse, Reason: "Starting"}}}}
	resp := h.request(edge1, upMsg(sdk.OpInsert, "null/node/"+edge1, reg))
	if r := h.objectResp(resp); r.Err != nil {
		t.Fatalf("register: %s", resp.Content)
	}
	node, err := client.CoreV1().Nodes().Get(bg, edge1, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := node.Labels[DefaultEdgeNodeLabel]; !ok {
		t.Fatalf("labels %v", node.Labels)
	}
	// Registering again (edge restart) merges.
	resp = h.request(edge1, upMsg(sdk.OpInsert, "null/node/"+edge1, reg))
	if r := h.objectResp(resp); r.Err != nil {
		t.Fatalf("re-register: %s", resp.Content)
	}

	// Node status patch, as KubeEdge sends it: a JSON string with $setElementOrder.
	hb := time.Now().UTC().Format(time.RFC3339)
	patch := `{"status":{"$setElementOrder/conditions":[{"type":"Ready"}],"conditions":[{"type":"Ready","status":"True","reason":"KubeletReady","lastHeartbeatTime":"` + hb + `"}]}}`
	resp = h.request(edge1, upMsg(sdk.OpPatch, "null/nodepatch/"+edge1, patch))
	if r := h.objectResp(resp); r.Err != nil {
		t.Fatalf("nodepatch: %s", resp.Content)
	}
	node, _ = client.CoreV1().Nodes().Get(bg, edge1, metav1.GetOptions{})
	if len(node.Status.Conditions) != 1 || node.Status.Conditions[0].Status != v1.ConditionTrue {
		t.Fatalf("conditions %+v", node.Status.Conditions)
	}
	resp = h.request(edge1, upMsg(sdk.OpPatch, "null/nodepatch/"+edge1, `{"spec":{"unschedulable":true}}`))
	if r := h.objectResp(resp); r.Err == nil || r.Err.ErrStatus.Code != http.StatusBadRequest {
		t.Fatalf("spec patch not refused: %s", resp.Content)
	}

	// Lease: query (missing), insert, update with a stale resourceVersion.
	resp = h.request(edge1, upMsg(sdk.OpQuery, "kube-node-lease/lease/"+edge1, nil))
	if r := h.objectResp(resp); r.Err == nil || r.Err.ErrStatus.Reason != metav1.StatusReasonNotFound {
		t.Fatalf("lease query: %s", resp.Content)
	}
	holder, dur := edge1, int32(40)
	renew := metav1.NewMicroTime(time.Now())
	l := &coordv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: edge1, Namespace: leaseNamespace},
		Spec: coordv1.LeaseSpec{HolderIdentity: &holder, LeaseDurationSeconds: &dur, RenewTime: &renew}}
	resp = h.request(edge1, upMsg(sdk.OpInsert, "kube-node-lease/lease/"+edge1, l))
	if r := h.objectResp(resp); r.Err != nil {
		t.Fatalf("lease insert: %s", resp.Content)
	}
	later := metav1.NewMicroTime(time.Now().Add(10 * time.Second))
	l.Spec.RenewTime, l.ResourceVersion = &later, "1"
	resp = h.request(edge1, upMsg(sdk.OpUpdate, "kube-node-lease/lease/"+edge1, l))
	if r := h.objectResp(resp); r.Err != nil {
		t.Fatalf("lease update: %s", resp.Content)
	}
	got, err := client.CoordinationV1().Leases(leaseNamespace).Get(bg, edge1, metav1.GetOptions{})
	if err != nil || got.Spec.RenewTime == nil || got.Spec.RenewTime.Unix() != later.Unix() {
		t.Fatalf("lease %+v %v", got, err)
	}

	// A pod with a configMap, bound to the node.
	if _, err := client.CoreV1().ConfigMaps(ns).Create(bg, &v1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "cfg"}, Data: map[string]string{"k": "1"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	p, err := client.CoreV1().Pods(ns).Create(bg, apiPod(pod("web", edge1, withConfigMapVolume("cfg"))), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	m := h.waitSent(edge1, isMsg(sdk.OpInsert, "default/pod/web"))
	if m.Header.ResourceVersion != p.ResourceVersion {
		t.Fatalf("pod insert rv %q, API %q", m.Header.ResourceVersion, p.ResourceVersion)
	}
	// An unscheduled pod never reaches the cache (field selector spec.nodeName!=).
	if _, err := client.CoreV1().Pods(ns).Create(bg, apiPod(pod("pending", "")), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	resp = h.request(edge1, upMsg(sdk.OpQuery, "default/configmap/cfg", nil))
	if resp.Header.ResourceVersion == "" {
		t.Fatalf("configmap answer without resourceversion: %s", resp.Content)
	}
	cm, _ := client.CoreV1().ConfigMaps(ns).Get(bg, "cfg", metav1.GetOptions{})
	cm.Data["k"] = "2"
	if _, err := client.CoreV1().ConfigMaps(ns).Update(bg, cm, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	h.waitSent(edge1, func(m *sdk.Message) bool {
		return m.Router.Operation == sdk.OpUpdate && m.Router.Resource == "default/configmap/cfg" && strings.Contains(string(m.Content), `"k":"2"`)
	})

	// Pod status, as edged sends it (uid precondition, JSON string).
	st := fmt.Sprintf(`{"metadata":{"uid":%q},"status":{"phase":"Running","podIP":"10.88.0.9","conditions":[{"type":"Ready","status":"True"}]}}`, p.UID)
	resp = h.request(edge1, upMsg(sdk.OpPatch, "default/podpatch/web", st))
	if r := h.objectResp(resp); r.Err != nil {
		t.Fatalf("podpatch: %s", resp.Content)
	}
	if p2, _ := client.CoreV1().Pods(ns).Get(bg, "web", metav1.GetOptions{}); p2.Status.Phase != v1.PodRunning || p2.Status.PodIP != "10.88.0.9" {
		t.Fatalf("pod status %+v", p2.Status)
	}
	// Round trips through the controller to the API (figures for the report).
	const rounds = 100
	startRT := time.Now()
	for i := range rounds {
		st := fmt.Sprintf(`{"metadata":{"uid":%q},"status":{"phase":"Running","message":"round %d"}}`, p.UID, i)
		if r := h.objectResp(h.request(edge1, upMsg(sdk.OpPatch, "default/podpatch/web", st))); r.Err != nil {
			t.Fatalf("podpatch round %d failed", i)
		}
	}
	podRT := time.Since(startRT) / rounds
	startRT = time.Now()
	for range rounds {
		if r := h.objectResp(h.request(edge1, upMsg(sdk.OpUpdate, "kube-node-lease/lease/"+edge1, l))); r.Err != nil {
			t.Fatal("lease round failed")
		}
	}
	t.Logf("sequential round trips via a real kube-apiserver: podpatch %v, lease update %v", podRT, time.Since(startRT)/rounds)
	sender.Reset()

	// Graceful delete: the edge gets an update with deletionTimestamp, kills the
	// pod, deletes it upstream; then the API's delete reaches the edge.
	if err := client.CoreV1().Pods(ns).Delete(bg, "web", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	m = h.waitSent(edge1, isMsg(sdk.OpUpdate, "default/pod/web"))
	var dp v1.Pod
	_ = json.Unmarshal(m.Content, &dp)
	if dp.DeletionTimestamp == nil {
		t.Fatalf("update without deletionTimestamp: %s", m.Content)
	}
	// Another node may not delete it.
	if resp := h.request(edge2, upMsg(sdk.OpDelete, "default/pod/web", map[string]any{"gracePeriodSeconds": 0})); !isErrCode(resp, http.StatusForbidden) {
		t.Fatalf("foreign delete: %s", resp.Content)
	}
	resp = h.request(edge1, upMsg(sdk.OpDelete, "default/pod/web", map[string]any{"gracePeriodSeconds": 0, "preconditions": map[string]any{"uid": p.UID}}))
	if string(resp.Content) != `"OK"` {
		t.Fatalf("pod delete: %s", resp.Content)
	}
	if _, err := client.CoreV1().Pods(ns).Get(bg, "web", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("pod still there: %v", err)
	}
	h.waitSent(edge1, isMsg(sdk.OpDelete, "default/pod/web"))

	// Status for the gone pod: NotFound, and a delete stub downstream.
	sender.Reset()
	resp = h.request(edge1, upMsg(sdk.OpPatch, "default/podpatch/web", st))
	if r := h.objectResp(resp); r.Err == nil || r.Err.ErrStatus.Code != http.StatusNotFound {
		t.Fatalf("podpatch on a gone pod: %s", resp.Content)
	}
	h.waitSent(edge1, func(m *sdk.Message) bool {
		return m.Router.Operation == sdk.OpDelete && m.Router.Resource == "default/pod/web" && strings.Contains(string(m.Content), string(p.UID))
	})

	// A new pod of the same name: a delete with the old UID must not remove it.
	p3, err := client.CoreV1().Pods(ns).Create(bg, apiPod(pod("web", edge1)), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	h.waitSent(edge1, isMsg(sdk.OpInsert, "default/pod/web"))
	resp = h.request(edge1, upMsg(sdk.OpDelete, "default/pod/web", map[string]any{"gracePeriodSeconds": 0, "preconditions": map[string]any{"uid": p.UID}}))
	if string(resp.Content) != `"OK"` {
		t.Fatalf("stale delete: %s", resp.Content)
	}
	if cur, err := client.CoreV1().Pods(ns).Get(bg, "web", metav1.GetOptions{}); err != nil || cur.UID != p3.UID {
		t.Fatalf("new pod removed by a stale delete: %v", err)
	}

	// Resync on connect sends the Node, configMaps, services, endpoints, pods.
	//nolint:staticcheck // v1 Endpoints, as the edge serves them
	if _, err := client.CoreV1().Endpoints(ns).Create(bg, &v1.Endpoints{ObjectMeta: metav1.ObjectMeta{Name: "kubernetes"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond) // let the informer see it
	sender.Reset()
	c.NodeConnected(ctx, edge1)
	for _, r := range []string{"null/node/" + edge1, "default/service/kubernetes", "default/endpoints/kubernetes", "default/pod/web"} {
		h.waitSent(edge1, isMsg(sdk.OpUpdate, r))
	}
	if _, err := c.podLister.Pods(ns).Get("pending"); !apierrors.IsNotFound(err) {
		t.Fatalf("unscheduled pod in the cache (field selector not applied): %v", err)
	}
	if _, err := c.podLister.Pods(ns).Get("web"); err != nil {
		t.Fatalf("bound pod not in the cache: %v", err)
	}
}

func isErrCode(m *sdk.Message, code int32) bool {
	st, ok := errStatus(m)
	return ok && st.Code == code
}

func resourceQuantity(s string) resource.Quantity { return resource.MustParse(s) }

// apiPod clears what the API server sets itself.
func apiPod(p *v1.Pod) *v1.Pod {
	p.ResourceVersion, p.UID = "", ""
	return p
}
