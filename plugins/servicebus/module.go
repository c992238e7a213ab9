// Package servicebus is the edgehive module that forwards HTTP requests from
// the cloud to applications on the node and returns their answers. For now it
// only declares its configuration and answers sync messages with a
// placeholder; see README.md.
package servicebus

import (
	"context"
	"sync/atomic"

	"github.com/hashicorp/go-hclog"

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
	cfg    config
	host   sdk.Context
	logger hclog.Logger

	unhandled atomic.Uint64 // messages received that nothing acts on yet
}

var (
	_ sdk.Module        = (*ServiceBus)(nil)
	_ sdk.HealthChecker = (*ServiceBus)(nil)
)

// New returns an unconfigured module.
func New() *ServiceBus { return &ServiceBus{} }

// Info identifies the module.
func (s *ServiceBus) Info() sdk.PluginInfo {
	return sdk.PluginInfo{
		Name:        Name,
		Group:       Group,
		Version:     Version,
		APIVersions: []string{sdk.APIVersion1},
		Description: "HTTP bridge from the cloud to applications on the node",
	}
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

// Start keeps the host context; servicebus starts no work yet.
func (s *ServiceBus) Start(_ context.Context, host sdk.Context) error {
	s.host = host
	s.logger = host.Logger()
	s.logger.Debug("started", "version", Version, "listen", s.cfg.Listen)
	return nil
}

// Handle answers sync messages with a placeholder and counts the rest.
func (s *ServiceBus) Handle(ctx context.Context, msg *sdk.Message) error {
	if msg.Header.Sync {
		return pluginkit.Answer(ctx, s.host, Name, Version, msg)
	}
	n := s.unhandled.Add(1)
	if s.logger != nil {
		s.logger.Debug("message not handled yet", "msg_id", msg.Header.ID, "operation", msg.Router.Operation, "resource", msg.Router.Resource, "unhandled", n)
	}
	return nil
}

// Health reports the module healthy; it has nothing that can fail yet.
func (s *ServiceBus) Health(context.Context) error { return nil }
