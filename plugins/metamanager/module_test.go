package metamanager

import (
	"testing"

	"github.com/edgehive/edgehive/plugins/internal/plugintest"
	"github.com/edgehive/edgehive/sdk"
)

func newModule() sdk.Module { return New() }

func TestModule(t *testing.T) {
	plugintest.Run(t, plugintest.Case{New: newModule, Name: "metamanager", Group: "meta", Version: Version, Sample: "sample.hcl", Handles: true})
}

func TestDefaults(t *testing.T) {
	plugintest.DefaultsAgree(t, schema(), defaultConfig())
}
