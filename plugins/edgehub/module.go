// Package edgehub is the edgehive module that keeps the node's link to the
// cloud: a websocket to KubeEdge's cloudhub, carrying beehive messages. For now
// it only declares its configuration and answers sync messages with a
// placeholder; see README.md.
package edgehub

import (
	"context"
	"sync/atomic"

	"github.com/hashicorp/go-hclog"

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
	cfg    config
	host   sdk.Context
	logger hclog.Logger

	unhandled atomic.Uint64 // messages received that nothing acts on yet
}

var (
	_ sdk.Module        = (*EdgeHub)(nil)
	_ sdk.HealthChecker = (*EdgeHub)(nil)
)

// New returns an unconfigured module.
func New() *EdgeHub { return &EdgeHub{} }

// Info identifies the module.
func (h *EdgeHub) Info() sdk.PluginInfo {
	return sdk.PluginInfo{
		Name:        Name,
		Group:       Group,
		Version:     Version,
		APIVersions: []string{sdk.APIVersion1},
		Description: "websocket link to cloudhub (KubeEdge wire format)",
	}
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

// Start keeps the host context; edgehub starts no work yet.
func (h *EdgeHub) Start(_ context.Context, host sdk.Context) error {
	h.host = host
	h.logger = host.Logger()
	h.logger.Debug("started", "version", Version, "server", h.cfg.Server)
	return nil
}

// Handle answers sync messages with a placeholder and counts the rest.
func (h *EdgeHub) Handle(ctx context.Context, msg *sdk.Message) error {
	if msg.Header.Sync {
		return pluginkit.Answer(ctx, h.host, Name, Version, msg)
	}
	n := h.unhandled.Add(1)
	if h.logger != nil {
		h.logger.Debug("message not handled yet", "msg_id", msg.Header.ID, "operation", msg.Router.Operation, "resource", msg.Router.Resource, "unhandled", n)
	}
	return nil
}

// Health reports the module healthy; it has nothing that can fail yet.
func (h *EdgeHub) Health(context.Context) error { return nil }
