package node

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	coordv1 "k8s.io/api/coordination/v1"
	v1 "k8s.io/api/core/v1"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/edgehive/edgehive/plugins/edged/cri"
	"github.com/edgehive/edgehive/sdk"
)

type fakeHost struct {
	mu    sync.Mutex
	sent  []*sdk.Message
	lease string // content of the lease query answer; "" → error op
	// answer, when set, is the lease query answer's raw content instead.
	answer json.RawMessage
}

func (h *fakeHost) Send(_ context.Context, module string, msg *sdk.Message) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if module != "metamanager" {
		panic(module)
	}
	h.sent = append(h.sent, msg)
	return nil
}

func (h *fakeHost) SendSync(_ context.Context, _ string, msg *sdk.Message) (*sdk.Message, error) {
	if h.answer != nil {
		r := sdk.NewMessage(msg.Header.ID).BuildRouter("metamanager", sdk.GroupMeta, msg.Router.Resource, sdk.OpResponse)
		r.Content = h.answer
		return r, nil
	}
	if h.lease == "" {
		r := sdk.NewMessage(msg.Header.ID).BuildRouter("metamanager", sdk.GroupMeta, msg.Router.Resource, sdk.OpError)
		return r, r.FillBody("not found")
	}
	r := sdk.NewMessage(msg.Header.ID).BuildRouter("metamanager", sdk.GroupMeta, msg.Router.Resource, sdk.OpResponse)
	return r, r.FillBody([]string{h.lease})
}

func roots(t *testing.T) (string, string) {
	dir := t.TempDir()
	proc, etc := filepath.Join(dir, "proc"), filepath.Join(dir, "etc")
	for p, c := range map[string]string{
		filepath.Join(proc, "meminfo"):                   "MemTotal:        8048576 kB\nMemFree: 1 kB\n",
		filepath.Join(proc, "sys/kernel/osrelease"):      "6.1.0-test\n",
		filepath.Join(proc, "sys/kernel/random/boot_id"): "boot-1\n",
		filepath.Join(etc, "os-release"):                 "NAME=X\nPRETTY_NAME=\"Edge Linux 1\"\n",
		filepath.Join(etc, "machine-id"):                 "m-1\n",
	} {
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return proc, etc
}

func TestRegisterStatusLease(t *testing.T) {
	proc, etc := roots(t)
	clk := clocktesting.NewFakeClock(time.Date(2024, 8, 6, 12, 0, 0, 0, time.UTC))
	h := &fakeHost{}
	r := New(Config{Name: "edge-1", Labels: map[string]string{"zone": "a"}, Port: 10350, ProcRoot: proc, EtcRoot: etc, StorageDir: t.TempDir()},
		h, cri.NewFakeRuntime(), clk, nil)
	ctx := context.Background()
	if err := r.Register(ctx); err != nil {
		t.Fatal(err)
	}
	m := h.sent[0]
	if m.Router.Source != "edged" || m.Router.Group != "meta" || m.Router.Operation != "insert" || m.Router.Resource != "null/node/edge-1" {
		t.Fatalf("route %+v", m.Router)
	}
	var n v1.Node
	if err := m.DecodeContent(&n); err != nil {
		t.Fatal(err)
	}
	if v, ok := n.Labels[LabelEdge]; !ok || v != "" || n.Labels["zone"] != "a" || n.Labels["kubernetes.io/hostname"] != "edge-1" {
		t.Fatalf("labels %v", n.Labels)
	}
	st := n.Status
	if st.Capacity.Memory().Value() != 8048576*1024 || st.Capacity.Pods().Value() != 110 || st.Capacity.Cpu().Value() < 1 ||
		st.Allocatable.Pods().Value() != 110 || st.Capacity.StorageEphemeral().Value() <= 0 || st.Allocatable.StorageEphemeral().Value() <= 0 {
		t.Fatalf("capacity %v allocatable %v", st.Capacity, st.Allocatable)
	}
	if st.NodeInfo.ContainerRuntimeVersion != "fake://0.0.0" || st.NodeInfo.KernelVersion != "6.1.0-test" ||
		st.NodeInfo.OSImage != "Edge Linux 1" || st.NodeInfo.KubeletVersion != KubeletVersion || st.NodeInfo.MachineID != "m-1" {
		t.Fatalf("nodeInfo %+v", st.NodeInfo)
	}
	if st.DaemonEndpoints.KubeletEndpoint.Port != 10350 || len(st.Conditions) != 1 || st.Conditions[0].Type != v1.NodeReady ||
		st.Conditions[0].Status != v1.ConditionTrue || st.Addresses[len(st.Addresses)-1].Type != v1.NodeHostName {
		t.Fatalf("status %+v", st)
	}
	// The wire spells the port "Port".
	var raw map[string]any
	m.DecodeContent(&raw)
	if b, _ := json.Marshal(raw["status"].(map[string]any)["daemonEndpoints"]); string(b) != `{"kubeletEndpoint":{"Port":10350}}` {
		t.Fatalf("daemonEndpoints %s", b)
	}

	clk.Step(10 * time.Second)
	if err := r.ReportStatus(ctx); err != nil {
		t.Fatal(err)
	}
	m = h.sent[1]
	if m.Router.Operation != "patch" || m.Router.Resource != "null/nodepatch/edge-1" {
		t.Fatalf("route %+v", m.Router)
	}
	var s string
	if err := m.DecodeContent(&s); err != nil {
		t.Fatalf("nodepatch content is not a JSON string: %s", m.Content)
	}
	var p struct{ Status v1.NodeStatus }
	if err := json.Unmarshal([]byte(s), &p); err != nil || !p.Status.Conditions[0].LastHeartbeatTime.Time.Equal(clk.Now()) ||
		p.Status.Conditions[0].LastTransitionTime.Time.Equal(clk.Now()) {
		t.Fatalf("patch %s: %v", s, err)
	}

	// No lease yet: insert, then updates.
	for i, want := range []string{"insert", "update"} {
		if err := r.RenewLease(ctx); err != nil {
			t.Fatal(err)
		}
		m = h.sent[2+i]
		if m.Router.Operation != want || m.Router.Resource != "kube-node-lease/lease/edge-1" {
			t.Fatalf("lease %d route %+v", i, m.Router)
		}
		var l coordv1.Lease
		if err := m.DecodeContent(&l); err != nil || *l.Spec.HolderIdentity != "edge-1" || *l.Spec.LeaseDurationSeconds != 40 ||
			l.Namespace != "kube-node-lease" || l.Kind != "Lease" || !l.Spec.RenewTime.Time.Equal(clk.Now()) {
			t.Fatalf("lease %s: %v", m.Content, err)
		}
	}
	// A stored lease: its resourceVersion is kept, and it is updated at once.
	h2 := &fakeHost{lease: `{"metadata":{"name":"edge-1","namespace":"kube-node-lease","resourceVersion":"4512"}}`}
	r2 := New(Config{Name: "edge-1", ProcRoot: proc, EtcRoot: etc}, h2, nil, clk, nil)
	if err := r2.RenewLease(ctx); err != nil {
		t.Fatal(err)
	}
	var l coordv1.Lease
	h2.sent[0].DecodeContent(&l)
	if h2.sent[0].Router.Operation != "update" || l.ResourceVersion != "4512" {
		t.Fatalf("stored lease: %+v %s", h2.sent[0].Router, h2.sent[0].Content)
	}
}

// TestLeaseQueryAnswers: the lease query is answered in the cloud's shapes;
// a lease found is updated with its resourceVersion, NotFound is inserted,
// any other error sends nothing and asks again on the next renewal.
func TestLeaseQueryAnswers(t *testing.T) {
	proc, etc := roots(t)
	lease := `{"metadata":{"name":"edge-1","namespace":"kube-node-lease","resourceVersion":"4512"}}`
	notFound := `{"metadata":{},"status":"Failure","message":"leases.coordination.k8s.io \"edge-1\" not found","reason":"NotFound","code":404}`
	forbidden := `{"metadata":{},"status":"Failure","message":"forbidden","reason":"Forbidden","code":403}`
	for _, tc := range []struct {
		name   string
		answer string
		wantOp string // "" → nothing sent, an error
		wantRV string
	}{
		{"objectresp", `{"Object":` + lease + `,"Err":null}`, "update", "4512"},
		{"objectresp in a string", jsonString(`{"Object":` + lease + `,"Err":null}`), "update", "4512"},
		{"list of a string", `[` + jsonString(lease) + `]`, "update", "4512"},
		{"object", lease, "update", "4512"},
		{"objectresp not found", `{"Object":{},"Err":{"ErrStatus":` + notFound + `}}`, "insert", ""},
		{"errstatus not found", `{"ErrStatus":` + notFound + `}`, "insert", ""},
		{"empty list", `[]`, "insert", ""},
		{"another node's lease", `{"Object":{"metadata":{"name":"edge-2","resourceVersion":"7"}},"Err":null}`, "insert", ""},
		{"objectresp forbidden", `{"Object":{},"Err":{"ErrStatus":` + forbidden + `}}`, "", ""},
		{"garbage", `"OK"`, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clk := clocktesting.NewFakeClock(time.Date(2024, 8, 6, 12, 0, 0, 0, time.UTC))
			h := &fakeHost{answer: json.RawMessage(tc.answer)}
			r := New(Config{Name: "edge-1", ProcRoot: proc, EtcRoot: etc}, h, nil, clk, nil)
			err := r.RenewLease(context.Background())
			if tc.wantOp == "" {
				if err == nil || len(h.sent) != 0 {
					t.Fatalf("err %v, sent %d messages; want an error and nothing sent", err, len(h.sent))
				}
				// Asked again next time: a later NotFound inserts.
				h.answer = json.RawMessage(`[]`)
				if err := r.RenewLease(context.Background()); err != nil || len(h.sent) != 1 || h.sent[0].Router.Operation != "insert" {
					t.Fatalf("retry: err %v, sent %+v", err, h.sent)
				}
				return
			}
			if err != nil || len(h.sent) != 1 {
				t.Fatalf("err %v, sent %d messages", err, len(h.sent))
			}
			var l coordv1.Lease
			if err := h.sent[0].DecodeContent(&l); err != nil {
				t.Fatal(err)
			}
			if h.sent[0].Router.Operation != tc.wantOp || l.ResourceVersion != tc.wantRV {
				t.Fatalf("sent %s with resourceVersion %q, want %s with %q", h.sent[0].Router.Operation, l.ResourceVersion, tc.wantOp, tc.wantRV)
			}
		})
	}
}

func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}
