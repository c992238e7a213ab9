// Package devicetwin is the edgehive module that keeps devices and their twins
// and syncs them with the cloud. For now it only declares its configuration and
// answers sync messages with a placeholder; see README.md.
package devicetwin

import (
	"fmt"
	"path/filepath"

	"github.com/edgehive/edgehive/plugins/internal/pluginkit"
	"github.com/edgehive/edgehive/sdk"
)

// Name, Group and Version identify the module to the host.
const (
	Name    = "devicetwin"
	Group   = sdk.GroupTwin
	Version = "0.1.0"
)

// DeviceTwin is the devicetwin module.
type DeviceTwin struct {
	pluginkit.Placeholder
	cfg config
}

var (
	_ sdk.Module        = (*DeviceTwin)(nil)
	_ sdk.HealthChecker = (*DeviceTwin)(nil)
)

// New returns an unconfigured module.
func New() *DeviceTwin {
	return &DeviceTwin{Placeholder: pluginkit.NewPlaceholder(Name, Group, Version, "device twins in SQLite, synced with the cloud")}
}

// ConfigSchema declares the config block.
func (d *DeviceTwin) ConfigSchema() *sdk.Schema { return schema() }

// SetConfig decodes and validates the config block.
func (d *DeviceTwin) SetConfig(cfg *sdk.Config) error {
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
	d.cfg = c
	return nil
}
