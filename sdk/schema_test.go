package sdk

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	pluginv1 "github.com/edgehive/edgehive/sdk/proto/plugin/v1"
)

func TestSchemaValidate(t *testing.T) {
	tests := []struct {
		name    string
		schema  Schema
		wantErr string // substring; "" means valid
	}{
		{name: "empty", schema: Schema{}},
		{
			name: "every type with a matching default",
			schema: Schema{Attributes: []Attribute{
				{Name: "s", Type: TypeString, Default: "x"},
				{Name: "n", Type: TypeNumber, Default: 3},
				{Name: "f", Type: TypeNumber, Default: 2.5},
				{Name: "i64", Type: TypeNumber, Default: int64(1)},
				{Name: "b", Type: TypeBool, Default: false},
				{Name: "d", Type: TypeDuration, Default: "15s"},
				{Name: "ls", Type: TypeListOfString, Default: []string{"a"}},
				{Name: "ms", Type: TypeMapOfString, Default: map[string]string{"k": "v"}},
				{Name: "ln", Type: TypeListOfNumber, Default: []float64{1}},
				{Name: "li", Type: TypeListOfNumber, Default: []int{1}},
				{Name: "req", Type: TypeString, Required: true},
			}},
		},
		{
			name: "nested block",
			schema: Schema{Blocks: []Block{{Name: "tls", Schema: Schema{Attributes: []Attribute{
				{Name: "cert", Type: TypeString, Required: true},
			}}}}},
		},
		{name: "duplicate attribute", schema: Schema{Attributes: []Attribute{{Name: "a", Type: TypeString}, {Name: "a", Type: TypeNumber}}}, wantErr: `"a" declared twice`},
		{name: "attribute and block share a name", schema: Schema{Attributes: []Attribute{{Name: "a", Type: TypeString}}, Blocks: []Block{{Name: "a"}}}, wantErr: `"a" declared twice`},
		{name: "duplicate block", schema: Schema{Blocks: []Block{{Name: "b"}, {Name: "b"}}}, wantErr: `"b" declared twice`},
		{name: "empty attribute name", schema: Schema{Attributes: []Attribute{{Type: TypeString}}}, wantErr: "attribute with empty name"},
		{name: "empty block name", schema: Schema{Blocks: []Block{{}}}, wantErr: "block with empty name"},
		{name: "type zero", schema: Schema{Attributes: []Attribute{{Name: "a"}}}, wantErr: "unknown type 0"},
		{name: "type past the last", schema: Schema{Attributes: []Attribute{{Name: "a", Type: TypeListOfNumber + 1}}}, wantErr: "unknown type 8"},
		{name: "string default for a number", schema: Schema{Attributes: []Attribute{{Name: "a", Type: TypeNumber, Default: "3"}}}, wantErr: "is not a number"},
		{name: "number default for a string", schema: Schema{Attributes: []Attribute{{Name: "a", Type: TypeString, Default: 3}}}, wantErr: "is not a string"},
		{name: "bool default for a string", schema: Schema{Attributes: []Attribute{{Name: "a", Type: TypeString, Default: true}}}, wantErr: "is not a string"},
		{name: "bad duration default", schema: Schema{Attributes: []Attribute{{Name: "a", Type: TypeDuration, Default: "5 seconds"}}}, wantErr: "is not a duration"},
		{name: "time.Duration default for a duration", schema: Schema{Attributes: []Attribute{{Name: "a", Type: TypeDuration, Default: 5 * time.Second}}}, wantErr: "is not a duration"},
		{name: "list of number default for a list of string", schema: Schema{Attributes: []Attribute{{Name: "a", Type: TypeListOfString, Default: []int{1}}}}, wantErr: "is not a list(string)"},
		{name: "map default of the wrong kind", schema: Schema{Attributes: []Attribute{{Name: "a", Type: TypeMapOfString, Default: map[string]int{"k": 1}}}}, wantErr: "is not a map(string)"},
		{name: "required with a default", schema: Schema{Attributes: []Attribute{{Name: "a", Type: TypeString, Required: true, Default: "x"}}}, wantErr: "required and has a default"},
		{
			name:    "error inside a block",
			schema:  Schema{Blocks: []Block{{Name: "tls", Schema: Schema{Attributes: []Attribute{{Name: "x", Type: TypeBool, Default: "yes"}}}}}},
			wantErr: `block "tls": schema: attribute "x"`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.schema.Validate()
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

func TestAttrTypeString(t *testing.T) {
	want := map[AttrType]string{
		TypeString: "string", TypeNumber: "number", TypeBool: "bool", TypeDuration: "duration",
		TypeListOfString: "list(string)", TypeMapOfString: "map(string)", TypeListOfNumber: "list(number)",
		AttrType(0): "AttrType(0)", AttrType(99): "AttrType(99)",
	}
	for typ, s := range want {
		if typ.String() != s {
			t.Errorf("%d.String() = %q, want %q", int(typ), typ.String(), s)
		}
	}
	// The SDK's types and the proto enum must stay numbered alike.
	pairs := map[AttrType]pluginv1.Attribute_Type{
		TypeString: pluginv1.Attribute_TYPE_STRING, TypeNumber: pluginv1.Attribute_TYPE_NUMBER,
		TypeBool: pluginv1.Attribute_TYPE_BOOL, TypeDuration: pluginv1.Attribute_TYPE_DURATION,
		TypeListOfString: pluginv1.Attribute_TYPE_LIST_OF_STRING, TypeMapOfString: pluginv1.Attribute_TYPE_MAP_OF_STRING,
		TypeListOfNumber: pluginv1.Attribute_TYPE_LIST_OF_NUMBER,
	}
	for a, p := range pairs {
		if int32(a) != int32(p) {
			t.Errorf("%s = %d but proto %s = %d", a, a, p, p)
		}
	}
}

func TestSchemaProtoRoundTrip(t *testing.T) {
	in := Schema{
		Attributes: []Attribute{
			{Name: "server", Type: TypeString, Required: true, Description: "cloud address"},
			{Name: "heartbeat", Type: TypeDuration, Default: "15s", Description: "keepalive"},
			{Name: "qps", Type: TypeNumber, Default: 30},
			{Name: "ratio", Type: TypeNumber, Default: 0.5},
			{Name: "enabled", Type: TypeBool, Default: true},
			{Name: "topics", Type: TypeListOfString, Default: []string{"a", "b"}},
			{Name: "labels", Type: TypeMapOfString, Default: map[string]string{"b": "2", "a": "1"}},
			{Name: "ports", Type: TypeListOfNumber, Default: []int{80, 443}},
			{Name: "nodefault", Type: TypeString},
		},
		Blocks: []Block{
			{Name: "tls", Required: true, Description: "certs", Schema: Schema{Attributes: []Attribute{{Name: "cert", Type: TypeString, Default: "/etc/cert"}}}},
			{Name: "rule", Repeated: true, Schema: Schema{
				Attributes: []Attribute{{Name: "match", Type: TypeString, Required: true}},
				Blocks:     []Block{{Name: "inner", Schema: Schema{Attributes: []Attribute{{Name: "x", Type: TypeBool}}}}},
			}},
		},
	}
	if err := in.Validate(); err != nil {
		t.Fatal(err)
	}
	p, err := in.ToProto()
	if err != nil {
		t.Fatal(err)
	}
	out, err := SchemaFromProto(p)
	if err != nil {
		t.Fatal(err)
	}
	wantDefaults := map[string]string{
		"heartbeat": `"15s"`, "qps": `30`, "ratio": `0.5`, "enabled": `true`, "topics": `["a","b"]`,
		"labels": `{"a":"1","b":"2"}`, "ports": `[80,443]`,
	}
	var compare func(path string, a, b Schema)
	compare = func(path string, a, b Schema) {
		if len(a.Attributes) != len(b.Attributes) || len(a.Blocks) != len(b.Blocks) {
			t.Fatalf("%s: %d attributes %d blocks, want %d %d", path, len(b.Attributes), len(b.Blocks), len(a.Attributes), len(a.Blocks))
		}
		for i, x := range a.Attributes {
			y := b.Attributes[i]
			if x.Name != y.Name || x.Type != y.Type || x.Required != y.Required || x.Description != y.Description {
				t.Errorf("%s attribute %d: got %+v, want %+v", path, i, y, x)
			}
			if x.Default == nil {
				if y.Default != nil {
					t.Errorf("%s.%s: default %v, want none", path, x.Name, y.Default)
				}
				continue
			}
			raw, ok := y.Default.(json.RawMessage)
			if !ok {
				t.Errorf("%s.%s: default is %T, want json.RawMessage", path, x.Name, y.Default)
				continue
			}
			if want, ok := wantDefaults[x.Name]; ok && string(raw) != want {
				t.Errorf("%s.%s: default %s, want %s", path, x.Name, raw, want)
			}
		}
		for i, x := range a.Blocks {
			y := b.Blocks[i]
			if x.Name != y.Name || x.Repeated != y.Repeated || x.Required != y.Required || x.Description != y.Description {
				t.Errorf("%s block %d: got %+v, want %+v", path, i, y, x)
			}
			compare(path+"."+x.Name, x.Schema, y.Schema)
		}
	}
	compare("schema", in, *out)

	// Decoding a nil schema gives an empty one.
	if s, err := SchemaFromProto(nil); err != nil || len(s.Attributes)+len(s.Blocks) != 0 {
		t.Errorf("SchemaFromProto(nil) = %+v, %v", s, err)
	}
}

func TestSchemaFromProtoErrors(t *testing.T) {
	tests := []struct {
		name    string
		p       *pluginv1.Schema
		wantErr string
	}{
		{name: "unspecified type", p: &pluginv1.Schema{Attributes: []*pluginv1.Attribute{{Name: "a"}}}, wantErr: "unknown type 0"},
		{name: "type out of range", p: &pluginv1.Schema{Attributes: []*pluginv1.Attribute{{Name: "a", Type: 42}}}, wantErr: "unknown type 42"},
		{name: "default not JSON", p: &pluginv1.Schema{Attributes: []*pluginv1.Attribute{{Name: "a", Type: pluginv1.Attribute_TYPE_STRING, DefaultJson: []byte("hello")}}}, wantErr: "default is not JSON"},
		{
			name:    "error in a nested block",
			p:       &pluginv1.Schema{Blocks: []*pluginv1.Block{{Name: "b", Schema: &pluginv1.Schema{Attributes: []*pluginv1.Attribute{{Name: "a"}}}}}},
			wantErr: `block "b"`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := SchemaFromProto(tt.p)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("SchemaFromProto = %+v, %v; want an error containing %q", s, err, tt.wantErr)
			}
		})
	}
}

func TestSchemaToProtoUnencodableDefault(t *testing.T) {
	s := Schema{Attributes: []Attribute{{Name: "a", Type: TypeNumber, Default: func() {}}}}
	if _, err := s.ToProto(); err == nil || !strings.Contains(err.Error(), `attribute "a"`) {
		t.Fatalf("err = %v, want an encode error naming the attribute", err)
	}
}

func TestDurationJSON(t *testing.T) {
	tests := []struct {
		in      string
		want    time.Duration
		wantErr string
	}{
		{in: `"5s"`, want: 5 * time.Second},
		{in: `"1h30m"`, want: 90 * time.Minute},
		{in: `"0s"`, want: 0},
		{in: `"-250ms"`, want: -250 * time.Millisecond},
		{in: `1500000000`, want: 1500 * time.Millisecond},
		{in: `0`, want: 0},
		{in: `"5 seconds"`, wantErr: `duration "5 seconds"`},
		{in: `"5"`, wantErr: `duration "5"`},
		{in: `""`, wantErr: `duration ""`},
		{in: `1.5`, wantErr: `want a string like "5s"`},
		{in: `true`, wantErr: `want a string like "5s"`},
		{in: `{}`, wantErr: `want a string like "5s"`},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			var d Duration
			err := json.Unmarshal([]byte(tt.in), &d)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Unmarshal(%s) = %v, %v; want an error containing %q", tt.in, d.D(), err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if d.D() != tt.want {
				t.Fatalf("Unmarshal(%s) = %v, want %v", tt.in, d.D(), tt.want)
			}
			// It marshals as a string and reads back the same.
			out, err := json.Marshal(d)
			if err != nil {
				t.Fatal(err)
			}
			if want := `"` + tt.want.String() + `"`; string(out) != want {
				t.Errorf("Marshal = %s, want %s", out, want)
			}
			var back Duration
			if err := json.Unmarshal(out, &back); err != nil || back != d {
				t.Errorf("read back %s: %v, %v", out, back.D(), err)
			}
		})
	}
	// Inside a config struct, the way plugins decode it.
	var cfg struct {
		Heartbeat Duration `json:"heartbeat"`
	}
	c := &Config{PluginName: "p", Raw: json.RawMessage(`{"heartbeat":"15s"}`)}
	if err := c.Decode(&cfg); err != nil || cfg.Heartbeat.D() != 15*time.Second {
		t.Errorf("Config.Decode: %v, %v", cfg.Heartbeat.D(), err)
	}
}

func TestConfigDecode(t *testing.T) {
	type cfgT struct {
		Greeting string `json:"greeting"`
	}
	tests := []struct {
		name    string
		raw     string
		want    string
		wantErr string
	}{
		{name: "value", raw: `{"greeting":"hi"}`, want: "hi"},
		{name: "empty raw is an empty object", raw: ``, want: "keep"},
		{name: "unknown field", raw: `{"colour":"red"}`, wantErr: `unknown field "colour"`},
		{name: "wrong type", raw: `{"greeting":["a"]}`, wantErr: "decode config"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := cfgT{Greeting: "keep"}
			c := &Config{PluginName: "hello", Raw: json.RawMessage(tt.raw)}
			err := c.Decode(&v)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), "plugin hello") {
					t.Fatalf("err = %v, want one containing %q and the plugin name", err, tt.wantErr)
				}
				return
			}
			if err != nil || v.Greeting != tt.want {
				t.Fatalf("Decode = %+v, %v; want %q", v, err, tt.want)
			}
		})
	}
}
