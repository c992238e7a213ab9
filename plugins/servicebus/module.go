// Package servicebus is the edgehive module that forwards HTTP requests from
// the cloud to applications on the node and returns their answers. For now it
// only declares its configuration and answers sync messages with a
// placeholder; see README.md.
package servicebus

import (
	"github.com/edgehive/edgehive/plugins/internal/pluginkit"
	"github.com/edgehive/edgehive/sdk"
)

// Name, Group and Version identify the module to the host.
const (
	Name    = "servicebus"
	Group   = sdk.GroupServiceBus
	Version = "0.1.0"
)

// ServiceBus is the servicebus module.
type ServiceBus struct {
	pluginkit.Placeholder
	cfg config
}

var (
	_ sdk.Module        = (*ServiceBus)(nil)
	_ sdk.HealthChecker = (*ServiceBus)(nil)
)

// New returns an unconfigured module.
func New() *ServiceBus {
	return &ServiceBus{Placeholder: pluginkit.NewPlaceholder(Name, Group, Version, "HTTP bridge from the cloud to applications on the node")}
}

// ConfigSchema declares the config block.
func (s *ServiceBus) ConfigSchema() *sdk.Schema { return schema() }

// SetConfig decodes and validates the config block.
func (s *ServiceBus) SetConfig(cfg *sdk.Config) error {
	c := defaultConfig()
	if err := cfg.Decode(&c); err != nil {
		return err
	}
	if err := c.validate(); err != nil {
		return err
	}
	s.cfg = c
	return nil
}
