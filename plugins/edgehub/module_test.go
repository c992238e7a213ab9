package edgehub

import (
	"testing"

	"github.com/edgehive/edgehive/plugins/internal/plugintest"
	"github.com/edgehive/edgehive/sdk"
)

func newModule() sdk.Module { return New() }

func TestModule(t *testing.T) {
	plugintest.Run(t, plugintest.Case{New: newModule, Name: "edgehub", Group: "hub", Version: Version, Sample: "sample.hcl",
		// Nothing listens there: the module starts and keeps retrying.
		Config: `{"server":"127.0.0.1:1"}`, Handles: true})
}

func TestDefaults(t *testing.T) {
	// An absent block is not filled from the schema: the Go defaults stand.
	top := defaultConfig()
	top.Tunnel = tunnelConfig{}
	plugintest.DefaultsAgree(t, schema(), top)
	plugintest.DefaultsAgree(t, &schema().Blocks[0].Schema, defaultConfig().Tunnel)
}
