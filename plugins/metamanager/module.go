// Package metamanager is the edgehive module that stores the node's metadata
// in SQLite and answers edged's queries, online and offline. For now it only
// declares its configuration and answers sync messages with a placeholder;
// see README.md.
package metamanager

import (
	"fmt"
	"path/filepath"

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
	pluginkit.Placeholder
	cfg config
}

var (
	_ sdk.Module        = (*MetaManager)(nil)
	_ sdk.HealthChecker = (*MetaManager)(nil)
)

// New returns an unconfigured module.
func New() *MetaManager {
	return &MetaManager{Placeholder: pluginkit.NewPlaceholder(Name, Group, Version, "SQLite metadata store and local MetaServer")}
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
