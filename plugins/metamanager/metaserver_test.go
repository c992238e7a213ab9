package metamanager

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"

	"github.com/edgehive/edgehive/sdk"
	"github.com/edgehive/edgehive/sdk/sdktest"
)

// metaFixture is metamanager with its MetaServer on an ephemeral loopback
// port, and a client-go clientset pointed at it.
func metaFixture(t *testing.T, secrets bool) (*fixture, *kubernetes.Clientset) {
	t.Helper()
	db := filepath.Join(t.TempDir(), "meta.db")
	m := New()
	h := sdktest.New(t, m, sdktest.Options{ConfigJSON: fmt.Sprintf(
		`{"db_file":%q,"remote_query_timeout":"2s","metaserver":{"enabled":true,"listen":"127.0.0.1:0","secrets":%t}}`, db, secrets)})
	if m.MetaServerAddr() == "" {
		t.Fatal("the MetaServer is not listening")
	}
	cs, err := kubernetes.NewForConfig(&rest.Config{Host: "http://" + m.MetaServerAddr(), Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{t: t, h: h, m: m, db: db}, cs
}

func labelledPod(name, rv, app, image string) string {
	return fmt.Sprintf(`{"apiVersion":"v1","kind":"Pod","metadata":{"name":%q,"namespace":"default","uid":"uid-%s","resourceVersion":%q,"labels":{"app":%q}},`+
		`"spec":{"nodeName":"edge-1","containers":[{"name":"c","image":%q}]},"status":{"phase":"Running"}}`, name, name, rv, app, image)
}

func rvNumber(t *testing.T, rv string) uint64 {
	t.Helper()
	n, err := strconv.ParseUint(rv, 10, 64)
	if err != nil {
		t.Fatalf("resourceVersion %q: %v", rv, err)
	}
	return n
}

func nextEvent(t *testing.T, w watch.Interface) watch.Event {
	t.Helper()
	select {
	case ev, ok := <-w.ResultChan():
		if !ok {
			t.Fatal("the watch ended")
		}
		return ev
	case <-time.After(waitFor):
		t.Fatal("no watch event")
	}
	return watch.Event{}
}

func TestMetaServerClientGo(t *testing.T) {
	f, cs := metaFixture(t, false)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	f.deliver(fromCloud(sdk.OpInsert, "default/pod/web-1", "100", labelledPod("web-1", "100", "web", "nginx:1")))
	f.deliver(fromCloud(sdk.OpInsert, "default/pod/db-1", "101", labelledPod("db-1", "101", "db", "pg:16")))
	f.deliver(fromCloud(sdk.OpInsert, "default/configmap/cfg", "102", cmJSON("default", "cfg", "102", "v1")))
	f.deliver(fromCloud(sdk.OpUpdate, "null/node/edge-1", "103", `{"apiVersion":"v1","kind":"Node","metadata":{"name":"edge-1","labels":{"node-role.kubernetes.io/edge":""}}}`))

	// get
	pod, err := cs.CoreV1().Pods("default").Get(ctx, "web-1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if pod.Spec.Containers[0].Image != "nginx:1" || pod.Labels["app"] != "web" || pod.UID != "uid-web-1" || pod.ResourceVersion == "" {
		t.Fatalf("got pod %+v", pod)
	}
	node, err := cs.CoreV1().Nodes().Get(ctx, "edge-1", metav1.GetOptions{})
	if err != nil || node.Name != "edge-1" {
		t.Fatalf("node %v, %v", node, err)
	}
	cm, err := cs.CoreV1().ConfigMaps("default").Get(ctx, "cfg", metav1.GetOptions{})
	if err != nil || cm.Data["k"] != "v1" {
		t.Fatalf("configmap %v, %v", cm, err)
	}

	// list, all namespaces and with a label selector
	all, err := cs.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(all.Items) != 2 || all.ResourceVersion == "" {
		t.Fatalf("list: %d pods, rv %q", len(all.Items), all.ResourceVersion)
	}
	web, err := cs.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
	if err != nil {
		t.Fatal(err)
	}
	if len(web.Items) != 1 || web.Items[0].Name != "web-1" {
		t.Fatalf("app=web: %+v", web.Items)
	}
	byField, err := cs.CoreV1().Pods("default").List(ctx, metav1.ListOptions{FieldSelector: "metadata.name=db-1"})
	if err != nil || len(byField.Items) != 1 || byField.Items[0].Name != "db-1" {
		t.Fatalf("metadata.name=db-1: %v, %v", byField, err)
	}

	// watch from the list's version; an update that arrives as a message
	// is seen as MODIFIED, a pod that starts matching as ADDED, a delete
	// as DELETED, and pods outside the selector not at all.
	w, err := cs.CoreV1().Pods("default").Watch(ctx, metav1.ListOptions{ResourceVersion: web.ResourceVersion, LabelSelector: "app=web"})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	f.deliver(fromCloud(sdk.OpUpdate, "default/pod/db-1", "110", labelledPod("db-1", "110", "db", "pg:17")))
	sent := time.Now()
	f.deliver(fromCloud(sdk.OpUpdate, "default/pod/web-1", "111", labelledPod("web-1", "111", "web", "nginx:2")))
	ev := nextEvent(t, w)
	t.Logf("message stored and seen by a client-go watch after %s", time.Since(sent).Round(time.Microsecond))
	got, ok := ev.Object.(*corev1.Pod)
	if ev.Type != watch.Modified || !ok || got.Name != "web-1" || got.Spec.Containers[0].Image != "nginx:2" {
		t.Fatalf("event %s %+v", ev.Type, ev.Object)
	}
	if evRV, listRV := rvNumber(t, got.ResourceVersion), rvNumber(t, web.ResourceVersion); evRV <= listRV {
		t.Fatalf("event rv %s not after the list's %s", got.ResourceVersion, web.ResourceVersion)
	}
	f.deliver(fromCloud(sdk.OpUpdate, "default/pod/db-1", "112", labelledPod("db-1", "112", "web", "pg:17")))
	if ev := nextEvent(t, w); ev.Type != watch.Added || ev.Object.(*corev1.Pod).Name != "db-1" {
		t.Fatalf("relabelled pod: %s %v", ev.Type, ev.Object)
	}
	f.deliver(fromCloud(sdk.OpDelete, "default/pod/web-1", "", `{"metadata":{"name":"web-1","namespace":"default","uid":"uid-web-1"}}`))
	if ev := nextEvent(t, w); ev.Type != watch.Deleted || ev.Object.(*corev1.Pod).Name != "web-1" {
		t.Fatalf("delete: %s %v", ev.Type, ev.Object)
	}

	// a new watch resuming from the list's version replays what it missed
	w2, err := cs.CoreV1().Pods("default").Watch(ctx, metav1.ListOptions{ResourceVersion: all.ResourceVersion})
	if err != nil {
		t.Fatal(err)
	}
	defer w2.Stop()
	var replay []string
	for range 4 {
		ev := nextEvent(t, w2)
		replay = append(replay, string(ev.Type)+" "+ev.Object.(*corev1.Pod).Name)
	}
	want := []string{"MODIFIED db-1", "MODIFIED web-1", "MODIFIED db-1", "DELETED web-1"}
	if fmt.Sprint(replay) != fmt.Sprint(want) {
		t.Fatalf("replay %v, want %v", replay, want)
	}

	// errors a client can tell apart
	if _, err := cs.CoreV1().Pods("default").Get(ctx, "nope", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("missing pod: %v", err)
	}
	if _, err := cs.CoreV1().Secrets("default").List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Fatalf("secrets not enabled: %v", err)
	}
	if _, err := cs.CoreV1().ConfigMaps("default").Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "x"}}, metav1.CreateOptions{}); !apierrors.IsMethodNotSupported(err) {
		t.Fatalf("create: %v", err)
	}
	if err := cs.CoreV1().Pods("default").Delete(ctx, "db-1", metav1.DeleteOptions{}); !apierrors.IsMethodNotSupported(err) {
		t.Fatalf("delete: %v", err)
	}
	if _, err := cs.CoreV1().Pods("").List(ctx, metav1.ListOptions{LabelSelector: "app in (x"}); !apierrors.IsBadRequest(err) {
		t.Fatalf("bad selector: %v", err)
	}
	if _, err := cs.CoreV1().Pods("").List(ctx, metav1.ListOptions{FieldSelector: "status.phase=Running"}); !apierrors.IsBadRequest(err) {
		t.Fatalf("unsupported field: %v", err)
	}
	if _, err := cs.CoreV1().Pods("").Watch(ctx, metav1.ListOptions{ResourceVersion: "1"}); !apierrors.IsResourceExpired(err) && !apierrors.IsGone(err) {
		t.Fatalf("watch from an old version: %v", err)
	}
}

// An informer (client-go's reflector, which opens a watch-list stream with
// initial events and a bookmark) syncs and follows the store.
func TestMetaServerInformer(t *testing.T) {
	f, cs := metaFixture(t, true)
	f.deliver(fromCloud(sdk.OpInsert, "default/pod/a", "10", labelledPod("a", "10", "web", "nginx:1")))
	f.deliver(fromCloud(sdk.OpUpdate, "default/secret/s", "11", `{"apiVersion":"v1","kind":"Secret","metadata":{"name":"s","namespace":"default"},"data":{"k":"dg=="}}`))

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	factory := informers.NewSharedInformerFactory(cs, 0)
	pods := factory.Core().V1().Pods()
	podInformer := pods.Informer()
	secrets := factory.Core().V1().Secrets().Lister()
	factory.Start(ctx.Done())
	defer factory.Shutdown()
	defer cancel()
	if !cache.WaitForCacheSync(ctx.Done(), podInformer.HasSynced) {
		t.Fatal("the pod informer did not sync")
	}
	for _, ok := range factory.WaitForCacheSync(ctx.Done()) {
		if !ok {
			t.Fatal("an informer did not sync")
		}
	}
	if s, err := secrets.Secrets("default").Get("s"); err != nil || string(s.Data["k"]) != "v" {
		t.Fatalf("secret %v, %v", s, err)
	}
	f.deliver(fromCloud(sdk.OpInsert, "default/pod/b", "12", labelledPod("b", "12", "web", "nginx:1")))
	f.deliver(fromCloud(sdk.OpUpdate, "default/pod/a", "13", labelledPod("a", "13", "web", "nginx:3")))
	deadline := time.Now().Add(waitFor)
	for {
		list, _ := pods.Lister().List(labels.Everything())
		a, _ := pods.Lister().Pods("default").Get("a")
		if len(list) == 2 && a != nil && a.Spec.Containers[0].Image == "nginx:3" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the informer has %d pods (a = %v)", len(list), a)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A configmap the cloud sends as a query answer is stored and reaches a
// MetaServer watch too.
func TestMetaServerSeesQueryAnswers(t *testing.T) {
	f, cs := metaFixture(t, false)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	f.deliver(fromCloud(sdk.OpInsert, "default/configmap/cfg", "100", cmJSON("default", "cfg", "100", "old")))
	list, err := cs.CoreV1().ConfigMaps("default").List(ctx, metav1.ListOptions{})
	if err != nil || len(list.Items) != 1 {
		t.Fatalf("list %v, %v", list, err)
	}
	w, err := cs.CoreV1().ConfigMaps("default").Watch(ctx, metav1.ListOptions{ResourceVersion: list.ResourceVersion})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	f.h.OnSync(ModuleEdgeHub, func(req *sdk.Message) (*sdk.Message, error) {
		resp, err := sdk.NewResponse(req, json.RawMessage(`{"Object":`+cmJSON("default", "cfg", "101", "new")+`,"Err":null}`))
		resp.Header.ResourceVersion = "101"
		return resp, err
	})
	f.connect(true)
	q := fromEdged(sdk.OpQuery, "default/configmap/cfg", true, "")
	f.deliver(q)
	f.wait(sdktest.ResponseTo(q.Header.ID))
	ev := nextEvent(t, w)
	if cm, ok := ev.Object.(*corev1.ConfigMap); ev.Type != watch.Modified || !ok || cm.Data["k"] != "new" {
		t.Fatalf("event %s %+v", ev.Type, ev.Object)
	}
}

// edged's pod status patches go to the cloud unchanged and also give the
// MetaServer's pods their current status (the cloud never sends status-only
// changes down); edged's own pod list keeps what the cloud sent.
func TestMetaServerPodStatusFromEdged(t *testing.T) {
	f, cs := metaFixture(t, false)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pending := `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"web","namespace":"default","uid":"u1","resourceVersion":"5"},` +
		`"spec":{"nodeName":"edge-1","containers":[{"name":"c","image":"nginx:1"}]},"status":{"phase":"Pending"}}`
	f.deliver(fromCloud(sdk.OpInsert, "default/pod/web", "5", pending))
	list, err := cs.CoreV1().Pods("default").List(ctx, metav1.ListOptions{})
	if err != nil || len(list.Items) != 1 || list.Items[0].Status.Phase != corev1.PodPending {
		t.Fatalf("list %v, %v", list, err)
	}
	w, err := cs.CoreV1().Pods("default").Watch(ctx, metav1.ListOptions{ResourceVersion: list.ResourceVersion})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()

	patch := func(p string) *sdk.Message {
		s, _ := json.Marshal(p)
		return fromEdged(sdk.OpPatch, "default/podpatch/web", false, string(s))
	}
	first := patch(`{"metadata":{"uid":"u1"},"status":{"phase":"Running","podIP":"10.88.0.5",` +
		`"$setElementOrder/conditions":[{"type":"Ready"}],"conditions":[{"type":"Ready","status":"True"}]}}`)
	f.deliver(first)
	fwd := f.wait(func(s sdktest.Sent) bool { return s.Target == ModuleEdgeHub && s.Message.Header.ID == first.Header.ID })
	if string(fwd.Message.Content) != string(first.Content) {
		t.Fatalf("forwarded %s, want the patch unchanged", fwd.Message.Content)
	}
	ev := nextEvent(t, w)
	if p := ev.Object.(*corev1.Pod); ev.Type != watch.Modified || p.Status.Phase != corev1.PodRunning || p.Status.PodIP != "10.88.0.5" {
		t.Fatalf("after the patch: %s %+v", ev.Type, p.Status)
	}
	// A later patch merges into it; a spec update from the cloud keeps it.
	f.deliver(patch(`{"metadata":{"uid":"u1"},"status":{"conditions":[{"type":"Ready","status":"False"}]}}`))
	if p := nextEvent(t, w).Object.(*corev1.Pod); p.Status.PodIP != "10.88.0.5" || len(p.Status.Conditions) != 1 || p.Status.Conditions[0].Status != corev1.ConditionFalse {
		t.Fatalf("after the second patch: %+v", p.Status)
	}
	f.deliver(fromCloud(sdk.OpUpdate, "default/pod/web", "6", strings.Replace(pending, `"resourceVersion":"5"`, `"resourceVersion":"6","labels":{"v":"2"}`, 1)))
	if p := nextEvent(t, w).Object.(*corev1.Pod); p.Labels["v"] != "2" || p.Status.PodIP != "10.88.0.5" {
		t.Fatalf("after the cloud update: labels %v status %+v", p.Labels, p.Status)
	}
	got, err := cs.CoreV1().Pods("default").Get(ctx, "web", metav1.GetOptions{})
	if err != nil || got.Status.Phase != corev1.PodRunning {
		t.Fatalf("get %+v, %v", got, err)
	}
	// A patch for another UID (an older pod of that name) changes nothing.
	f.deliver(patch(`{"metadata":{"uid":"u0"},"status":{"phase":"Failed"}}`))
	if got, _ := cs.CoreV1().Pods("default").Get(ctx, "web", metav1.GetOptions{}); got.Status.Phase != corev1.PodRunning {
		t.Fatalf("a patch for another uid applied: %+v", got.Status)
	}

	// edged's pod list is the cloud's pod.
	q := fromEdged(sdk.OpQuery, "default/pod", true, "")
	f.deliver(q)
	answer := f.wait(sdktest.ResponseTo(q.Header.ID)).Message
	if !strings.Contains(string(answer.Content), `"phase":"Pending"`) || strings.Contains(string(answer.Content), "10.88.0.5") {
		t.Fatalf("edged's pod list: %s", answer.Content)
	}
	// Deleting the pod drops its reported status too.
	f.deliver(fromCloud(sdk.OpDelete, "default/pod/web", "", `{"metadata":{"name":"web","namespace":"default","uid":"u1"}}`))
	if ev := nextEvent(t, w); ev.Type != watch.Deleted {
		t.Fatalf("delete: %s", ev.Type)
	}
	if got := f.stored("default/" + resourceLocalPodStatus + "/web"); got != "-" {
		t.Fatalf("reported status kept after the delete (rv %q)", got)
	}
}

// A watcher that stops reading cannot hold up storing: its watch is closed
// once it falls 256 changes behind, and every message is still stored and
// acknowledged.
func TestMetaServerSlowWatcherDoesNotBlockStoring(t *testing.T) {
	f, _ := metaFixture(t, false)
	conn, err := net.Dial("tcp", f.m.MetaServerAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := fmt.Fprintf(conn, "GET /api/v1/configmaps?watch=true HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	// Never read from conn: the socket buffers fill, then the watch's own buffer.
	deadline := time.Now().Add(5 * time.Second)
	for f.m.hub.Watchers() != 1 {
		if time.Now().After(deadline) {
			t.Fatal("the watch did not start")
		}
		time.Sleep(5 * time.Millisecond)
	}
	big := strings.Repeat("x", 16<<10)
	start := time.Now()
	const updates = 600
	var last *sdk.Message
	for i := range updates {
		rv := fmt.Sprint(100 + i)
		last = fromCloud(sdk.OpUpdate, "default/configmap/big", rv, cmJSON("default", "big", rv, big))
		f.deliver(last)
	}
	f.wait(isAck(last.Header.ID))
	t.Logf("%d updates of %d KiB stored with a stuck watcher in %s", updates, len(big)>>10, time.Since(start).Round(time.Millisecond))
	if got := f.stored("default/configmap/big"); got != fmt.Sprint(100+updates-1) {
		t.Fatalf("stored rv %s", got)
	}
	if n := f.m.hub.Watchers(); n != 0 {
		t.Fatalf("%d watchers left: the stuck one was not closed", n)
	}
}

// An address in use does not stop metamanager: it runs on, reports the
// MetaServer in Health, and listens once the address is free.
func TestMetaServerAddressInUse(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := busy.Addr().String()
	m := New()
	h := sdktest.New(t, m, sdktest.Options{ConfigJSON: fmt.Sprintf(
		`{"db_file":%q,"metaserver":{"enabled":true,"listen":%q}}`, filepath.Join(t.TempDir(), "meta.db"), addr)})
	if err := h.Health(context.Background()); err == nil || !strings.Contains(err.Error(), "metaserver not listening") {
		t.Fatalf("Health = %v, want the MetaServer reported", err)
	}
	f := &fixture{t: t, h: h, m: m}
	f.deliver(fromCloud(sdk.OpInsert, "default/pod/p", "1", podJSON("default", "p", "u", "1"))) // still storing
	busy.Close()
	deadline := time.Now().Add(10 * time.Second)
	for m.MetaServerAddr() == "" || h.Health(context.Background()) != nil {
		if time.Now().After(deadline) {
			t.Fatalf("not listening after the address was freed: %v", h.Health(context.Background()))
		}
		time.Sleep(50 * time.Millisecond)
	}
	cs, err := kubernetes.NewForConfig(&rest.Config{Host: "http://" + addr})
	if err != nil {
		t.Fatal(err)
	}
	pods, err := cs.CoreV1().Pods("").List(context.Background(), metav1.ListOptions{})
	if err != nil || len(pods.Items) != 1 {
		t.Fatalf("list %v, %v", pods, err)
	}
}

// The MetaServer's node follows edged: its registration is stored when the
// cloud has not sent the node, and its status patches are applied.
func TestMetaServerNodeFromEdged(t *testing.T) {
	f, cs := metaFixture(t, false)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	f.deliver(fromEdged(sdk.OpInsert, "null/node/edge-1", false, `{"metadata":{"name":"edge-1","labels":{"node-role.kubernetes.io/edge":""}},`+
		`"status":{"conditions":[{"type":"Ready","status":"True"}],"addresses":[{"type":"InternalIP","address":"10.0.0.5"}]}}`))
	n, err := cs.CoreV1().Nodes().Get(ctx, "edge-1", metav1.GetOptions{})
	if err != nil || len(n.Status.Addresses) != 1 {
		t.Fatalf("node after registration: %+v, %v", n, err)
	}
	list, _ := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	w, err := cs.CoreV1().Nodes().Watch(ctx, metav1.ListOptions{ResourceVersion: list.ResourceVersion})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	patch, _ := json.Marshal(`{"status":{"$setElementOrder/conditions":[{"type":"Ready"}],"conditions":[{"type":"Ready","status":"False","reason":"KubeletNotReady"}]}}`)
	f.deliver(fromEdged(sdk.OpPatch, "null/nodepatch/edge-1", false, string(patch)))
	ev := nextEvent(t, w)
	got := ev.Object.(*corev1.Node)
	if ev.Type != watch.Modified || len(got.Status.Conditions) != 1 || got.Status.Conditions[0].Status != corev1.ConditionFalse || len(got.Status.Addresses) != 1 {
		t.Fatalf("after the status patch: %s %+v", ev.Type, got.Status)
	}
	// The cloud's node replaces edged's; a later patch applies to it and keeps its version.
	f.deliver(fromCloud(sdk.OpUpdate, "null/node/edge-1", "500", `{"apiVersion":"v1","kind":"Node","metadata":{"name":"edge-1","resourceVersion":"500","annotations":{"cloudcore":"x"}},"status":{"conditions":[{"type":"Ready","status":"True"}]}}`))
	if got := nextEvent(t, w).Object.(*corev1.Node); got.Annotations["cloudcore"] != "x" {
		t.Fatalf("cloud update: %+v", got.ObjectMeta)
	}
	f.deliver(fromEdged(sdk.OpPatch, "null/nodepatch/edge-1", false, string(patch)))
	if got := nextEvent(t, w).Object.(*corev1.Node); got.Annotations["cloudcore"] != "x" || got.Status.Conditions[0].Status != corev1.ConditionFalse {
		t.Fatalf("patch on the cloud's node: %+v %+v", got.ObjectMeta, got.Status)
	}
	if rv := f.stored("null/node/edge-1"); rv != "500" {
		t.Fatalf("stored rv %q, want the cloud's 500", rv)
	}
}
