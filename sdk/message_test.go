package sdk

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	pluginv1 "github.com/edgehive/edgehive/sdk/proto/plugin/v1"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

var uuidV4 = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

// golden compares got with testdata/name, or rewrites it with -update.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read golden file (run with -update to create it): %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s mismatch\n got: %s\nwant: %s", name, got, want)
	}
}

func TestMessageJSONGolden(t *testing.T) {
	tests := []struct {
		name   string
		golden string
		msg    Message
		// absent lists keys that must not appear in the output.
		absent []string
	}{
		{
			name:   "fully populated",
			golden: "message_full.json",
			msg: Message{
				Header: MessageHeader{
					ID:              "5a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d",
					ParentID:        "0f0e0d0c-0b0a-4908-8706-050403020100",
					Timestamp:       1718000000123,
					ResourceVersion: "12345",
					Sync:            true,
					MessageType:     "type-x",
				},
				Router: MessageRoute{
					Source:      "edged",
					Destination: "cloud",
					Group:       "meta",
					Operation:   "insert",
					Resource:    "default/pod/nginx",
				},
				Content: json.RawMessage(`{"apiVersion":"v1","kind":"Pod","metadata":{"name":"nginx","namespace":"default"}}`),
			},
		},
		{
			name:   "minimal: optional header and route fields omitted, content null",
			golden: "message_minimal.json",
			msg: Message{
				Header: MessageHeader{ID: "5a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d", Timestamp: 1718000000123},
			},
			absent: []string{"parent_msg_id", "resourceversion", "sync", "type", "source", "destination", "group", "operation", "resource"},
		},
		{
			name:   "zero message: msg_id and timestamp still present",
			golden: "message_zero.json",
			msg:    Message{},
			absent: []string{"parent_msg_id", "resourceversion", "sync", "type", "source"},
		},
		{
			name:   "ack: string content, sync false omitted",
			golden: "message_ack.json",
			msg: Message{
				Header:  MessageHeader{ID: "11111111-2222-4333-8444-555555555555", ParentID: "66666666-7777-4888-9999-aaaaaaaaaaaa", Timestamp: 1},
				Router:  MessageRoute{Source: "metamanager", Group: "resource", Operation: "response", Resource: "default/pod/nginx"},
				Content: json.RawMessage(`"OK"`),
			},
			absent: []string{"resourceversion", "sync", "type", "destination"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := json.Marshal(&tt.msg)
			if err != nil {
				t.Fatal(err)
			}
			golden(t, tt.golden, got)
			for _, key := range tt.absent {
				if bytes.Contains(got, []byte(`"`+key+`":`)) {
					t.Errorf("key %q must be omitted: %s", key, got)
				}
			}
			for _, key := range []string{`"msg_id":`, `"timestamp":`, `"content":`, `"header":`} {
				if !bytes.Contains(got, []byte(key)) {
					t.Errorf("key %s must always be present: %s", key, got)
				}
			}
			if len(tt.msg.Content) == 0 && !bytes.HasSuffix(got, []byte(`"content":null}`)) {
				t.Errorf("empty content must marshal as null: %s", got)
			}
			// A value (not pointer) marshals the same way.
			got2, err := json.Marshal(tt.msg)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, got2) {
				t.Errorf("value and pointer marshal differ:\n%s\n%s", got, got2)
			}
		})
	}
}

// TestMessageEmptyContent: content that is empty but not nil marshals as
// null like nil content does (a module may assign Content directly).
func TestMessageEmptyContent(t *testing.T) {
	m := Message{Header: MessageHeader{ID: "a", Timestamp: 2}, Content: json.RawMessage{}}
	got, err := json.Marshal(&m)
	if err != nil {
		t.Fatalf("a message with empty non-nil content does not marshal: %v", err)
	}
	if want := `{"header":{"msg_id":"a","timestamp":2},"route":{},"content":null}`; string(got) != want {
		t.Errorf("got %s, want %s", got, want)
	}
	// The SDK's own paths never produce empty non-nil content.
	if c := MessageFromProto(&pluginv1.Message{Id: "a", Content: []byte{}}).Content; c != nil {
		t.Errorf("MessageFromProto: content %q, want nil", c)
	}
	if c := (&Message{Content: json.RawMessage{}}).Clone().Content; len(c) != 0 {
		t.Errorf("Clone: content %q", c)
	}
}

// TestMessageJSONFieldOrder pins the key order KubeEdge's struct produces.
func TestMessageJSONFieldOrder(t *testing.T) {
	m := Message{
		Header:  MessageHeader{ID: "i", ParentID: "p", Timestamp: 3, ResourceVersion: "r", Sync: true, MessageType: "t"},
		Router:  MessageRoute{Source: "s", Destination: "d", Group: "g", Operation: "o", Resource: "res"},
		Content: json.RawMessage(`1`),
	}
	got, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"header":{"msg_id":"i","parent_msg_id":"p","timestamp":3,"resourceversion":"r","sync":true,"type":"t"},` +
		`"route":{"source":"s","destination":"d","group":"g","operation":"o","resource":"res"},"content":1}`
	if string(got) != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
}

func TestMessageJSONRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		in   string
		// check inspects the decoded message.
		check func(t *testing.T, m *Message)
	}{
		{
			name: "pod insert with object content",
			in: `{"header":{"msg_id":"2b0e1a5c-7a0f-4f7e-9a7d-3f1f3c1b2a10","timestamp":1718000000123,"resourceversion":"4711"},` +
				`"route":{"source":"edgecontroller","group":"resource","operation":"insert","resource":"default/pod/nginx"},` +
				`"content":{"apiVersion":"v1","kind":"Pod","metadata":{"name":"nginx","namespace":"default","uid":"u-1","resourceVersion":"4711"},"spec":{"containers":[{"name":"nginx","image":"nginx:1.25"}]}}}`,
			check: func(t *testing.T, m *Message) {
				if m.Header.ResourceVersion != "4711" || m.Router.Operation != OpInsert || m.Router.Group != WireGroupResource {
					t.Errorf("decoded %+v", m)
				}
				var pod struct {
					Kind     string `json:"kind"`
					Metadata struct {
						Name string `json:"name"`
					} `json:"metadata"`
				}
				if err := m.DecodeContent(&pod); err != nil || pod.Kind != "Pod" || pod.Metadata.Name != "nginx" {
					t.Errorf("content: %+v, %v", pod, err)
				}
			},
		},
		{
			name: "ack with content OK",
			in: `{"header":{"msg_id":"3c1f2b6d-8b1a-4a8f-8b8e-4a2a4d2c3b21","parent_msg_id":"2b0e1a5c-7a0f-4f7e-9a7d-3f1f3c1b2a10","timestamp":1718000000456},` +
				`"route":{"source":"metaManager","group":"resource","operation":"response","resource":"default/pod/nginx"},"content":"OK"}`,
			check: func(t *testing.T, m *Message) {
				if !m.IsResponse() || m.ContentString() != AckContent {
					t.Errorf("not an ack: %+v content %q", m, m.ContentString())
				}
			},
		},
		{
			name: "patch with JSON-in-a-string content",
			in: `{"header":{"msg_id":"4d2a3c7e-9c2b-4b9a-9c9f-5b3b5e3d4c32","timestamp":1718000000789},` +
				`"route":{"source":"edged","group":"meta","operation":"patch","resource":"default/podpatch/nginx"},` +
				`"content":"{\"status\":{\"phase\":\"Running\",\"conditions\":[{\"type\":\"Ready\",\"status\":\"True\"}]}}"}`,
			check: func(t *testing.T, m *Message) {
				var patch struct {
					Status struct {
						Phase string `json:"phase"`
					} `json:"status"`
				}
				if err := m.DecodeContent(&patch); err != nil || patch.Status.Phase != "Running" {
					t.Errorf("patch content: %+v, %v", patch, err)
				}
				if !strings.HasPrefix(m.ContentString(), `{"status":`) {
					t.Errorf("ContentString = %q", m.ContentString())
				}
			},
		},
		{
			name:  "null content and empty route",
			in:    `{"header":{"msg_id":"x","timestamp":0},"route":{},"content":null}`,
			check: func(t *testing.T, m *Message) {},
		},
		{
			name: "cluster-scoped node update with array content and escaped characters",
			in: `{"header":{"msg_id":"5e3b4d8f-ad3c-4cab-ad0a-6c4c6f4e5d43","timestamp":1718000001000},` +
				`"route":{"source":"edgecontroller","group":"resource","operation":"update","resource":"null/node/edge-1"},` +
				`"content":[1,2.5,"a\"b\\c\n",true,null,{"k":"\u003ctag\u003e"}]}`,
			check: func(t *testing.T, m *Message) {
				r, err := ParseResource(m.Router.Resource)
				if err != nil || !r.ClusterScoped() || r.Name != "edge-1" {
					t.Errorf("resource %+v, %v", r, err)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var m Message
			if err := json.Unmarshal([]byte(tt.in), &m); err != nil {
				t.Fatal(err)
			}
			tt.check(t, &m)
			out, err := json.Marshal(&m)
			if err != nil {
				t.Fatal(err)
			}
			if string(out) != tt.in {
				t.Errorf("round trip changed the bytes\n in: %s\nout: %s", tt.in, out)
			}
			// Through the protobuf envelope and back, too.
			out2, err := json.Marshal(MessageFromProto(m.ToProto()))
			if err != nil {
				t.Fatal(err)
			}
			if string(out2) != tt.in {
				t.Errorf("proto round trip changed the bytes\n in: %s\nout: %s", tt.in, out2)
			}
		})
	}
}

func TestNewMessage(t *testing.T) {
	a, b := NewMessage(""), NewMessage("parent")
	if !uuidV4.MatchString(a.Header.ID) || !uuidV4.MatchString(b.Header.ID) {
		t.Errorf("ids are not lowercase UUIDv4: %q %q", a.Header.ID, b.Header.ID)
	}
	if a.Header.ID == b.Header.ID {
		t.Error("two messages share an id")
	}
	if a.Header.ParentID != "" || b.Header.ParentID != "parent" || a.IsResponse() || !b.IsResponse() {
		t.Errorf("parent ids: %q %q", a.Header.ParentID, b.Header.ParentID)
	}
	// Unix milliseconds, not seconds or nanoseconds: 2020-01-01 .. 2100-01-01.
	if ts := a.Header.Timestamp; ts < 1577836800000 || ts > 4102444800000 {
		t.Errorf("timestamp %d is not Unix milliseconds", ts)
	}
	m := NewMessage("").BuildRouter("src", "grp", "ns/pod/x", OpUpdate)
	if m.Router != (MessageRoute{Source: "src", Group: "grp", Resource: "ns/pod/x", Operation: OpUpdate}) {
		t.Errorf("BuildRouter: %+v", m.Router)
	}
}

func testRequest() *Message {
	return &Message{
		Header:  MessageHeader{ID: "req-1", Timestamp: 100, ResourceVersion: "77", Sync: true, MessageType: "t"},
		Router:  MessageRoute{Source: "edgecontroller", Destination: "dst", Group: "resource", Operation: OpInsert, Resource: "default/pod/nginx"},
		Content: json.RawMessage(`{"a":1}`),
	}
}

func TestResponses(t *testing.T) {
	tests := []struct {
		name        string
		build       func(req *Message) (*Message, error)
		wantOp      string
		wantContent string
		wantRV      string
	}{
		{
			name:        "NewResponse with an object",
			build:       func(req *Message) (*Message, error) { return NewResponse(req, map[string]int{"n": 1}) },
			wantOp:      OpResponse,
			wantContent: `{"n":1}`,
			wantRV:      "77",
		},
		{
			name:        "NewAck",
			build:       func(req *Message) (*Message, error) { return NewAck(req), nil },
			wantOp:      OpResponse,
			wantContent: `"OK"`,
			wantRV:      "77",
		},
		{
			name:        "NewErrorResponse",
			build:       func(req *Message) (*Message, error) { return NewErrorResponse(req, errors.New("pod not found")), nil },
			wantOp:      OpError,
			wantContent: `"pod not found"`,
		},
		{
			name:        "NewErrorResponse with nil error",
			build:       func(req *Message) (*Message, error) { return NewErrorResponse(req, nil), nil },
			wantOp:      OpError,
			wantContent: `"unknown error"`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := testRequest()
			before := *req.Clone()
			resp, err := tt.build(req)
			if err != nil {
				t.Fatal(err)
			}
			if resp.Header.ID == req.Header.ID || !uuidV4.MatchString(resp.Header.ID) {
				t.Errorf("response id %q must be a fresh UUIDv4", resp.Header.ID)
			}
			if resp.Header.ParentID != req.Header.ID {
				t.Errorf("parent id %q, want %q", resp.Header.ParentID, req.Header.ID)
			}
			if resp.Router.Operation != tt.wantOp {
				t.Errorf("operation %q, want %q", resp.Router.Operation, tt.wantOp)
			}
			if resp.Router.Source != req.Router.Source || resp.Router.Group != req.Router.Group || resp.Router.Resource != req.Router.Resource {
				t.Errorf("route %+v does not copy source/group/resource of %+v", resp.Router, req.Router)
			}
			if resp.Router.Destination != "" {
				t.Errorf("destination %q should be empty", resp.Router.Destination)
			}
			if string(resp.Content) != tt.wantContent {
				t.Errorf("content %s, want %s", resp.Content, tt.wantContent)
			}
			if resp.Header.ResourceVersion != tt.wantRV {
				t.Errorf("resourceversion %q, want %q", resp.Header.ResourceVersion, tt.wantRV)
			}
			if resp.Header.Sync {
				t.Error("a response must not be marked sync")
			}
			if !reflect.DeepEqual(*req, before) {
				t.Errorf("request modified: %+v", req)
			}
		})
	}
	if _, err := NewResponse(testRequest(), json.RawMessage(`{bad`)); err == nil {
		t.Error("NewResponse with invalid raw content: want an error")
	}
}

func TestDecodeContent(t *testing.T) {
	type obj struct {
		Name string `json:"name"`
		N    int    `json:"n"`
	}
	tests := []struct {
		name    string
		content string
		into    func() any
		want    any
		wantErr bool
	}{
		{name: "object", content: `{"name":"x","n":2}`, into: func() any { return new(obj) }, want: &obj{Name: "x", N: 2}},
		{name: "JSON in a string", content: `"{\"name\":\"y\",\"n\":3}"`, into: func() any { return new(obj) }, want: &obj{Name: "y", N: 3}},
		{name: "string into string is not unwrapped", content: `"{\"name\":\"y\"}"`, into: func() any { return new(string) }, want: ptr(`{"name":"y"}`)},
		{name: "number in a string", content: `"42"`, into: func() any { return new(int) }, want: ptr(42)},
		{name: "plain string into object", content: `"OK"`, into: func() any { return new(obj) }, wantErr: true},
		{name: "empty content", content: ``, into: func() any { return new(obj) }, wantErr: true},
		{name: "type mismatch", content: `{"name":5}`, into: func() any { return new(obj) }, wantErr: true},
		{name: "string holding a mismatched object", content: `"{\"name\":5}"`, into: func() any { return new(obj) }, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := &Message{Header: MessageHeader{ID: "id-1"}, Content: json.RawMessage(tt.content)}
			v := tt.into()
			err := m.DecodeContent(v)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if err != nil {
				if !strings.Contains(err.Error(), "id-1") {
					t.Errorf("error %q does not name the message", err)
				}
				return
			}
			if !reflect.DeepEqual(v, tt.want) {
				t.Errorf("got %#v, want %#v", v, tt.want)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

func TestFillBody(t *testing.T) {
	tests := []struct {
		name    string
		v       any
		want    string // content bytes; "" means nil content
		wantErr bool
	}{
		{name: "string becomes a JSON string", v: "OK", want: `"OK"`},
		{name: "object", v: map[string]any{"b": 1, "a": "x"}, want: `{"a":"x","b":1}`},
		{name: "raw JSON kept as is", v: json.RawMessage(`{"z": 1, "a": 2}`), want: `{"z": 1, "a": 2}`},
		{name: "bytes holding JSON kept as is", v: []byte(`[1, 2]`), want: `[1, 2]`},
		{name: "nil", v: nil, want: ""},
		{name: "invalid raw JSON", v: json.RawMessage(`{"a":`), wantErr: true},
		{name: "invalid JSON bytes", v: []byte("not json"), wantErr: true},
		{name: "empty raw", v: json.RawMessage{}, wantErr: true},
		{name: "unencodable", v: func() {}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := &Message{Header: MessageHeader{ID: "id-2"}, Content: json.RawMessage(`"previous"`)}
			err := m.FillBody(tt.v)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if err != nil {
				if string(m.Content) != `"previous"` {
					t.Errorf("a failed FillBody changed the content to %s", m.Content)
				}
				return
			}
			if string(m.Content) != tt.want || (tt.want == "" && m.Content != nil) {
				t.Errorf("content %q, want %q", m.Content, tt.want)
			}
		})
	}
}

func TestClone(t *testing.T) {
	m := testRequest()
	c := m.Clone()
	if !reflect.DeepEqual(m, c) {
		t.Fatalf("clone differs: %+v", c)
	}
	c.Content[1] = 'X'
	c.Header.ID = "other"
	if string(m.Content) != `{"a":1}` || m.Header.ID != "req-1" {
		t.Errorf("clone shares state with the original: %s %s", m.Content, m.Header.ID)
	}
	if (&Message{}).Clone().Content != nil {
		t.Error("clone of nil content must stay nil")
	}
}

func TestProtoRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		msg  *Message
	}{
		{name: "full", msg: testRequest()},
		{name: "zero", msg: &Message{}},
		{name: "null content", msg: &Message{Header: MessageHeader{ID: "n"}, Content: json.RawMessage("null")}},
		{name: "string content", msg: &Message{Header: MessageHeader{ID: "s", ParentID: "p"}, Router: MessageRoute{Operation: OpResponse}, Content: json.RawMessage(`"OK"`)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := tt.msg.ToProto()
			// Every field must make it into the envelope, and across the wire.
			wire, err := proto.Marshal(p)
			if err != nil {
				t.Fatal(err)
			}
			var p2 pluginv1.Message
			if err := proto.Unmarshal(wire, &p2); err != nil {
				t.Fatal(err)
			}
			back := MessageFromProto(&p2)
			if !reflect.DeepEqual(back, tt.msg) {
				t.Errorf("round trip\n got %+v\nwant %+v", back, tt.msg)
			}
		})
	}
	p := testRequest().ToProto()
	want := &pluginv1.Message{
		Id: "req-1", Timestamp: 100, ResourceVersion: "77", Sync: true, Type: "t",
		Source: "edgecontroller", Destination: "dst", Group: "resource", Operation: OpInsert, Resource: "default/pod/nginx",
		Content: []byte(`{"a":1}`),
	}
	if !proto.Equal(p, want) {
		t.Errorf("ToProto = %v, want %v", p, want)
	}
	// Empty proto content becomes nil content, which marshals as null.
	if m := MessageFromProto(&pluginv1.Message{Id: "e", Content: []byte{}}); m.Content != nil {
		t.Errorf("empty proto content: %q, want nil", m.Content)
	}
	if m := MessageFromProto(nil); m.Header.ID != "" || m.Content != nil {
		t.Errorf("MessageFromProto(nil) = %+v", m)
	}
}

func TestValidateEnvelope(t *testing.T) {
	tests := []struct {
		name    string
		msg     *pluginv1.Message
		wantErr string // substring; "" means valid
	}{
		{name: "nil", msg: nil, wantErr: "missing"},
		{name: "no id", msg: &pluginv1.Message{Operation: "insert"}, wantErr: "no msg_id"},
		{name: "id of 129 bytes", msg: &pluginv1.Message{Id: strings.Repeat("a", 129), Operation: "insert"}, wantErr: "longer than 128"},
		{name: "id of 128 bytes", msg: &pluginv1.Message{Id: strings.Repeat("a", 128), Operation: "insert"}},
		{name: "no operation", msg: &pluginv1.Message{Id: "x"}, wantErr: "no route.operation"},
		{name: "invalid JSON content", msg: &pluginv1.Message{Id: "x", Operation: "insert", Content: []byte(`{"a":`)}, wantErr: "not valid JSON"},
		{name: "bare word content", msg: &pluginv1.Message{Id: "x", Operation: "insert", Content: []byte(`OK`)}, wantErr: "not valid JSON"},
		{name: "valid with object content", msg: &pluginv1.Message{Id: "x", Operation: "insert", Content: []byte(`{"a":1}`)}},
		{name: "valid without content", msg: &pluginv1.Message{Id: "x", Operation: "keepalive"}},
		{name: "valid with string content", msg: &pluginv1.Message{Id: "x", Operation: "response", ParentId: "p", Content: []byte(`"OK"`)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ValidateEnvelope(tt.msg)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("want valid, got %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

func FuzzMessageJSON(f *testing.F) {
	f.Add([]byte(`{"header":{"msg_id":"a","timestamp":1},"route":{"operation":"insert"},"content":{"x":[1,2]}}`))
	f.Add([]byte(`{"header":{"msg_id":"a","parent_msg_id":"b","timestamp":1,"sync":true},"route":{},"content":"OK"}`))
	f.Add([]byte(`{"content":null}`))
	f.Add([]byte(`{}`))
	f.Add([]byte(`null`))
	f.Add([]byte(`{"header":{"msg_id":"\ud800","timestamp":1e3}}`))
	f.Add([]byte(`{"content":"<\u2028>"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var m Message
		if err := json.Unmarshal(data, &m); err != nil {
			return
		}
		out, err := json.Marshal(&m)
		if err != nil {
			t.Fatalf("unmarshal of %q succeeded but marshal failed: %v", data, err)
		}
		// What we write we must read, and writing it again changes nothing.
		var m2 Message
		if err := json.Unmarshal(out, &m2); err != nil {
			t.Fatalf("cannot read back %q: %v", out, err)
		}
		out2, err := json.Marshal(&m2)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(out, out2) {
			t.Fatalf("marshal is not stable:\n%s\n%s", out, out2)
		}
		_ = ValidateEnvelope(m.ToProto())
		_ = m.ContentString()
	})
}

func FuzzParseResource(f *testing.F) {
	for _, s := range []string{"default/pod/nginx", "null/node/n1", "default/pod", "default/device/a/b", "", "x", "/pod/a", "ns//a", "ns/pod/", "a/b/c/"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseResource(s)
		if err != nil {
			if r != (Resource{}) {
				t.Fatalf("error %v with a non-zero resource %+v", err, r)
			}
			return
		}
		if r.Namespace == "" || r.Type == "" || strings.Contains(r.Namespace, "/") || strings.Contains(r.Type, "/") {
			t.Fatalf("ParseResource(%q) = %+v", s, r)
		}
		if got := r.String(); got != s {
			t.Fatalf("ParseResource(%q).String() = %q", s, got)
		}
		if r.IsList() != (strings.Count(s, "/") == 1) {
			t.Fatalf("IsList of %q = %v", s, r.IsList())
		}
	})
}
