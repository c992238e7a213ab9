package eventbus

import (
	"testing"

	"github.com/edgehive/edgehive/plugins/internal/plugintest"
	"github.com/edgehive/edgehive/sdk"
)

func newModule() sdk.Module { return New() }

func TestModule(t *testing.T) {
	plugintest.Run(t, plugintest.Case{New: newModule, Name: "eventbus", Group: "bus", Version: Version, Sample: "sample.hcl", Config: `{"listen":"127.0.0.1:0"}`})
}

func TestDefaults(t *testing.T) {
	plugintest.DefaultsAgree(t, schema(), defaultConfig())
}
