package config

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"

	"github.com/edgehive/edgehive/sdk"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current output")

func testHostname() (string, error) { return "testhost", nil }

// testSchema is the schema the golden cases decode plugin config blocks with.
func testSchema() *sdk.Schema {
	return &sdk.Schema{
		Attributes: []sdk.Attribute{
			{Name: "server", Type: sdk.TypeString, Required: true},
			{Name: "port", Type: sdk.TypeNumber, Default: 10000},
			{Name: "tls", Type: sdk.TypeBool},
			{Name: "tags", Type: sdk.TypeListOfString},
			{Name: "heartbeat", Type: sdk.TypeDuration, Default: "15s"},
		},
		Blocks: []sdk.Block{
			{Name: "quic", Schema: sdk.Schema{Attributes: []sdk.Attribute{
				{Name: "streams", Type: sdk.TypeListOfNumber},
			}}},
		},
	}
}

func TestGoldenDiagnostics(t *testing.T) {
	cases := []struct {
		file       string
		decode     bool // decode each plugin's config block with testSchema
		checkPaths bool // run CheckPluginPaths
	}{
		{file: "syntax_missing_brace.hcl"},
		{file: "unknown_keys.hcl"},
		{file: "wrong_types.hcl"},
		{file: "plugin_config_wrong_type.hcl", decode: true},
		{file: "plugin_config_unknown_key.hcl", decode: true},
		{file: "plugin_config_required.hcl", decode: true},
		{file: "bad_duration.hcl"},
		{file: "bad_duration_config.hcl", decode: true},
		{file: "missing_binary.hcl", checkPaths: true},
		{file: "bad_sha256.hcl"},
		{file: "duplicate_label.hcl"},
		{file: "bad_values.hcl"},
		{file: "admin_both.hcl"},
	}
	lineRE := regexp.MustCompile(`^testdata/[a-z0-9_]+\.hcl:\d+:\d+: error: \S`)
	for _, tc := range cases {
		t.Run(strings.TrimSuffix(tc.file, ".hcl"), func(t *testing.T) {
			path := filepath.Join("testdata", tc.file)
			cfg, diags := LoadFile(path,
				WithBaseDir("testdata"),
				WithDefaultPluginDir("plugins"),
				WithHostname(testHostname))
			if cfg != nil {
				for _, p := range cfg.Plugins {
					if tc.decode {
						_, more := DecodePluginConfig(p, testSchema())
						diags = append(diags, more...)
					}
				}
				if tc.checkPaths {
					diags = append(diags, CheckPluginPaths(cfg)...)
				}
			}
			if !diags.HasErrors() {
				t.Fatalf("expected error diagnostics, got none")
			}
			var buf bytes.Buffer
			if err := FormatDiagnostics(&buf, diags); err != nil {
				t.Fatal(err)
			}
			for _, line := range strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n") {
				if !lineRE.MatchString(line) {
					t.Errorf("line lacks file:line:col: %q", line)
				}
			}
			golden := filepath.Join("testdata", strings.TrimSuffix(tc.file, ".hcl")+".golden")
			if *update {
				if err := os.WriteFile(golden, buf.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -update to create it)", err)
			}
			if got := buf.String(); got != string(want) {
				t.Errorf("diagnostics differ from %s\n--- got\n%s--- want\n%s", golden, got, want)
			}
		})
	}
}

func TestFormatDiagnostic(t *testing.T) {
	rng := &hcl.Range{Filename: "a.hcl", Start: hcl.Pos{Line: 3, Column: 7}}
	cases := []struct {
		d    *hcl.Diagnostic
		want string
	}{
		{&hcl.Diagnostic{Severity: hcl.DiagError, Summary: "S", Detail: "D", Subject: rng}, "a.hcl:3:7: error: S: D"},
		{&hcl.Diagnostic{Severity: hcl.DiagWarning, Summary: "S", Subject: rng}, "a.hcl:3:7: warning: S"},
		{&hcl.Diagnostic{Severity: hcl.DiagError, Summary: "S", Detail: "line one\n  line two"}, "error: S: line one line two"},
	}
	for _, tc := range cases {
		if got := FormatDiagnostic(tc.d); got != tc.want {
			t.Errorf("got %q, want %q", got, tc.want)
		}
	}
}
