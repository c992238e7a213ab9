// Package edged is the edgehive module that runs pods on the node over CRI,
// the kubelet-derived part of KubeEdge's edgecore. For now it only declares its
// configuration and answers sync messages with a placeholder; see README.md.
package edged

import (
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
	pluginkit.Placeholder
	cfg config
}

var (
	_ sdk.Module        = (*Edged)(nil)
	_ sdk.HealthChecker = (*Edged)(nil)
)

// New returns an unconfigured module.
func New() *Edged {
	return &Edged{Placeholder: pluginkit.NewPlaceholder(Name, Group, Version, "pod lifecycle over CRI (kubelet-derived)")}
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
