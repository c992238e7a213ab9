package pluginkit

import (
	"strings"
	"testing"
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
