package servicebus

import (
	"slices"
	"testing"

	"github.com/edgehive/edgehive/plugins/internal/plugintest"
	"github.com/edgehive/edgehive/sdk/sdktest"
)

func TestConfig(t *testing.T) {
	m := New()
	sdktest.New(t, m, sdktest.Options{ConfigJSON: `{"allow":["127.0.0.1:8080","[::1]:80"],"timeout":"2s"}`})
	if !slices.Equal(m.cfg.Allow, []string{"127.0.0.1:8080", "[::1]:80"}) || m.cfg.Timeout.D().Seconds() != 2 || m.cfg.Listen != defaultListen {
		t.Fatalf("config = %+v", m.cfg)
	}
}

func TestBadConfig(t *testing.T) {
	plugintest.RejectsBadConfig(t, newModule, map[string]string{
		`{"listen":":9060x"}`:                     "listen",
		`{"allow":["127.0.0.1"]}`:                 "allow",
		`{"allow":["127.0.0.1:8080","web:http"]}`: "allow",
		`{"allow":":80"}`:                         "allow",
		`{"max_body_bytes":0}`:                    "max_body_bytes",
		`{"timeout":"0s"}`:                        "timeout",
		`{"server":"x"}`:                          "server",
	})
}
