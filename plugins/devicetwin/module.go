// Package devicetwin is the edgehive module that keeps devices and their twins
// and syncs them with the cloud. For now it only declares its configuration and
// answers sync messages with a placeholder; see README.md.
package devicetwin

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
	Name    = "devicetwin"
	Group   = sdk.GroupTwin
	Version = "0.1.0"
)

// DeviceTwin is the devicetwin module.
type DeviceTwin struct {
	cfg    config
	host   sdk.Context
	logger hclog.Logger

	unhandled atomic.Uint64 // messages received that nothing acts on yet
}

var (
	_ sdk.Module        = (*DeviceTwin)(nil)
	_ sdk.HealthChecker = (*DeviceTwin)(nil)
)

// New returns an unconfigured module.
func New() *DeviceTwin { return &DeviceTwin{} }

// Info identifies the module.
func (d *DeviceTwin) Info() sdk.PluginInfo {
	return sdk.PluginInfo{
		Name:        Name,
		Group:       Group,
		Version:     Version,
		APIVersions: []string{sdk.APIVersion1},
		Description: "device twins in SQLite, synced with the cloud",
	}
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

// Start keeps the host context; devicetwin starts no work yet.
func (d *DeviceTwin) Start(_ context.Context, host sdk.Context) error {
	d.host = host
	d.logger = host.Logger()
	d.logger.Debug("started", "version", Version, "sync_retry_interval", d.cfg.SyncRetryInterval.D())
	return nil
}

// Handle answers sync messages with a placeholder and counts the rest.
func (d *DeviceTwin) Handle(ctx context.Context, msg *sdk.Message) error {
	if msg.Header.Sync {
		return pluginkit.Answer(ctx, d.host, Name, Version, msg)
	}
	n := d.unhandled.Add(1)
	if d.logger != nil {
		d.logger.Debug("message not handled yet", "msg_id", msg.Header.ID, "operation", msg.Router.Operation, "resource", msg.Router.Resource, "unhandled", n)
	}
	return nil
}

// Health reports the module healthy; it has nothing that can fail yet.
func (d *DeviceTwin) Health(context.Context) error { return nil }
