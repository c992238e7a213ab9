package config

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgehive/edgehive/sdk"
)

func edgedSchema() *sdk.Schema {
	return &sdk.Schema{
		Attributes: []sdk.Attribute{
			{Name: "runtime_endpoint", Type: sdk.TypeString, Default: "unix:///run/containerd/containerd.sock"},
			{Name: "sandbox_image", Type: sdk.TypeString, Required: true},
			{Name: "max_pods", Type: sdk.TypeNumber, Default: 110},
			{Name: "ratio", Type: sdk.TypeNumber},
			{Name: "debug", Type: sdk.TypeBool, Default: false},
			{Name: "sync_period", Type: sdk.TypeDuration, Default: "10s"},
			{Name: "labels", Type: sdk.TypeMapOfString},
			{Name: "dns", Type: sdk.TypeListOfString},
			{Name: "ports", Type: sdk.TypeListOfNumber, Default: []int{80, 443}},
		},
		Blocks: []sdk.Block{
			{Name: "eviction", Schema: sdk.Schema{Attributes: []sdk.Attribute{
				{Name: "memory", Type: sdk.TypeString, Default: "100Mi"},
				{Name: "grace", Type: sdk.TypeDuration},
			}}},
			{Name: "mount", Repeated: true, Schema: sdk.Schema{Attributes: []sdk.Attribute{
				{Name: "source", Type: sdk.TypeString, Required: true},
				{Name: "read_only", Type: sdk.TypeBool, Default: true},
			}}},
		},
	}
}

// decodeSrc parses a single plugin "edged" block whose body is src and
// decodes its config against schema.
func decodeSrc(t *testing.T, src string, schema *sdk.Schema) (string, []string) {
	t.Helper()
	cfg, diags := Parse("p.hcl", []byte("plugin \"edged\" {\n"+src+"\n}\n"),
		WithDefaultPluginDir("/p"), WithHostname(testHostname))
	if diags.HasErrors() {
		t.Fatalf("parse: %v", diags)
	}
	js, diags := DecodePluginConfig(cfg.Plugins[0], schema)
	var lines []string
	for _, d := range diags {
		lines = append(lines, FormatDiagnostic(d))
	}
	if diags.HasErrors() && js != nil {
		t.Errorf("JSON returned despite errors: %s", js)
	}
	return string(js), lines
}

func TestDecodePluginConfig(t *testing.T) {
	cases := []struct {
		name   string
		src    string
		schema *sdk.Schema
		want   string   // JSON
		diags  []string // formatted diagnostics
	}{
		{
			name: "defaults applied, optional absent omitted",
			src:  `config { sandbox_image = "pause:3.10" }`,
			want: `{"debug":false,"max_pods":110,"mount":[],"ports":[80,443],"runtime_endpoint":"unix:///run/containerd/containerd.sock","sandbox_image":"pause:3.10","sync_period":"10s"}`,
		},
		{
			name: "all types, nested and repeated blocks",
			src: `config {
  sandbox_image = "pause"
  max_pods      = 20
  ratio         = 0.25
  debug         = true
  sync_period   = "1m30s"
  labels        = { zone = "a", "node.kubernetes.io/role" = "edge" }
  dns           = ["1.1.1.1", "8.8.8.8"]
  ports         = []
  eviction {
    grace = "30s"
  }
  mount {
    source = "/a"
  }
  mount {
    source    = "/b"
    read_only = false
  }
}`,
			want: `{"debug":true,"dns":["1.1.1.1","8.8.8.8"],"eviction":{"grace":"30s","memory":"100Mi"},"labels":{"node.kubernetes.io/role":"edge","zone":"a"},"max_pods":20,"mount":[{"read_only":true,"source":"/a"},{"read_only":false,"source":"/b"}],"ports":[],"ratio":0.25,"runtime_endpoint":"unix:///run/containerd/containerd.sock","sandbox_image":"pause","sync_period":"1m30s"}`,
		},
		{
			name:  "required missing without config block",
			src:   ``,
			diags: []string{`p.hcl:1:1: error: Missing required argument: The argument "sandbox_image" is required, but no definition was found.`},
		},
		{
			name: "required missing in nested repeated block, bad duration in nested block",
			src: `config {
  sandbox_image = "pause"
  eviction { grace = "soon" }
  mount { read_only = true }
}`,
			diags: []string{
				`p.hcl:4:22: error: Invalid duration: Inappropriate value for attribute "grace": time: invalid duration "soon"; use a number with a unit, such as "200ms", "5s" or "5m".`,
				`p.hcl:5:11: error: Missing required argument: The argument "source" is required, but no definition was found.`,
			},
		},
		{
			name: "wrong types and duplicate single block",
			src: `config {
  sandbox_image = "pause"
  labels = ["a"]
  ports  = [1, "x"]
  eviction {}
  eviction {}
}`,
			diags: []string{
				`p.hcl:4:12: error: Incorrect attribute value type: Inappropriate value for attribute "labels": map of string required.`,
				`p.hcl:5:12: error: Incorrect attribute value type: Inappropriate value for attribute "ports": a number is required.`,
				`p.hcl:7:3: error: Duplicate eviction block: Only one block of type "eviction" is allowed. Previous definition was at p.hcl:6,3-11.`,
			},
		},
		{
			name:   "nil schema accepts an empty block",
			src:    `config {}`,
			schema: nil,
			want:   `{}`,
		},
		{
			name:   "nil schema rejects anything",
			src:    `config { x = 1 }`,
			schema: nil,
			diags:  []string{`p.hcl:2:10: error: Unsupported argument: An argument named "x" is not expected here.`},
		},
		{
			name: "required block",
			src:  `config {}`,
			schema: &sdk.Schema{Blocks: []sdk.Block{
				{Name: "tls", Required: true},
				{Name: "peer", Required: true, Repeated: true},
			}},
			diags: []string{
				`p.hcl:2:8: error: Insufficient peer blocks: At least 1 "peer" blocks are required.`,
				`p.hcl:2:8: error: Missing tls block: A block of type "tls" is required here.`,
			},
		},
		{
			name: "bad schema",
			src:  `config {}`,
			schema: &sdk.Schema{Attributes: []sdk.Attribute{
				{Name: "d", Type: sdk.TypeDuration, Default: "forever"},
			}},
			diags: []string{`p.hcl:1:1: error: Invalid plugin config schema: Plugin "edged" declared a config schema the host cannot use: attribute "d": default: time: invalid duration "forever".`},
		},
		{
			name: "duplicate schema names",
			src:  `config {}`,
			schema: &sdk.Schema{
				Attributes: []sdk.Attribute{{Name: "a", Type: sdk.TypeString}},
				Blocks:     []sdk.Block{{Name: "a"}},
			},
			diags: []string{`p.hcl:1:1: error: Invalid plugin config schema: Plugin "edged" declared a config schema the host cannot use: "a" declared twice.`},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			schema := tc.schema
			if schema == nil && !strings.HasPrefix(tc.name, "nil schema") {
				schema = edgedSchema()
			}
			js, diags := decodeSrc(t, tc.src, schema)
			if strings.Join(diags, "\n") != strings.Join(tc.diags, "\n") {
				t.Errorf("diagnostics:\n%s\nwant:\n%s", strings.Join(diags, "\n"), strings.Join(tc.diags, "\n"))
			}
			if js != tc.want {
				t.Errorf("JSON:\n%s\nwant:\n%s", js, tc.want)
			}
		})
	}
}

// A schema that went through gRPC has json.RawMessage defaults; decoding
// must give the same result as with the original Go defaults.
func TestDecodePluginConfigProtoSchema(t *testing.T) {
	orig := edgedSchema()
	pb, err := orig.ToProto()
	if err != nil {
		t.Fatal(err)
	}
	back, err := sdk.SchemaFromProto(pb)
	if err != nil {
		t.Fatal(err)
	}
	src := `config { sandbox_image = "pause" }`
	want, _ := decodeSrc(t, src, orig)
	got, diags := decodeSrc(t, src, back)
	if len(diags) != 0 || got != want {
		t.Errorf("got %s %v, want %s", got, diags, want)
	}
	var v struct {
		SyncPeriod sdk.Duration `json:"sync_period"`
		MaxPods    int          `json:"max_pods"`
	}
	if err := json.Unmarshal([]byte(got), &v); err != nil || v.SyncPeriod.D().String() != "10s" || v.MaxPods != 110 {
		t.Errorf("unmarshal: %v %+v", err, v)
	}
}

func TestCheckPluginPaths(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, mode os.FileMode) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("#!/bin/sh\n"), mode); err != nil {
			t.Fatal(err)
		}
	}
	write("exe", 0o755)
	write("plain", 0o644)
	if err := os.Symlink("exe", filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("gone", filepath.Join(dir, "dangling")); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	src := `
plugin "exe" {}
plugin "link" {}
plugin "plain" {}
plugin "dangling" {}
plugin "sub" {}
plugin "other" { path = "missing" }
plugin "off" {
  path    = "missing"
  enabled = false
}`
	cfg, diags := Parse("c.hcl", []byte(src), WithBaseDir(dir), WithDefaultPluginDir(dir), WithHostname(testHostname))
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	var got []string
	for _, d := range CheckPluginPaths(cfg) {
		got = append(got, strings.ReplaceAll(FormatDiagnostic(d), dir, "DIR"))
	}
	want := []string{
		`c.hcl:4:1: error: Plugin binary is not executable: Plugin "plain": the default path DIR/plain has mode -rw-r--r--.`,
		`c.hcl:5:1: error: Plugin binary not found: Plugin "dangling": the default path DIR/dangling does not exist.`,
		`c.hcl:6:1: error: Plugin binary is not a regular file: Plugin "sub": the default path DIR/sub is a directory.`,
		`c.hcl:7:25: error: Plugin binary not found: Plugin "other": path DIR/missing does not exist.`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("got:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
