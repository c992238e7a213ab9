package devicetwin

import (
	"github.com/edgehive/edgehive/plugins/internal/pluginkit"
	"github.com/edgehive/edgehive/sdk"
)

// Defaults.
const (
	defaultSyncRetryInterval = "10s"
	// dbFileName is the database under the plugin's data dir when db_file is empty.
	dbFileName = "devicetwin.db"
)

type config struct {
	DBFile            string       `json:"db_file"`
	SyncRetryInterval sdk.Duration `json:"sync_retry_interval"`
}

func defaultConfig() config {
	return config{SyncRetryInterval: pluginkit.MustDuration(defaultSyncRetryInterval)}
}

func schema() *sdk.Schema {
	return &sdk.Schema{Attributes: []sdk.Attribute{
		{Name: "db_file", Type: sdk.TypeString, Default: "",
			Description: "SQLite database; empty means <data_dir>/" + dbFileName},
		{Name: "sync_retry_interval", Type: sdk.TypeDuration, Default: defaultSyncRetryInterval,
			Description: "how often unsynced twin changes are sent to the cloud again"},
	}}
}

func (c *config) validate() error {
	var ck pluginkit.Checks
	ck.AbsPath("db_file", c.DBFile)
	ck.PositiveDuration("sync_retry_interval", c.SyncRetryInterval)
	return ck.Err(Name)
}

func (c *config) dbFile() *string { return &c.DBFile }
