// Package edgehub is the edgehive module that keeps the node's link to the
// cloud: a websocket to KubeEdge's cloudhub, carrying beehive messages. For now
// it only declares its configuration and answers sync messages with a
// placeholder; see README.md.
package edgehub

import (
	"github.com/edgehive/edgehive/plugins/internal/pluginkit"
	"github.com/edgehive/edgehive/sdk"
)

// Name, Group and Version identify the module to the host.
const (
	Name    = "edgehub"
	Group   = sdk.GroupHub
	Version = "0.1.0"
)

// EdgeHub is the edgehub module.
type EdgeHub struct {
	pluginkit.Placeholder
	cfg config
}

var (
	_ sdk.Module        = (*EdgeHub)(nil)
	_ sdk.HealthChecker = (*EdgeHub)(nil)
)

// New returns an unconfigured module.
func New() *EdgeHub {
	return &EdgeHub{Placeholder: pluginkit.NewPlaceholder(Name, Group, Version, "websocket link to cloudhub (KubeEdge wire format)")}
}

// ConfigSchema declares the config block.
func (h *EdgeHub) ConfigSchema() *sdk.Schema { return schema() }

// SetConfig decodes and validates the config block.
func (h *EdgeHub) SetConfig(cfg *sdk.Config) error {
	c := defaultConfig()
	if err := cfg.Decode(&c); err != nil {
		return err
	}
	if err := c.validate(); err != nil {
		return err
	}
	h.cfg = c
	return nil
}
