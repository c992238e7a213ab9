// Package eventbus is the edgehive module that bridges MQTT topics to the
// other modules and the cloud. For now it only declares its configuration and
// answers sync messages with a placeholder; see README.md.
package eventbus

import (
	"github.com/edgehive/edgehive/plugins/internal/pluginkit"
	"github.com/edgehive/edgehive/sdk"
)

// Name, Group and Version identify the module to the host.
const (
	Name    = "eventbus"
	Group   = sdk.GroupBus
	Version = "0.1.0"
)

// EventBus is the eventbus module.
type EventBus struct {
	pluginkit.Placeholder
	cfg config
}

var (
	_ sdk.Module        = (*EventBus)(nil)
	_ sdk.HealthChecker = (*EventBus)(nil)
)

// New returns an unconfigured module.
func New() *EventBus {
	return &EventBus{Placeholder: pluginkit.NewPlaceholder(Name, Group, Version, "MQTT bridge to an external or embedded broker")}
}

// ConfigSchema declares the config block.
func (b *EventBus) ConfigSchema() *sdk.Schema { return schema() }

// SetConfig decodes and validates the config block.
func (b *EventBus) SetConfig(cfg *sdk.Config) error {
	c := defaultConfig()
	if err := cfg.Decode(&c); err != nil {
		return err
	}
	if err := c.validate(); err != nil {
		return err
	}
	b.cfg = c
	return nil
}
