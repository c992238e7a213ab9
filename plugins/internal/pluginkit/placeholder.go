package pluginkit

import (
	"context"
	"sync/atomic"

	"github.com/hashicorp/go-hclog"

	"github.com/edgehive/edgehive/sdk"
)

// Placeholder is the part a built-in module shares while its real message
// handling is not built: identity, start, the placeholder answer to sync
// messages, a count of the rest, and health. A module embeds it and adds its
// own ConfigSchema and SetConfig.
type Placeholder struct {
	info   sdk.PluginInfo
	host   sdk.Context
	logger hclog.Logger

	unhandled atomic.Uint64 // messages received that nothing acts on yet
}

// NewPlaceholder identifies a module speaking plugin API v1.
func NewPlaceholder(name, group, version, description string) Placeholder {
	return Placeholder{info: sdk.PluginInfo{
		Name: name, Group: group, Version: version,
		APIVersions: []string{sdk.APIVersion1}, Description: description,
	}}
}

// Info identifies the module.
func (p *Placeholder) Info() sdk.PluginInfo { return p.info }

// Start keeps the host context; the module starts no work yet.
func (p *Placeholder) Start(_ context.Context, host sdk.Context) error {
	p.host = host
	p.logger = host.Logger()
	p.logger.Debug("started", "version", p.info.Version)
	return nil
}

// Handle answers sync messages with a placeholder and counts the rest.
func (p *Placeholder) Handle(ctx context.Context, msg *sdk.Message) error {
	if msg.Header.Sync {
		return Answer(ctx, p.host, p.info.Name, p.info.Version, msg)
	}
	n := p.unhandled.Add(1)
	if p.logger != nil {
		p.logger.Debug("message not handled yet", "msg_id", msg.Header.ID, "operation", msg.Router.Operation, "resource", msg.Router.Resource, "unhandled", n)
	}
	return nil
}

// Unhandled is the number of messages received that nothing acted on.
func (p *Placeholder) Unhandled() uint64 { return p.unhandled.Load() }

// Health reports the module healthy; it has nothing that can fail yet.
func (p *Placeholder) Health(context.Context) error { return nil }
