package eventbus

import (
	"testing"

	"github.com/edgehive/edgehive/plugins/internal/plugintest"
	"github.com/edgehive/edgehive/sdk/sdktest"
)

func TestConfig(t *testing.T) {
	tests := []struct {
		name, config string
	}{
		{"internal", `{}`},
		{"external, listen not checked", `{"mode":"external","broker_url":"ssl://broker:8883","listen":"0.0.0.0:1883"}`},
		{"internal, broker_url not checked", `{"broker_url":"nonsense"}`},
		{"credentials and tls", `{"username":"u","password":"p","tls_cert_file":"/c.crt","tls_key_file":"/c.key","qos":2}`},
		{"db_file", `{"db_file":"/var/lib/edgehive/eventbus.db"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := New()
			cfg, err := sdktest.BuildConfig(m, sdktest.Options{ConfigJSON: tt.config, DataDir: t.TempDir()})
			if err != nil {
				t.Fatal(err)
			}
			if err := m.SetConfig(cfg); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestBadConfig(t *testing.T) {
	plugintest.RejectsBadConfig(t, newModule, map[string]string{
		`{"mode":"embedded"}`:                         "mode",
		`{"listen":"0.0.0.0:1883"}`:                   "listen",
		`{"mode":"external","broker_url":"http://b"}`: "broker_url",
		`{"mode":"external","broker_url":"tcp://"}`:   "broker_url",
		`{"qos":3}`:                   "qos",
		`{"qos":-1}`:                  "qos",
		`{"password":"p"}`:            "password",
		`{"tls_cert_file":"/c.crt"}`:  "tls_cert_file",
		`{"tls_ca_file":"ca.crt"}`:    "tls_ca_file",
		`{"max_payload_bytes":0}`:     "max_payload_bytes",
		`{"session_queue_size":0}`:    "session_queue_size",
		`{"retain":"true"}`:           "retain",
		`{"topics":["$hw/events/#"]}`: "topics",
		`{"db_file":"eventbus.db"}`:   "db_file",
	})
}
