// Package edged is the edgehive module that runs pods on the node over CRI,
// the kubelet-derived part of KubeEdge's edgecore. For now it only declares its
// configuration and answers sync messages with a placeholder; see README.md.
package edged

import (
	"context"
	"sync/atomic"

	"github.com/hashicorp/go-hclog"

	"github.com/edgehive/edgehive/plugins/internal/pluginkit"
	"github.com/edgehive/edgehive/sdk"
)

// Name, Group and Version identify the module to the host.
const (
	Name    = "edged"
	Group   = sdk.GroupEdged
	Version = "0.1.0"
)

// Edged is the edged module.
type Edged struct {
	cfg    config
	host   sdk.Context
	logger hclog.Logger

	unhandled atomic.Uint64 // messages received that nothing acts on yet
}

var (
	_ sdk.Module        = (*Edged)(nil)
	_ sdk.HealthChecker = (*Edged)(nil)
)

// New returns an unconfigured module.
func New() *Edged { return &Edged{} }

// Info identifies the module.
func (e *Edged) Info() sdk.PluginInfo {
	return sdk.PluginInfo{
		Name:        Name,
		Group:       Group,
		Version:     Version,
		APIVersions: []string{sdk.APIVersion1},
		Description: "pod lifecycle over CRI (kubelet-derived)",
	}
}

// ConfigSchema declares the config block.
func (e *Edged) ConfigSchema() *sdk.Schema { return schema() }

// SetConfig decodes and validates the config block.
func (e *Edged) SetConfig(cfg *sdk.Config) error {
	c := defaultConfig()
	if err := cfg.Decode(&c); err != nil {
		return err
	}
	if err := c.validate(); err != nil {
		return err
	}
	e.cfg = c
	return nil
}

// Start keeps the host context; edged starts no work yet.
func (e *Edged) Start(_ context.Context, host sdk.Context) error {
	e.host = host
	e.logger = host.Logger()
	e.logger.Debug("started", "version", Version, "runtime_endpoint", e.cfg.RuntimeEndpoint)
	return nil
}

// Handle answers sync messages with a placeholder and counts the rest.
func (e *Edged) Handle(ctx context.Context, msg *sdk.Message) error {
	if msg.Header.Sync {
		return pluginkit.Answer(ctx, e.host, Name, Version, msg)
	}
	n := e.unhandled.Add(1)
	if e.logger != nil {
		e.logger.Debug("message not handled yet", "msg_id", msg.Header.ID, "operation", msg.Router.Operation, "resource", msg.Router.Resource, "unhandled", n)
	}
	return nil
}

// Health reports the module healthy; it has nothing that can fail yet.
func (e *Edged) Health(context.Context) error { return nil }
