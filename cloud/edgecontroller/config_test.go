package edgecontroller

import (
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2/gohcl"
	"github.com/hashicorp/hcl/v2/hclparse"
)

func decodeHCL(t *testing.T, src string) (Config, error) {
	t.Helper()
	f, diags := hclparse.NewParser().ParseHCL([]byte(src), "test.hcl")
	if diags.HasErrors() {
		t.Fatalf("parse: %v", diags)
	}
	cfg := DefaultConfig()
	if diags := gohcl.DecodeBody(f.Body, nil, &cfg); diags.HasErrors() {
		return cfg, diags
	}
	return cfg, cfg.Validate()
}

func TestSampleConfigIsTheDefaults(t *testing.T) {
	src, err := os.ReadFile("sample.hcl")
	if err != nil {
		t.Fatal(err)
	}
	got, err := decodeHCL(t, string(src))
	if err != nil {
		t.Fatalf("sample.hcl: %v", err)
	}
	if want := DefaultConfig(); !reflect.DeepEqual(got, want) {
		t.Fatalf("sample.hcl decodes to %+v, defaults are %+v", got, want)
	}
}

func TestConfig(t *testing.T) {
	cases := []struct {
		name    string
		src     string
		wantErr string // substring; "" means valid
		check   func(t *testing.T, c Config)
	}{
		{name: "empty keeps the defaults", src: ``, check: func(t *testing.T, c Config) {
			if c.DownstreamWorkers != DefaultDownstreamWorkers || !*c.SyncServices || c.EdgeNodeLabel != DefaultEdgeNodeLabel {
				t.Fatalf("%+v", c)
			}
		}},
		{name: "values are read", src: "upstream_workers = 2\nsync_services = false\nsend_timeout = \"3s\"", check: func(t *testing.T, c Config) {
			if c.UpstreamWorkers != 2 || *c.SyncServices || c.SendTimeout != "3s" {
				t.Fatalf("%+v", c)
			}
		}},
		{name: "unknown key", src: `workerz = 3`, wantErr: "Unsupported argument"},
		{name: "wrong type", src: `upstream_workers = "many"`, wantErr: "number is required"},
		{name: "bad duration", src: `send_timeout = "soon"`, wantErr: "send_timeout"},
		{name: "negative duration", src: `api_timeout = "-1s"`, wantErr: "api_timeout"},
		{name: "too many workers", src: `downstream_workers = 1000`, wantErr: "downstream_workers"},
		{name: "negative workers", src: `upstream_workers = -1`, wantErr: "upstream_workers"},
		{name: "queue below workers", src: "upstream_workers = 8\nupstream_queue = 4", wantErr: "upstream_queue"},
		{name: "negative retries", src: `max_retries = -2`, wantErr: "max_retries"},
		{name: "negative event rate", src: `event_qps = -1`, wantErr: "event_qps"},
		{name: "bad label", src: `edge_node_label = "not a label!"`, wantErr: "edge_node_label"},
		{name: "all errors at once", src: "max_retries = -2\nevent_burst = -1", wantErr: "event_burst"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := decodeHCL(t, tc.src)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				if tc.check != nil {
					tc.check(t, c)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error %v, want one mentioning %q", err, tc.wantErr)
			}
		})
	}
}

func TestZeroConfigIsValidAndNewRefusesBadConfig(t *testing.T) {
	if err := (Config{}).Validate(); err != nil {
		t.Fatalf("zero config: %v", err)
	}
	if _, err := New(fakeClient(), nil, nil, Config{}); err == nil {
		t.Fatal("New without a sender succeeded")
	}
	if _, err := New(fakeClient(), fakeSender(), nil, Config{SendTimeout: "x"}); err == nil {
		t.Fatal("New with a bad config succeeded")
	}
}
