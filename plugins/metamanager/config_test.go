package metamanager

import (
	"path/filepath"
	"testing"

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
		`{"db_file":"edgehive.db"}`:                     "db_file",
		`{"meta_server_address":"0.0.0.0:10550"}`:       "meta_server_address",
		`{"meta_server_address":"10550"}`:               "meta_server_address",
		`{"remote_query_timeout":"0s"}`:                 "remote_query_timeout",
		`{"serve_secrets":"no"}`:                        "serve_secrets",
		`{"meta_server":{"enable":true}}`:               "meta_server",
		`{"meta_server_enable":false,"db_file":"x.db"}`: "db_file",
	})
	// A disabled MetaServer's address is not checked.
	sdktest.New(t, New(), sdktest.Options{ConfigJSON: `{"meta_server_enable":false,"meta_server_address":"0.0.0.0:1"}`})
}
