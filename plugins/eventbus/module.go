// Package eventbus is the edgehive module that bridges MQTT topics to the
// other modules and the cloud. For now it only declares its configuration and
// answers sync messages with a placeholder; see README.md.
package eventbus

import (
	"context"
	"sync/atomic"

	"github.com/hashicorp/go-hclog"

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
	cfg    config
	host   sdk.Context
	logger hclog.Logger

	unhandled atomic.Uint64 // messages received that nothing acts on yet
}

var (
	_ sdk.Module        = (*EventBus)(nil)
	_ sdk.HealthChecker = (*EventBus)(nil)
)

// New returns an unconfigured module.
func New() *EventBus { return &EventBus{} }

// Info identifies the module.
func (b *EventBus) Info() sdk.PluginInfo {
	return sdk.PluginInfo{
		Name:        Name,
		Group:       Group,
		Version:     Version,
		APIVersions: []string{sdk.APIVersion1},
		Description: "MQTT bridge to an external or embedded broker",
	}
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

// Start keeps the host context; eventbus starts no work yet.
func (b *EventBus) Start(_ context.Context, host sdk.Context) error {
	b.host = host
	b.logger = host.Logger()
	b.logger.Debug("started", "version", Version, "mode", b.cfg.Mode)
	return nil
}

// Handle answers sync messages with a placeholder and counts the rest.
func (b *EventBus) Handle(ctx context.Context, msg *sdk.Message) error {
	if msg.Header.Sync {
		return pluginkit.Answer(ctx, b.host, Name, Version, msg)
	}
	n := b.unhandled.Add(1)
	if b.logger != nil {
		b.logger.Debug("message not handled yet", "msg_id", msg.Header.ID, "operation", msg.Router.Operation, "resource", msg.Router.Resource, "unhandled", n)
	}
	return nil
}

// Health reports the module healthy; it has nothing that can fail yet.
func (b *EventBus) Health(context.Context) error { return nil }
