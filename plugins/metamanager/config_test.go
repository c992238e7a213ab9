package metamanager

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"

	hostconfig "github.com/edgehive/edgehive/host/config"
	"github.com/edgehive/edgehive/sdk"

	"github.com/edgehive/edgehive/plugins/internal/plugintest"
	"github.com/edgehive/edgehive/sdk/sdktest"
)

func TestDBFile(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name, config, want string
	}{
		{"default under data dir", `{}`, filepath.Join(dir, dbFileName)},
		{"explicit", `{"db_file":"/var/lib/meta.db"}`, "/var/lib/meta.db"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := New()
			sdktest.New(t, m, sdktest.Options{DataDir: dir, ConfigJSON: tt.config})
			if m.cfg.DBFile != tt.want {
				t.Fatalf("db_file = %q, want %q", m.cfg.DBFile, tt.want)
			}
		})
	}
}

func TestNoDataDir(t *testing.T) {
	m := New()
	cfg, err := sdktest.BuildConfig(m, sdktest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.SetConfig(cfg); err == nil {
		t.Fatal("SetConfig accepted an empty db_file without a data dir")
	}
}

func TestBadConfig(t *testing.T) {
	plugintest.RejectsBadConfig(t, newModule, map[string]string{
		`{"db_file":"edgehive.db"}`:                                    "db_file",
		`{"metaserver":{"enabled":true,"listen":"0.0.0.0:10550"}}`:     "metaserver.listen",
		`{"metaserver":{"enabled":true,"listen":"192.168.1.5:10550"}}`: "loopback",
		`{"metaserver":{"enabled":true,"listen":"10550"}}`:             "metaserver.listen",
		`{"metaserver":{"enabled":"yes"}}`:                             "metaserver.enabled",
		`{"metaserver":{"enable":true}}`:                               "metaserver.enable: unknown key",
		`{"metaserver":{"secrets":1}}`:                                 "metaserver.secrets",
		`{"meta_server_enable":true}`:                                  "meta_server_enable: unknown key",
		`{"remote_query_timeout":"0s"}`:                                "remote_query_timeout",
		`{"metaserver":{"enabled":false},"db_file":"x.db"}`:            "db_file",
	})
	// A disabled MetaServer's address is not checked.
	sdktest.New(t, New(), sdktest.Options{ConfigJSON: `{"metaserver":{"enabled":false,"listen":"0.0.0.0:1"}}`})
}

// An absent metaserver block, or one that sets a single key, leaves the
// other keys at their defaults.
func TestMetaServerBlockDefaults(t *testing.T) {
	tests := []struct {
		config string
		want   metaServerConfig
	}{
		{`{}`, metaServerConfig{Enabled: false, Listen: defaultMetaServerListen}},
		{`{"metaserver":{}}`, metaServerConfig{Enabled: false, Listen: defaultMetaServerListen}},
		{`{"metaserver":{"enabled":true,"listen":"127.0.0.1:0"}}`, metaServerConfig{Enabled: true, Listen: "127.0.0.1:0"}},
		{`{"metaserver":{"secrets":true}}`, metaServerConfig{Listen: defaultMetaServerListen, Secrets: true}},
	}
	for _, tt := range tests {
		t.Run(tt.config, func(t *testing.T) {
			m := New()
			cfg, err := sdktest.BuildConfig(m, sdktest.Options{ConfigJSON: tt.config, DataDir: t.TempDir()})
			if err != nil {
				t.Fatal(err)
			}
			if err := m.SetConfig(cfg); err != nil {
				t.Fatal(err)
			}
			if m.cfg.MetaServer != tt.want {
				t.Fatalf("metaserver = %+v, want %+v", m.cfg.MetaServer, tt.want)
			}
		})
	}
}

// The host decodes the metaserver block from HCL into what SetConfig takes:
// the block's defaults fill what it leaves out, an absent block keeps the
// module's defaults, and an unknown key in it is a diagnostic.
func TestMetaServerBlockThroughHostHCL(t *testing.T) {
	tests := []struct {
		name, body string
		want       metaServerConfig
		wantDiag   string
	}{
		{"absent", `db_file = "/tmp/x.db"`, metaServerConfig{Listen: defaultMetaServerListen}, ""},
		{"partial", "metaserver {\n  enabled = true\n}", metaServerConfig{Enabled: true, Listen: defaultMetaServerListen}, ""},
		{"full", "metaserver {\n  enabled = true\n  listen = \"127.0.0.1:10551\"\n  secrets = true\n}", metaServerConfig{Enabled: true, Listen: "127.0.0.1:10551", Secrets: true}, ""},
		{"unknown key", "metaserver {\n  enable = true\n}", metaServerConfig{}, "enable"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			file, diags := hclsyntax.ParseConfig([]byte(tt.body), "test.hcl", hcl.InitialPos)
			if diags.HasErrors() {
				t.Fatal(diags)
			}
			raw, diags := hostconfig.DecodePluginConfig(&hostconfig.PluginConfig{Name: Name, ConfigBody: file.Body}, schema())
			if tt.wantDiag != "" {
				if !diags.HasErrors() || !strings.Contains(diags.Error(), tt.wantDiag) {
					t.Fatalf("diagnostics %v, want one about %q", diags, tt.wantDiag)
				}
				return
			}
			if diags.HasErrors() {
				t.Fatal(diags)
			}
			m := New()
			if err := m.SetConfig(&sdk.Config{Raw: raw, DataDir: t.TempDir()}); err != nil {
				t.Fatalf("SetConfig(%s): %v", raw, err)
			}
			if m.cfg.MetaServer != tt.want {
				t.Fatalf("metaserver = %+v from %s, want %+v", m.cfg.MetaServer, raw, tt.want)
			}
		})
	}
}
