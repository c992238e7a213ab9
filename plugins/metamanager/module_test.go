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
	plugintest.DefaultsAgree(t, schema(), config{RemoteQueryTimeout: defaultConfig().RemoteQueryTimeout})
	// The block's own defaults, as the host fills them in a block given empty.
	plugintest.DefaultsAgree(t, &schema().Blocks[0].Schema, defaultConfig().MetaServer)
}
