package metamanager

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgehive/edgehive/plugins/metamanager/store"
	"github.com/edgehive/edgehive/sdk"
	"github.com/edgehive/edgehive/sdk/sdktest"
)

const waitFor = 5 * time.Second

type fixture struct {
	t  *testing.T
	h  *sdktest.Harness
	m  *MetaManager
	db string
}

func newFixture(t *testing.T, db string, timeout string) *fixture {
	t.Helper()
	if db == "" {
		db = filepath.Join(t.TempDir(), "meta.db")
	}
	if timeout == "" {
		timeout = "2s"
	}
	m := New()
	h := sdktest.New(t, m, sdktest.Options{ConfigJSON: fmt.Sprintf(
		`{"db_file":%q,"remote_query_timeout":%q}`, db, timeout)})
	return &fixture{t: t, h: h, m: m, db: db}
}

func leaseJSON(rv string) string {
	return `{"apiVersion":"coordination.k8s.io/v1","kind":"Lease","metadata":{"name":"edge-1","namespace":"kube-node-lease","resourceVersion":"` + rv +
		`"},"spec":{"holderIdentity":"edge-1","leaseDurationSeconds":40}}`
}

func svcJSON(name, rv, ip string) string {
	return fmt.Sprintf(`{"apiVersion":"v1","kind":"Service","metadata":{"name":%q,"namespace":"default","resourceVersion":%q},"spec":{"clusterIP":%q}}`, name, rv, ip)
}

func podJSON(ns, name, uid, rv string) string {
	return fmt.Sprintf(`{"apiVersion":"v1","kind":"Pod","metadata":{"name":%q,"namespace":%q,"uid":%q,"resourceVersion":%q},"spec":{"nodeName":"edge-1"}}`,
		name, ns, uid, rv)
}

// nginx is the cloud sending pod default/nginx (uid u1) at resourceVersion rv.
func nginx(op, rv string) *sdk.Message {
	return fromCloud(op, "default/pod/nginx", rv, podJSON("default", "nginx", "u1", rv))
}

func cmJSON(ns, name, rv, data string) string {
	return fmt.Sprintf(`{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":%q,"namespace":%q,"resourceVersion":%q},"data":{"k":%q}}`,
		name, ns, rv, data)
}

// fromCloud is a downstream message as edgehub delivers it.
func fromCloud(op, res, rv, content string) *sdk.Message {
	msg := sdk.NewMessage("").BuildRouter("edgecontroller", sdk.WireGroupResource, res, op)
	msg.Header.ResourceVersion = rv
	if content != "" {
		msg.Content = json.RawMessage(content)
	}
	return msg
}

// fromEdged is a request from edged.
func fromEdged(op, res string, sync bool, content string) *sdk.Message {
	msg := sdk.NewMessage("").BuildRouter("edged", sdk.GroupMeta, res, op)
	msg.Header.Sync = sync
	if content != "" {
		msg.Content = json.RawMessage(content)
	}
	return msg
}

func (f *fixture) deliver(msg *sdk.Message) {
	f.t.Helper()
	if err := f.h.Deliver(msg); err != nil {
		f.t.Fatalf("Deliver(%s): %v", msg, err)
	}
}

func (f *fixture) connect(up bool) {
	f.t.Helper()
	content := `"` + CloudDisconnected + `"`
	if up {
		content = `"` + CloudConnected + `"`
	}
	msg := sdk.NewMessage("").BuildRouter(ModuleEdgeHub, sdk.GroupMeta, ResourceConnection, OpConnect)
	msg.Content = json.RawMessage(content)
	f.deliver(msg)
	if f.m.CloudConnected() != up {
		f.t.Fatalf("connected = %v after the event, want %v", f.m.CloudConnected(), up)
	}
}

// stored returns the stored rv of key, or "-" when absent.
func (f *fixture) stored(key string) string {
	f.t.Helper()
	o, err := f.m.store.Get(context.Background(), key)
	if errors.Is(err, store.ErrNotFound) {
		return "-"
	}
	if err != nil {
		f.t.Fatal(err)
	}
	return o.ResourceVersion
}

func (f *fixture) wait(match func(sdktest.Sent) bool) sdktest.Sent {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	s, ok := f.h.WaitSent(ctx, match)
	if !ok {
		f.t.Fatalf("nothing matching was sent; sent: %s", describe(f.h.Sent()))
	}
	return s
}

func describe(sent []sdktest.Sent) string {
	var b strings.Builder
	for _, s := range sent {
		fmt.Fprintf(&b, "\n  %s %s: %s content=%s", s.Kind, s.Target, s.Message, s.Message.Content)
	}
	return b.String()
}

func isAck(parent string) func(sdktest.Sent) bool {
	return func(s sdktest.Sent) bool {
		return s.Kind == sdktest.KindModule && s.Target == ModuleEdgeHub &&
			s.Message.Router.Operation == sdk.OpResponse && s.Message.Header.ParentID == parent
	}
}

func jsonEqual(t *testing.T, got, want json.RawMessage) {
	t.Helper()
	var g, w any
	if err := json.Unmarshal(got, &g); err != nil {
		t.Fatalf("got %s: %v", got, err)
	}
	if err := json.Unmarshal(want, &w); err != nil {
		t.Fatalf("want %s: %v", want, err)
	}
	if fmt.Sprint(g) != fmt.Sprint(w) {
		t.Fatalf("content\n got %s\nwant %s", got, want)
	}
}

func TestDownstream(t *testing.T) {
	tests := []struct {
		name    string
		setup   []*sdk.Message
		msg     *sdk.Message
		stored  map[string]string // key -> rv after, "-" = absent
		forward bool              // the message goes on to edged
		ack     bool
	}{
		{
			name:    "pod insert",
			msg:     nginx(sdk.OpInsert, "4711"),
			stored:  map[string]string{"default/pod/nginx": "4711"},
			forward: true, ack: true,
		},
		{
			name:    "newer update",
			setup:   []*sdk.Message{nginx(sdk.OpInsert, "10")},
			msg:     nginx(sdk.OpUpdate, "11"),
			stored:  map[string]string{"default/pod/nginx": "11"},
			forward: true, ack: true,
		},
		{
			// KubeEdge acknowledges whatever it has persisted or already
			// holds: an older version is ignored, not given to edged, and acked.
			name:    "older update ignored but acked",
			setup:   []*sdk.Message{nginx(sdk.OpInsert, "10")},
			msg:     nginx(sdk.OpUpdate, "9"),
			stored:  map[string]string{"default/pod/nginx": "10"},
			forward: false, ack: true,
		},
		{
			// A resend (lost ack) or a redelivery after a crash: edged may
			// not have seen it, so it is forwarded again.
			name:    "same version resent",
			setup:   []*sdk.Message{nginx(sdk.OpInsert, "10")},
			msg:     nginx(sdk.OpUpdate, "10"),
			stored:  map[string]string{"default/pod/nginx": "10"},
			forward: true, ack: true,
		},
		{
			name: "pod delete by uid, podpatch too",
			setup: []*sdk.Message{
				nginx(sdk.OpInsert, "10"),
				fromCloud(sdk.OpInsert, "default/podpatch/nginx", "", `{"metadata":{"uid":"u1"}}`),
			},
			msg:     fromCloud(sdk.OpDelete, "default/pod/nginx", "", `{"metadata":{"name":"nginx","namespace":"default","uid":"u1"}}`),
			stored:  map[string]string{"default/pod/nginx": "-", "default/podpatch/nginx": "-"},
			forward: true, ack: true,
		},
		{
			name:    "delete of another uid keeps the stored pod",
			setup:   []*sdk.Message{fromCloud(sdk.OpInsert, "default/pod/nginx", "10", podJSON("default", "nginx", "u2", "10"))},
			msg:     nginx(sdk.OpDelete, "9"),
			stored:  map[string]string{"default/pod/nginx": "10"},
			forward: false, ack: true,
		},
		{
			name:    "delete of something never stored",
			msg:     fromCloud(sdk.OpDelete, "default/configmap/gone", "", `{"metadata":{"name":"gone","namespace":"default"}}`),
			stored:  map[string]string{"default/configmap/gone": "-"},
			forward: true, ack: true,
		},
		{
			name:    "service is stored, not forwarded",
			msg:     fromCloud(sdk.OpInsert, "default/service/web", "7", `{"metadata":{"name":"web","namespace":"default"}}`),
			stored:  map[string]string{"default/service/web": "7"},
			forward: false, ack: true,
		},
		{
			name:    "no resourceversion: stored and forwarded, not acked",
			msg:     fromCloud(sdk.OpUpdate, "default/configmap/cm1", "", cmJSON("default", "cm1", "33", "v")),
			stored:  map[string]string{"default/configmap/cm1": "33"}, // from metadata
			forward: true, ack: false,
		},
		{
			name:    "object as a JSON string",
			msg:     fromCloud(sdk.OpUpdate, "default/secret/s1", "8", fmt.Sprintf("%q", `{"metadata":{"name":"s1","namespace":"default"}}`)),
			stored:  map[string]string{"default/secret/s1": "8"},
			forward: true, ack: true,
		},
		{
			name:    "cluster-scoped node",
			msg:     fromCloud(sdk.OpUpdate, "null/node/edge-1", "99", `{"metadata":{"name":"edge-1"}}`),
			stored:  map[string]string{"null/node/edge-1": "99"},
			forward: true, ack: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, "", "")
			for _, m := range tt.setup {
				f.deliver(m)
			}
			before := len(f.h.Sent())
			f.deliver(tt.msg)
			for key, rv := range tt.stored {
				if got := f.stored(key); got != rv {
					t.Errorf("%s stored at rv %s, want %s", key, got, rv)
				}
			}
			sent := f.h.Sent()[before:]
			want := 0
			if tt.forward {
				if len(sent) == 0 {
					t.Fatal("nothing forwarded to edged")
				}
				s := sent[want]
				if s.Kind != sdktest.KindModule || s.Target != ModuleEdged || s.Message.Header.ID != tt.msg.Header.ID ||
					s.Message.Router.Operation != tt.msg.Router.Operation {
					t.Fatalf("first send %s %s %s, want the message forwarded to edged", s.Kind, s.Target, s.Message)
				}
				want++
			}
			if tt.ack {
				if len(sent) <= want || !isAck(tt.msg.Header.ID)(sent[want]) {
					t.Fatalf("no ack after the forward; sent: %s", describe(sent))
				}
				ack := sent[want].Message
				if ack.ContentString() != sdk.AckContent || ack.Router.Resource != tt.msg.Router.Resource ||
					ack.Router.Source != tt.msg.Router.Source || ack.Header.ID == tt.msg.Header.ID {
					t.Fatalf("ack %s content %s", ack, ack.Content)
				}
				want++
			}
			if len(sent) != want {
				t.Fatalf("sent %d messages, want %d: %s", len(sent), want, describe(sent))
			}
		})
	}
}

func TestDownstreamFailures(t *testing.T) {
	insert := func() *sdk.Message {
		return nginx(sdk.OpInsert, "5")
	}
	t.Run("closed database: no ack", func(t *testing.T) {
		f := newFixture(t, "", "")
		if err := f.m.store.Close(); err != nil {
			t.Fatal(err)
		}
		for _, msg := range []*sdk.Message{insert(), nginx(sdk.OpDelete, "6")} {
			if err := f.h.Deliver(msg); err == nil {
				t.Fatalf("%s: no error from a failed store", msg)
			}
		}
		if sent := f.h.Sent(); len(sent) != 0 {
			t.Fatalf("sent after a failed store: %s", describe(sent))
		}
		if err := f.h.Health(context.Background()); err == nil {
			t.Fatal("healthy with a closed database")
		}
	})
	t.Run("bad content: no ack", func(t *testing.T) {
		f := newFixture(t, "", "")
		for _, content := range []string{"", `"not json"`, `[1,2]`, `null`, `17`} {
			msg := fromCloud(sdk.OpInsert, "default/pod/nginx", "5", content)
			if err := f.h.Deliver(msg); err == nil {
				t.Fatalf("content %q accepted", content)
			}
		}
		patch := fromCloud(sdk.OpPatch, "default/pod/nginx", "5", `"{\"status\":{}}"`)
		if err := f.h.Deliver(patch); err == nil || f.stored("default/pod/nginx") != "-" {
			t.Fatalf("a patch on a pod from the cloud = %v", err)
		}
		for _, res := range []string{"default/pod", "pod", ""} {
			if err := f.h.Deliver(fromCloud(sdk.OpInsert, res, "5", `{}`)); err == nil {
				t.Fatalf("resource %q accepted", res)
			}
		}
		if sent := f.h.Sent(); len(sent) != 0 {
			t.Fatalf("sent: %s", describe(sent))
		}
	})
	t.Run("edged unreachable: stored and acked", func(t *testing.T) {
		f := newFixture(t, "", "")
		f.h.FailSendsTo(ModuleEdged, sdk.ErrQueueFull)
		msg := insert()
		if err := f.h.Deliver(msg); !errors.Is(err, sdk.ErrQueueFull) {
			t.Fatalf("Deliver = %v, want the forward's error", err)
		}
		if f.stored("default/pod/nginx") != "5" {
			t.Fatal("not stored")
		}
		f.wait(isAck(msg.Header.ID))
	})
}

func TestQueryOnline(t *testing.T) {
	cm := cmJSON("default", "cm1", "5001", "cloud")
	tests := []struct {
		name      string
		res       string
		preload   *sdk.Message // stored before the query
		cloud     func(req *sdk.Message) (*sdk.Message, error)
		wantOp    string
		want      string // answer content; "" = check wantText
		wantText  string // substring of an error answer
		stored    string // rv stored after, "-" = absent
		wantAck   bool
		askClouds bool
	}{
		{
			name: "configmap from the cloud, stored and acked",
			res:  "default/configmap/cm1",
			cloud: func(req *sdk.Message) (*sdk.Message, error) {
				resp, err := sdk.NewResponse(req, json.RawMessage(cm))
				resp.Router.Source, resp.Router.Group = "edgecontroller", sdk.WireGroupResource
				resp.Header.ResourceVersion = "5001"
				return resp, err
			},
			wantOp: sdk.OpResponse, want: cm, stored: "5001", wantAck: true, askClouds: true,
		},
		{
			name:    "configmap asked of the cloud although a copy is stored",
			res:     "default/configmap/cm1",
			preload: fromCloud(sdk.OpInsert, "default/configmap/cm1", "4000", cmJSON("default", "cm1", "4000", "old")),
			cloud: func(req *sdk.Message) (*sdk.Message, error) {
				resp, err := sdk.NewResponse(req, json.RawMessage(cm))
				resp.Header.ResourceVersion = "5001"
				return resp, err
			},
			wantOp: sdk.OpResponse, want: cm, stored: "5001", wantAck: true, askClouds: true,
		},
		{
			name: "node as ObjectResp: object stored and answered unwrapped, no ack without rv",
			res:  "null/node/edge-1",
			cloud: func(req *sdk.Message) (*sdk.Message, error) {
				return sdk.NewResponse(req, json.RawMessage(`{"Object":{"metadata":{"name":"edge-1","resourceVersion":"77"}},"Err":null}`))
			},
			wantOp: sdk.OpResponse, want: `{"metadata":{"name":"edge-1","resourceVersion":"77"}}`,
			stored: "77", askClouds: true,
		},
		{
			name: "lease as ObjectResp",
			res:  "kube-node-lease/lease/edge-1",
			cloud: func(req *sdk.Message) (*sdk.Message, error) {
				return sdk.NewResponse(req, json.RawMessage(`{"Object":`+leaseJSON("4512")+`,"Err":null}`))
			},
			wantOp: sdk.OpResponse, want: leaseJSON("4512"), stored: "4512", askClouds: true,
		},
		{
			name: "ObjectResp NotFound (beside an empty Object) is an error answer, nothing stored",
			res:  "kube-node-lease/lease/edge-1",
			cloud: func(req *sdk.Message) (*sdk.Message, error) {
				return sdk.NewResponse(req, json.RawMessage(`{"Object":{},"Err":{"ErrStatus":{"metadata":{},"status":"Failure","message":"leases.coordination.k8s.io \"edge-1\" not found","reason":"NotFound","code":404}}}`))
			},
			wantOp: sdk.OpError, wantText: `leases.coordination.k8s.io "edge-1" not found (NotFound, 404)`,
			stored: "-", askClouds: true,
		},
		{
			name:    "API error with operation response is an error answer; the stored copy is not used",
			res:     "default/configmap/cm1",
			preload: fromCloud(sdk.OpInsert, "default/configmap/cm1", "4000", cmJSON("default", "cm1", "4000", "old")),
			cloud: func(req *sdk.Message) (*sdk.Message, error) {
				return sdk.NewResponse(req, json.RawMessage(`{"ErrStatus":{"metadata":{},"status":"Failure","message":"configmaps \"cm1\" is forbidden: no pod uses it","reason":"Forbidden","code":403}}`))
			},
			wantOp: sdk.OpError, wantText: "forbidden", stored: "4000", askClouds: true,
		},
		{
			name: "operation error from the cloud",
			res:  "default/secret/s9",
			cloud: func(req *sdk.Message) (*sdk.Message, error) {
				return sdk.NewErrorResponse(req, errors.New("secret s9 not found")), nil
			},
			wantOp: sdk.OpError, wantText: "secret s9 not found", stored: "-", askClouds: true,
		},
		{
			name: "one-element list of a JSON string is the object",
			res:  "default/configmap/cm1",
			cloud: func(req *sdk.Message) (*sdk.Message, error) {
				str, _ := json.Marshal(cm)
				resp, err := sdk.NewResponse(req, json.RawMessage("["+string(str)+"]"))
				resp.Header.ResourceVersion = "5001"
				return resp, err
			},
			wantOp: sdk.OpResponse, want: cm, stored: "5001", wantAck: true, askClouds: true,
		},
		{
			name: "object in a JSON string",
			res:  "default/configmap/cm1",
			cloud: func(req *sdk.Message) (*sdk.Message, error) {
				str, _ := json.Marshal(cm)
				return sdk.NewResponse(req, json.RawMessage(str))
			},
			wantOp: sdk.OpResponse, want: cm, stored: "5001", askClouds: true,
		},
		{
			name: "empty list is not found",
			res:  "default/configmap/cm1",
			cloud: func(req *sdk.Message) (*sdk.Message, error) {
				return sdk.NewResponse(req, json.RawMessage(`[]`))
			},
			wantOp: sdk.OpError, wantText: "not found", stored: "-", askClouds: true,
		},
		{
			name:    "service asked of the cloud although a copy is stored",
			res:     "default/service/web",
			preload: fromCloud(sdk.OpInsert, "default/service/web", "20", svcJSON("web", "20", "10.0.0.1")),
			cloud: func(req *sdk.Message) (*sdk.Message, error) {
				return sdk.NewResponse(req, json.RawMessage(svcJSON("web", "21", "10.0.0.2")))
			},
			wantOp: sdk.OpResponse, want: svcJSON("web", "21", "10.0.0.2"), stored: "21", askClouds: true,
		},
		{
			name: "endpoints from the cloud",
			res:  "default/endpoints/web",
			cloud: func(req *sdk.Message) (*sdk.Message, error) {
				return sdk.NewResponse(req, json.RawMessage(`{"apiVersion":"v1","kind":"Endpoints","metadata":{"name":"web","namespace":"default","resourceVersion":"30"},"subsets":[{"addresses":[{"ip":"10.88.0.5"}]}]}`))
			},
			wantOp: sdk.OpResponse, want: `{"apiVersion":"v1","kind":"Endpoints","metadata":{"name":"web","namespace":"default","resourceVersion":"30"},"subsets":[{"addresses":[{"ip":"10.88.0.5"}]}]}`,
			stored: "30", askClouds: true,
		},
		{
			name: "the cluster CA's PEM string is passed on, not stored",
			res:  ResourceCACert,
			cloud: func(req *sdk.Message) (*sdk.Message, error) {
				return sdk.NewResponse(req, "-----BEGIN CERTIFICATE-----\nMII\n-----END CERTIFICATE-----\n")
			},
			wantOp: sdk.OpResponse, want: `"-----BEGIN CERTIFICATE-----\nMII\n-----END CERTIFICATE-----\n"`, stored: "", askClouds: true,
		},
		{
			name:    "cloud unreachable: the stored copy answers",
			res:     "default/secret/s1",
			preload: fromCloud(sdk.OpUpdate, "default/secret/s1", "12", `{"metadata":{"name":"s1","namespace":"default"},"data":{"a":"Yg=="}}`),
			cloud:   func(*sdk.Message) (*sdk.Message, error) { return nil, sdk.ErrUnknownDestination },
			wantOp:  sdk.OpResponse, want: `{"metadata":{"name":"s1","namespace":"default"},"data":{"a":"Yg=="}}`,
			stored: "12", askClouds: true,
		},
		{
			name:     "cloud unreachable, nothing stored: error answer",
			res:      "default/secret/s2",
			cloud:    func(*sdk.Message) (*sdk.Message, error) { return nil, sdk.ErrUnknownDestination },
			wantOp:   sdk.OpError,
			wantText: "the cloud did not answer",
			stored:   "-", askClouds: true,
		},
		{
			name:    "pod is served from the store while online",
			res:     "default/pod/nginx",
			preload: nginx(sdk.OpInsert, "3"),
			wantOp:  sdk.OpResponse, want: podJSON("default", "nginx", "u1", "3"), stored: "3",
		},
		{
			name: "missing pod is asked of the cloud",
			res:  "default/pod/other",
			cloud: func(req *sdk.Message) (*sdk.Message, error) {
				return sdk.NewResponse(req, json.RawMessage(podJSON("default", "other", "u9", "8")))
			},
			wantOp: sdk.OpResponse, want: podJSON("default", "other", "u9", "8"), stored: "8", askClouds: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, "", "")
			if tt.preload != nil {
				f.deliver(tt.preload)
			}
			var asked []*sdk.Message
			askedCh := make(chan *sdk.Message, 4)
			if tt.cloud != nil {
				f.h.OnSync(ModuleEdgeHub, func(req *sdk.Message) (*sdk.Message, error) {
					askedCh <- req
					return tt.cloud(req)
				})
			}
			f.connect(true)
			q := fromEdged(sdk.OpQuery, tt.res, true, "")
			f.deliver(q)
			answer := f.wait(sdktest.ResponseTo(q.Header.ID)).Message
			close(askedCh)
			for r := range askedCh {
				asked = append(asked, r)
			}
			if tt.askClouds != (len(asked) == 1) {
				t.Fatalf("asked the cloud %d times, want asked=%v", len(asked), tt.askClouds)
			}
			if len(asked) == 1 {
				r := asked[0]
				if r.Header.ID == q.Header.ID || r.Router.Resource != tt.res || r.Router.Source != "edged" || r.Router.Operation != sdk.OpQuery {
					t.Fatalf("request to the cloud %s, want a copy of %s under a new id", r, q)
				}
			}
			if answer.Router.Operation != tt.wantOp || answer.Router.Resource != tt.res {
				t.Fatalf("answer %s content %s, want op %s", answer, answer.Content, tt.wantOp)
			}
			if tt.want != "" {
				jsonEqual(t, answer.Content, json.RawMessage(tt.want))
			} else if !strings.Contains(answer.ContentString(), tt.wantText) {
				t.Fatalf("error answer %q, want it to mention %q", answer.ContentString(), tt.wantText)
			}
			if tt.stored == "" { // not a storable resource
			} else if got := f.stored(tt.res); got != tt.stored {
				t.Fatalf("stored rv %s, want %s", got, tt.stored)
			}
			acked := false
			for _, s := range f.h.Sent() {
				if s.Kind == sdktest.KindModule && s.Target == ModuleEdgeHub && s.Message.Router.Operation == sdk.OpResponse {
					if tt.preload != nil && s.Message.Header.ParentID == tt.preload.Header.ID {
						continue
					}
					acked = true
					if s.Message.ContentString() != sdk.AckContent {
						t.Fatalf("ack content %s", s.Message.Content)
					}
				}
			}
			if acked != tt.wantAck {
				t.Fatalf("acked the cloud's answer = %v, want %v; sent: %s", acked, tt.wantAck, describe(f.h.Sent()))
			}
		})
	}
}

func TestQueryTimeout(t *testing.T) {
	f := newFixture(t, "", "200ms")
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	f.h.OnSync(ModuleEdgeHub, func(req *sdk.Message) (*sdk.Message, error) {
		<-release
		return nil, errors.New("released")
	})
	f.deliver(fromCloud(sdk.OpUpdate, "default/configmap/cm1", "40", cmJSON("default", "cm1", "40", "stored")))
	f.connect(true)
	start := time.Now()
	q := fromEdged(sdk.OpQuery, "default/configmap/cm1", true, "")
	f.deliver(q)
	// Handle does not wait for the cloud: a downstream message behind the
	// query is handled at once.
	next := fromCloud(sdk.OpInsert, "default/pod/p", "1", podJSON("default", "p", "u", "1"))
	f.deliver(next)
	f.wait(isAck(next.Header.ID))
	answer := f.wait(sdktest.ResponseTo(q.Header.ID)).Message
	if took := time.Since(start); took < 200*time.Millisecond || took > 3*time.Second {
		t.Fatalf("answered after %v, want about remote_query_timeout", took)
	}
	jsonEqual(t, answer.Content, json.RawMessage(cmJSON("default", "cm1", "40", "stored")))
}

func TestQueryOffline(t *testing.T) {
	f := newFixture(t, "", "")
	pods := []string{
		podJSON("default", "a", "ua", "1"),
		podJSON("default", "b", "ub", "2"),
		podJSON("kube-system", "c", "uc", "3"),
	}
	for i, p := range []string{"default/pod/a", "default/pod/b", "kube-system/pod/c"} {
		f.deliver(fromCloud(sdk.OpInsert, p, fmt.Sprint(i+1), pods[i]))
	}
	f.deliver(fromCloud(sdk.OpInsert, "default/configmap/cm1", "5", cmJSON("default", "cm1", "5", "v")))
	f.deliver(fromCloud(sdk.OpInsert, "other/configmap/cm2", "6", cmJSON("other", "cm2", "6", "w")))
	f.deliver(fromCloud(sdk.OpInsert, "null/node/n1", "7", `{"metadata":{"name":"n1"}}`))
	f.deliver(fromCloud(sdk.OpInsert, "default/service/web", "8", svcJSON("web", "8", "10.0.0.1")))
	f.deliver(fromCloud(sdk.OpInsert, "default/endpoints/web", "9", `{"metadata":{"name":"web","namespace":"default"},"subsets":[]}`))
	f.deliver(fromCloud(sdk.OpInsert, "kube-node-lease/lease/edge-1", "10", leaseJSON("10")))
	f.deliver(fromCloud(sdk.OpUpdate, "default/secret/s1", "11", `{"metadata":{"name":"s1","namespace":"default"},"data":{"a":"Yg=="}}`))
	// No OnSync handler: asking the cloud would fail the query.
	f.connect(false)

	tests := []struct {
		name, res string
		wantOp    string
		want      string
		wantText  string
	}{
		{"configmap", "default/configmap/cm1", sdk.OpResponse, cmJSON("default", "cm1", "5", "v"), ""},
		{"node", "null/node/n1", sdk.OpResponse, `{"metadata":{"name":"n1"}}`, ""},
		{"secret", "default/secret/s1", sdk.OpResponse, `{"metadata":{"name":"s1","namespace":"default"},"data":{"a":"Yg=="}}`, ""},
		{"service", "default/service/web", sdk.OpResponse, svcJSON("web", "8", "10.0.0.1"), ""},
		{"endpoints", "default/endpoints/web", sdk.OpResponse, `{"metadata":{"name":"web","namespace":"default"},"subsets":[]}`, ""},
		{"lease", "kube-node-lease/lease/edge-1", sdk.OpResponse, leaseJSON("10"), ""},
		{"missing lease", "kube-node-lease/lease/other", sdk.OpError, "", "not found"},
		{"pod list covers every namespace", "default/pod", sdk.OpResponse, "[" + strings.Join(pods, ",") + "]", ""},
		{"configmap list of one namespace", "other/configmap", sdk.OpResponse, "[" + cmJSON("other", "cm2", "6", "w") + "]", ""},
		{"empty list", "default/persistentvolumeclaim", sdk.OpResponse, "[]", ""},
		{"unknown", "default/secret/nope", sdk.OpError, "", "not found in the local store, and the cloud is disconnected"},
		{"unparsable", "nope", sdk.OpError, "", "want <namespace>/<type>"},
		{"ca offline", ResourceCACert, sdk.OpError, "", "disconnected"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q := fromEdged(sdk.OpQuery, tt.res, true, "")
			_ = f.h.Deliver(q) // bad input returns an error and still answers
			answer := f.wait(sdktest.ResponseTo(q.Header.ID)).Message
			if answer.Router.Operation != tt.wantOp || answer.Header.ParentID != q.Header.ID {
				t.Fatalf("answer %s content %s, want op %s", answer, answer.Content, tt.wantOp)
			}
			if tt.want != "" {
				jsonEqual(t, answer.Content, json.RawMessage(tt.want))
			} else if !strings.Contains(answer.ContentString(), tt.wantText) {
				t.Fatalf("error %q, want it to mention %q", answer.ContentString(), tt.wantText)
			}
		})
	}
	t.Run("async query is answered to the source module", func(t *testing.T) {
		q := fromEdged(sdk.OpQuery, "default/pod/a", false, "")
		f.deliver(q)
		s := f.wait(func(s sdktest.Sent) bool {
			return s.Kind == sdktest.KindModule && s.Target == ModuleEdged && s.Message.Header.ParentID == q.Header.ID
		})
		jsonEqual(t, s.Message.Content, json.RawMessage(pods[0]))
	})
}

func TestConnectionEvents(t *testing.T) {
	f := newFixture(t, "", "")
	if f.m.CloudConnected() {
		t.Fatal("connected before edgehub said so")
	}
	tests := []struct {
		op, content string
		want        bool
		bad         bool
	}{
		{OpConnect, `"cloud_connected"`, true, false},
		{OpConnect, `"cloud_disconnected"`, false, false},
		{OpConnect, ``, true, false},
		{OpDisconnect, ``, false, false},
		{"update", `"maybe"`, false, true},
	}
	for _, tt := range tests {
		msg := sdk.NewMessage("").BuildRouter(ModuleEdgeHub, sdk.GroupMeta, ResourceConnection, tt.op)
		if tt.content != "" {
			msg.Content = json.RawMessage(tt.content)
		}
		err := f.h.Deliver(msg)
		if (err != nil) != tt.bad {
			t.Fatalf("%s %s: err = %v", tt.op, tt.content, err)
		}
		if !tt.bad && f.m.CloudConnected() != tt.want {
			t.Fatalf("%s %s: connected = %v", tt.op, tt.content, f.m.CloudConnected())
		}
	}
	if len(f.h.Sent()) != 0 {
		t.Fatalf("sent: %s", describe(f.h.Sent()))
	}
}

func TestUpstream(t *testing.T) {
	t.Run("async reports are forwarded as they are", func(t *testing.T) {
		f := newFixture(t, "", "")
		msgs := []*sdk.Message{
			fromEdged(sdk.OpUpdate, "default/podstatus/nginx", false, `{"UID":"u1","Name":"nginx","Status":{"phase":"Running"}}`),
			fromEdged(sdk.OpPatch, "default/podpatch/nginx", false, `"{\"status\":{\"phase\":\"Running\"}}"`),
			fromEdged(sdk.OpUpdate, "null/nodestatus/edge-1", false, `{"UID":"n","Status":{}}`),
			fromEdged(sdk.OpUpdate, "kube-node-lease/lease/edge-1", false, `{"metadata":{"name":"edge-1"}}`),
			fromEdged(sdk.OpDelete, "default/pod/nginx", false, `{"gracePeriodSeconds":0,"preconditions":{"uid":"u1"}}`),
		}
		for i, msg := range msgs {
			f.deliver(msg)
			sent := f.h.Sent()
			if len(sent) != i+1 {
				t.Fatalf("%s: sent %s", msg, describe(sent))
			}
			s := sent[i]
			if s.Kind != sdktest.KindModule || s.Target != ModuleEdgeHub || s.Message.Header.ID != msg.Header.ID ||
				s.Message.Router != msg.Router || string(s.Message.Content) != string(msg.Content) {
				t.Fatalf("forwarded %s %s %s content %s, want %s unchanged", s.Kind, s.Target, s.Message, s.Message.Content, msg)
			}
		}
		// Reports are not stored: the cloud's version is what the store holds.
		if got := f.stored("default/podstatus/nginx"); got != "-" {
			t.Fatalf("podstatus stored at %s", got)
		}
	})
	t.Run("sync request answered with the cloud's answer", func(t *testing.T) {
		f := newFixture(t, "", "")
		f.h.OnSync(ModuleEdgeHub, func(req *sdk.Message) (*sdk.Message, error) {
			resp, err := sdk.NewResponse(req, json.RawMessage(`{"Object":{"metadata":{"name":"edge-1","resourceVersion":"9"}},"Err":null}`))
			resp.Header.ResourceVersion = "9"
			return resp, err
		})
		msg := fromEdged(sdk.OpPatch, "null/nodepatch/edge-1", true, `"{\"status\":{}}"`)
		f.deliver(msg)
		answer := f.wait(sdktest.ResponseTo(msg.Header.ID)).Message
		if answer.Router.Operation != sdk.OpResponse || answer.Header.ResourceVersion != "9" || answer.Router.Resource != msg.Router.Resource {
			t.Fatalf("answer %s", answer)
		}
		jsonEqual(t, answer.Content, json.RawMessage(`{"Object":{"metadata":{"name":"edge-1","resourceVersion":"9"}},"Err":null}`))
		req := f.wait(sdktest.ToModule(ModuleEdgeHub)).Message
		if req.Header.ID == msg.Header.ID || string(req.Content) != string(msg.Content) {
			t.Fatalf("request to the cloud %s content %s", req, req.Content)
		}
	})
	t.Run("sync request the cloud cannot answer gets an error", func(t *testing.T) {
		f := newFixture(t, "", "")
		f.h.OnSync(ModuleEdgeHub, func(*sdk.Message) (*sdk.Message, error) { return nil, sdk.ErrQueueFull })
		msg := fromEdged(sdk.OpInsert, "null/node/edge-1", true, `{"metadata":{"name":"edge-1"}}`)
		f.deliver(msg)
		answer := f.wait(sdktest.ResponseTo(msg.Header.ID)).Message
		if answer.Router.Operation != sdk.OpError || !strings.Contains(answer.ContentString(), "queue full") {
			t.Fatalf("answer %s content %s", answer, answer.Content)
		}
	})
	t.Run("edgehub unreachable", func(t *testing.T) {
		f := newFixture(t, "", "")
		f.h.FailSendsTo(ModuleEdgeHub, sdk.ErrQueueFull)
		if err := f.h.Deliver(fromEdged(sdk.OpUpdate, "default/podstatus/nginx", false, `{}`)); !errors.Is(err, sdk.ErrQueueFull) {
			t.Fatalf("Deliver = %v", err)
		}
	})
}

// Offline autonomy across restarts: a new instance on the same database, with
// the cloud never connected, lists every pod stored before.
func TestRestartKeepsPods(t *testing.T) {
	db := filepath.Join(t.TempDir(), "node", "meta.db")
	first := newFixture(t, db, "")
	var pods []string
	for i := range 5 {
		name := fmt.Sprintf("p%d", i)
		pods = append(pods, podJSON("default", name, "u"+name, fmt.Sprint(100+i)))
		first.deliver(fromCloud(sdk.OpInsert, "default/pod/"+name, fmt.Sprint(100+i), pods[i]))
	}
	first.deliver(fromCloud(sdk.OpDelete, "default/pod/p4", "", `{"metadata":{"uid":"up4"}}`))
	pods = pods[:4]
	first.h.Stop()

	second := newFixture(t, db, "")
	q := fromEdged(sdk.OpQuery, "default/pod", true, "")
	second.deliver(q)
	answer := second.wait(sdktest.ResponseTo(q.Header.ID)).Message
	jsonEqual(t, answer.Content, json.RawMessage("["+strings.Join(pods, ",")+"]"))
	if len(second.h.Sent()) != 1 {
		t.Fatalf("the restarted module sent more than the answer: %s", describe(second.h.Sent()))
	}
}

func TestHealthAndStop(t *testing.T) {
	f := newFixture(t, "", "")
	if err := f.h.Health(context.Background()); err != nil {
		t.Fatal(err)
	}
	f.h.Stop()
	if err := f.h.Health(context.Background()); err == nil {
		t.Fatal("healthy after Stop")
	}
	if err := New().Handle(context.Background(), fromEdged(sdk.OpQuery, "default/pod", true, "")); err == nil {
		t.Fatal("Handle before Start succeeded")
	}
}
