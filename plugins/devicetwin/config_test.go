package devicetwin

import (
	"path/filepath"
	"testing"

	"github.com/edgehive/edgehive/plugins/internal/plugintest"
	"github.com/edgehive/edgehive/sdk/sdktest"
)

func TestDBFile(t *testing.T) {
	dir := t.TempDir()
	m := New()
	sdktest.New(t, m, sdktest.Options{DataDir: dir})
	if want := filepath.Join(dir, dbFileName); m.cfg.DBFile != want {
		t.Fatalf("db_file = %q, want %q", m.cfg.DBFile, want)
	}
}

func TestBadConfig(t *testing.T) {
	plugintest.RejectsBadConfig(t, newModule, map[string]string{
		`{"db_file":"twin.db"}`:               "db_file",
		`{"sync_retry_interval":"0s"}`:        "sync_retry_interval",
		`{"sync_retry_interval":"sometimes"}`: "sync_retry_interval",
		`{"mqtt":{}}`:                         "mqtt",
	})
}
