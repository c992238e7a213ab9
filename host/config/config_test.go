package config

import (
	"errors"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/edgehive/edgehive/configs"
)

func TestDefaultConfig(t *testing.T) {
	cfg, diags := Parse(configs.DefaultFilename, configs.Default,
		WithBaseDir("/opt/edgehive"),
		WithDefaultPluginDir("bin/plugins"),
		WithHostname(func() (string, error) { return "Edge-Host\n", nil }))
	if len(diags) != 0 {
		t.Fatalf("diagnostics: %v", diags)
	}
	if cfg.NodeName != "edge-host" {
		t.Errorf("NodeName = %q, want the lower-cased hostname", cfg.NodeName)
	}
	if cfg.DataDir != DefaultDataDir || cfg.PluginDir != "/opt/edgehive/bin/plugins" {
		t.Errorf("DataDir %q PluginDir %q", cfg.DataDir, cfg.PluginDir)
	}
	if want := (LogConfig{Level: "info", Format: "text"}); cfg.Log != want {
		t.Errorf("Log = %+v", cfg.Log)
	}
	if want := (AdminConfig{Socket: DefaultAdminSocket}); cfg.Admin != want {
		t.Errorf("Admin = %+v", cfg.Admin)
	}
	if want := (RouterConfig{QueueCapacity: 8192, SendTimeout: 5 * time.Second, MaxMessageBytes: 4194304}); cfg.Router != want {
		t.Errorf("Router = %+v", cfg.Router)
	}
	var names []string
	for _, p := range cfg.Plugins {
		names = append(names, p.Name)
		if p.Path != "/opt/edgehive/bin/plugins/"+p.Name || p.PathRange != nil {
			t.Errorf("%s: Path %q PathRange %v", p.Name, p.Path, p.PathRange)
		}
		if !p.Enabled || p.ConfigBody != nil || p.GoGC != nil || p.SHA256 != "" {
			t.Errorf("%s: unexpected %+v", p.Name, p)
		}
		if want := (RestartPolicy{Attempts: 10, Interval: 5 * time.Minute, Delay: 200 * time.Millisecond, MaxDelay: 30 * time.Second}); p.Restart != want {
			t.Errorf("%s: Restart = %+v", p.Name, p.Restart)
		}
		if want := (HealthPolicy{Interval: 5 * time.Second, Timeout: 2 * time.Second, Failures: 3}); p.Health != want {
			t.Errorf("%s: Health = %+v", p.Name, p.Health)
		}
		if p.DeclRange.Filename != configs.DefaultFilename {
			t.Errorf("%s: DeclRange %v", p.Name, p.DeclRange)
		}
		// Every default plugin accepts an absent config block.
		if js, diags := DecodePluginConfig(p, nil); diags.HasErrors() || string(js) != "{}" {
			t.Errorf("%s: DecodePluginConfig = %s, %v", p.Name, js, diags)
		}
	}
	want := []string{"edged", "edgehub", "metamanager", "eventbus", "devicetwin", "servicebus"}
	if !reflect.DeepEqual(names, want) {
		t.Errorf("plugins %v, want %v", names, want)
	}
}

func TestDefaultPluginDirIsNextToExecutable(t *testing.T) {
	cfg, diags := Parse("x.hcl", []byte(`plugin "edged" {}`), WithHostname(testHostname))
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	if filepath.Base(cfg.PluginDir) != "plugins" || !filepath.IsAbs(cfg.PluginDir) {
		t.Errorf("PluginDir = %q", cfg.PluginDir)
	}
}

func TestLoadExample(t *testing.T) {
	cfg, diags := LoadFile("../../configs/examples/full.hcl", WithHostname(testHostname))
	if len(diags) != 0 {
		t.Fatalf("diagnostics: %v", diags)
	}
	base, _ := filepath.Abs("../../configs/examples")
	if cfg.NodeName != "edge-1" || cfg.PluginDir != filepath.Join(base, "bin/plugins") {
		t.Errorf("NodeName %q PluginDir %q", cfg.NodeName, cfg.PluginDir)
	}
	if len(cfg.Plugins) != 6 {
		t.Fatalf("%d plugins", len(cfg.Plugins))
	}
	p := cfg.Plugin("edged")
	if p.Path != filepath.Join(base, "bin/plugins/edged") || p.PathRange == nil || p.ConfigBody == nil {
		t.Errorf("edged: %+v", p)
	}
	if got, want := p.Environ(), []string{"TZ=UTC", "GOMEMLIMIT=64MiB", "GOGC=100", "GOMAXPROCS=1"}; !reflect.DeepEqual(got, want) {
		t.Errorf("Environ = %q, want %q", got, want)
	}
	if cfg.Plugin("servicebus").Enabled {
		t.Error("servicebus should be disabled")
	}
	if cfg.Plugin("nope") != nil {
		t.Error("Plugin(nope) != nil")
	}
}

func TestParseValues(t *testing.T) {
	cases := []struct {
		name  string
		src   string
		check func(t *testing.T, c *Config)
	}{
		{"admin loopback v4", `admin { address = "127.0.0.1:10550" }`, func(t *testing.T, c *Config) {
			if c.Admin != (AdminConfig{Address: "127.0.0.1:10550"}) {
				t.Errorf("%+v", c.Admin)
			}
		}},
		{"admin loopback v6", `admin { address = "[::1]:0" }`, func(t *testing.T, c *Config) {
			if c.Admin.Address != "[::1]:0" || c.Admin.Socket != "" {
				t.Errorf("%+v", c.Admin)
			}
		}},
		{"admin localhost", `admin { address = "localhost:80" }`, func(t *testing.T, c *Config) {
			if c.Admin.Address != "localhost:80" {
				t.Errorf("%+v", c.Admin)
			}
		}},
		{"empty admin block", `admin {}`, func(t *testing.T, c *Config) {
			if c.Admin.Socket != DefaultAdminSocket {
				t.Errorf("%+v", c.Admin)
			}
		}},
		{"relative paths resolve against base dir", `
data_dir = "state"
plugin_dir = "plugins"
admin { socket = "run/admin.sock" }
plugin "a" { path = "bin/a" }
plugin "b" {}
plugin "c" { path = "/abs/c" }`, func(t *testing.T, c *Config) {
			if c.DataDir != "/base/state" || c.PluginDir != "/base/plugins" || c.Admin.Socket != "/base/run/admin.sock" {
				t.Errorf("%q %q %q", c.DataDir, c.PluginDir, c.Admin.Socket)
			}
			got := []string{c.Plugins[0].Path, c.Plugins[1].Path, c.Plugins[2].Path}
			if want := []string{"/base/bin/a", "/base/plugins/b", "/abs/c"}; !reflect.DeepEqual(got, want) {
				t.Errorf("paths %q, want %q", got, want)
			}
		}},
		{"plugin options", `
router {
  queue_capacity = 16
  send_timeout = "250ms"
  max_message_bytes = 1024
}
plugin "x_1-y" {
  sha256 = "ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789"
  args = ["-a", "b"]
  env = { B = "2", A = "1" }
  enabled = false
  gomemlimit = "1024"
  gogc = -1
  gomaxprocs = 1
  restart { attempts = 0 }
  health { failures = 7 }
  config {}
}`, func(t *testing.T, c *Config) {
			if c.Router != (RouterConfig{QueueCapacity: 16, SendTimeout: 250 * time.Millisecond, MaxMessageBytes: 1024}) {
				t.Errorf("%+v", c.Router)
			}
			p := c.Plugins[0]
			if p.SHA256 != strings.ToLower(p.SHA256) || p.Enabled || p.ConfigBody == nil || *p.GoGC != -1 {
				t.Errorf("%+v", p)
			}
			if !reflect.DeepEqual(p.Args, []string{"-a", "b"}) || !reflect.DeepEqual(p.Env, map[string]string{"A": "1", "B": "2"}) {
				t.Errorf("args %q env %q", p.Args, p.Env)
			}
			if p.Restart.Attempts != 0 || p.Restart.Delay != DefaultRestartDelay || p.Health.Failures != 7 || p.Health.Interval != DefaultHealthInterval {
				t.Errorf("%+v %+v", p.Restart, p.Health)
			}
			if got, want := p.Environ(), []string{"A=1", "B=2", "GOMEMLIMIT=1024", "GOGC=-1", "GOMAXPROCS=1"}; !reflect.DeepEqual(got, want) {
				t.Errorf("Environ %q", got)
			}
		}},
		{"null means absent", `data_dir = null
plugin "a" { path = null }`, func(t *testing.T, c *Config) {
			if c.DataDir != DefaultDataDir || c.Plugins[0].PathRange != nil || c.Plugins[0].Path != "/base/plugins/a" {
				t.Errorf("%q %+v", c.DataDir, c.Plugins[0])
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg, diags := Parse("t.hcl", []byte(tc.src),
				WithBaseDir("/base"), WithDefaultPluginDir("plugins"), WithHostname(testHostname))
			if len(diags) != 0 {
				t.Fatalf("diagnostics: %v", diags)
			}
			tc.check(t, cfg)
		})
	}
}

func TestParseErrors(t *testing.T) {
	cases := []struct {
		name, src string
		hostname  func() (string, error)
		want      []string // summaries, in order
	}{
		{"hostname fails", ``, func() (string, error) { return "", errors.New("boom") }, []string{"Cannot determine node name"}},
		{"hostname invalid", ``, func() (string, error) { return "bad_host", nil }, []string{"Cannot determine node name"}},
		{"admin not loopback", `admin { address = "10.0.0.1:1" }`, nil, []string{"Invalid admin address"}},
		{"admin bad port", `admin { address = "127.0.0.1:http" }`, nil, []string{"Invalid admin address"}},
		{"admin no port", `admin { address = "127.0.0.1" }`, nil, []string{"Invalid admin address"}},
		{"admin socket too long", `admin { socket = "/` + strings.Repeat("s", 120) + `" }`, nil, []string{"Admin socket path too long"}},
		{"variables not allowed", `data_dir = var.x`, nil, []string{"Variables not allowed"}},
		{"plugin without label", `plugin {}`, nil, []string{"Missing name for plugin"}},
		{"duplicate restart", `plugin "a" {
restart {}
restart {}
}`, nil, []string{"Duplicate restart block"}},
		{"duplicate config", `plugin "a" {
config {}
config {}
}`, nil, []string{"Duplicate config block"}},
		{"label too long", `plugin "a` + strings.Repeat("b", 63) + `" {}`, nil, []string{"Invalid plugin name"}},
		{"env bad name", `plugin "a" { env = { "A=B" = "x" } }`, nil, []string{"Invalid environment variable name"}},
		{"gomemlimit with env", `plugin "a" {
env = { GOMEMLIMIT = "1" }
gomemlimit = "2GiB"
}`, nil, []string{"Conflicting GOMEMLIMIT"}},
		{"gomemlimit empty", `plugin "a" { gomemlimit = "MiB" }`, nil, []string{"Invalid gomemlimit"}},
		{"negative attempts and zero duration", `plugin "a" {
restart {
attempts = -1
interval = "0s"
}
}`, nil, []string{"Value out of range", "Invalid duration"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := tc.hostname
			if h == nil {
				h = testHostname
			}
			cfg, diags := Parse("t.hcl", []byte(tc.src), WithDefaultPluginDir("/p"), WithHostname(h))
			if cfg != nil {
				t.Error("config returned despite errors")
			}
			var got []string
			for _, d := range diags {
				got = append(got, d.Summary)
				if d.Subject == nil || d.Subject.Filename != "t.hcl" {
					t.Errorf("diagnostic without location: %v", d)
				}
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("summaries %q, want %q\n%v", got, tc.want, diags)
			}
		})
	}
}

func TestLoadFileMissing(t *testing.T) {
	_, diags := LoadFile(filepath.Join(t.TempDir(), "nope.hcl"))
	if !diags.HasErrors() || diags[0].Summary != "Failed to read config file" {
		t.Fatalf("%v", diags)
	}
}
