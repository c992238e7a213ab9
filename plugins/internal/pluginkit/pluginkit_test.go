package pluginkit

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/edgehive/edgehive/sdk"
)

func TestChecks(t *testing.T) {
	tests := []struct {
		name  string
		check func(*Checks)
		want  string // "" means valid
	}{
		{"one of ok", func(c *Checks) { c.OneOf("k", "a", "a", "b") }, ""},
		{"one of bad", func(c *Checks) { c.OneOf("k", "c", "a", "b") }, `k: "c" is not one of a, b`},
		{"host port ok", func(c *Checks) { c.HostPort("k", "example.com:80") }, ""},
		{"host port no port", func(c *Checks) { c.HostPort("k", "example.com") }, "k:"},
		{"host port no host", func(c *Checks) { c.HostPort("k", ":80") }, "has no host"},
		{"host port big port", func(c *Checks) { c.HostPort("k", "h:70000") }, "1..65535"},
		{"loopback v4", func(c *Checks) { c.Loopback("k", "127.0.0.2:1") }, ""},
		{"loopback v6", func(c *Checks) { c.Loopback("k", "[::1]:1") }, ""},
		{"loopback name", func(c *Checks) { c.Loopback("k", "localhost:1") }, ""},
		{"loopback any", func(c *Checks) { c.Loopback("k", "0.0.0.0:1") }, "loopback"},
		{"url ok", func(c *Checks) { c.URL("k", "https://h:1", "https") }, ""},
		{"url scheme", func(c *Checks) { c.URL("k", "http://h", "https") }, "scheme"},
		{"url unix", func(c *Checks) { c.URL("k", "unix:///run/x.sock", "unix") }, ""},
		{"url unix relative", func(c *Checks) { c.URL("k", "unix://x.sock", "unix") }, "absolute"},
		{"range", func(c *Checks) { c.Range("k", 5, 0, 2) }, "outside 0..2"},
		{"abs empty ok", func(c *Checks) { c.AbsPath("k", "") }, ""},
		{"abs relative", func(c *Checks) { c.AbsPath("k", "a/b") }, "absolute"},
		{"all reported", func(c *Checks) { c.Positive("a", 0); c.NotEmpty("b", " ") }, "a: 0 must be greater than 0\nb: must not be empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var c Checks
			tt.check(&c)
			err := c.Err("mod")
			if tt.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.HasPrefix(err.Error(), "mod config: ") {
				t.Fatalf("got %v, want %q", err, tt.want)
			}
		})
	}
}

func TestMustDuration(t *testing.T) {
	if MustDuration("1m").D().Seconds() != 60 {
		t.Fatal("1m")
	}
	defer func() {
		if recover() == nil {
			t.Fatal("no panic on a bad constant")
		}
	}()
	MustDuration("soon")
}

func TestDecodeWithDBFile(t *testing.T) {
	type dbConfig struct {
		DBFile string `json:"db_file"`
		Size   int    `json:"size"`
	}
	validate := func(c *dbConfig) error {
		var ck Checks
		ck.AbsPath("db_file", c.DBFile)
		ck.Positive("size", c.Size)
		return ck.Err("demo")
	}
	dbFile := func(c *dbConfig) *string { return &c.DBFile }
	for _, tc := range []struct {
		name, raw, dataDir string
		want               dbConfig
		wantErr            string // "" means no error
	}{
		{"default name in the data dir", `{}`, "/var/lib/demo", dbConfig{DBFile: "/var/lib/demo/demo.db", Size: 1}, ""},
		{"db_file set wins", `{"db_file":"/data/x.db"}`, "/var/lib/demo", dbConfig{DBFile: "/data/x.db", Size: 1}, ""},
		{"no data dir and no db_file", `{}`, "", dbConfig{}, "demo config: db_file: empty"},
		{"validation runs first", `{"db_file":"rel.db"}`, "/var/lib/demo", dbConfig{}, "absolute"},
		{"unknown key", `{"nope":1}`, "/var/lib/demo", dbConfig{}, "unknown field"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := &sdk.Config{PluginName: "demo", DataDir: tc.dataDir, Raw: json.RawMessage(tc.raw)}
			got, err := DecodeWithDBFile(cfg, "demo", dbConfig{Size: 1}, validate, dbFile, "demo.db")
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}
