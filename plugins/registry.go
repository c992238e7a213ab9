// Package plugins lists the built-in modules for the multi-call binary, which
// runs the one named by how it was called.
package plugins

import (
	"maps"
	"slices"

	"github.com/edgehive/edgehive/plugins/devicetwin"
	"github.com/edgehive/edgehive/plugins/edged"
	"github.com/edgehive/edgehive/plugins/edgehub"
	"github.com/edgehive/edgehive/plugins/eventbus"
	"github.com/edgehive/edgehive/plugins/metamanager"
	"github.com/edgehive/edgehive/plugins/servicebus"
	"github.com/edgehive/edgehive/sdk"
)

// Factory returns a new, unconfigured module.
type Factory func() sdk.Module

// Builtin returns the built-in modules by name, in a new map on every call.
func Builtin() map[string]Factory {
	return map[string]Factory{
		edged.Name:       func() sdk.Module { return edged.New() },
		edgehub.Name:     func() sdk.Module { return edgehub.New() },
		metamanager.Name: func() sdk.Module { return metamanager.New() },
		eventbus.Name:    func() sdk.Module { return eventbus.New() },
		devicetwin.Name:  func() sdk.Module { return devicetwin.New() },
		servicebus.Name:  func() sdk.Module { return servicebus.New() },
	}
}

// Names returns the names of the built-in modules, sorted.
func Names() []string {
	return slices.Sorted(maps.Keys(Builtin()))
}
