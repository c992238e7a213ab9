// Package metamanager is the edgehive module that stores the node's metadata
// in SQLite and answers edged's queries, online and offline. For now it only
// declares its configuration and answers sync messages with a placeholder;
// see README.md.
package metamanager

import (
	"context"
	"fmt"
	"path/filepath"
	"sync/atomic"

	"github.com/hashicorp/go-hclog"

	"github.com/edgehive/edgehive/plugins/internal/pluginkit"
	"github.com/edgehive/edgehive/sdk"
)

// Name, Group and Version identify the module to the host.
const (
	Name    = "metamanager"
	Group   = sdk.GroupMeta
	Version = "0.1.0"
)

// MetaManager is the metamanager module.
type MetaManager struct {
	cfg    config
	host   sdk.Context
	logger hclog.Logger

	unhandled atomic.Uint64 // messages received that nothing acts on yet
}

var (
	_ sdk.Module        = (*MetaManager)(nil)
	_ sdk.HealthChecker = (*MetaManager)(nil)
)

// New returns an unconfigured module.
func New() *MetaManager { return &MetaManager{} }

// Info identifies the module.
func (m *MetaManager) Info() sdk.PluginInfo {
	return sdk.PluginInfo{
		Name:        Name,
		Group:       Group,
		Version:     Version,
		APIVersions: []string{sdk.APIVersion1},
		Description: "SQLite metadata store and local MetaServer",
	}
}

// ConfigSchema declares the config block.
func (m *MetaManager) ConfigSchema() *sdk.Schema { return schema() }

// SetConfig decodes and validates the config block.
func (m *MetaManager) SetConfig(cfg *sdk.Config) error {
	c := defaultConfig()
	if err := cfg.Decode(&c); err != nil {
		return err
	}
	if err := c.validate(); err != nil {
		return err
	}
	if c.DBFile == "" {
		if cfg.DataDir == "" {
			return fmt.Errorf("%s config: db_file: empty, and the host gave no data_dir to put it in", Name)
		}
		c.DBFile = filepath.Join(cfg.DataDir, dbFileName)
	}
	m.cfg = c
	return nil
}

// Start keeps the host context; metamanager starts no work yet.
func (m *MetaManager) Start(_ context.Context, host sdk.Context) error {
	m.host = host
	m.logger = host.Logger()
	m.logger.Debug("started", "version", Version, "db_file", m.cfg.DBFile)
	return nil
}

// Handle answers sync messages with a placeholder and counts the rest.
func (m *MetaManager) Handle(ctx context.Context, msg *sdk.Message) error {
	if msg.Header.Sync {
		return pluginkit.Answer(ctx, m.host, Name, Version, msg)
	}
	n := m.unhandled.Add(1)
	if m.logger != nil {
		m.logger.Debug("message not handled yet", "msg_id", msg.Header.ID, "operation", msg.Router.Operation, "resource", msg.Router.Resource, "unhandled", n)
	}
	return nil
}

// Health reports the module healthy; it has nothing that can fail yet.
func (m *MetaManager) Health(context.Context) error { return nil }
