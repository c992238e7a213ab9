package metamanager

import (
	"github.com/edgehive/edgehive/plugins/internal/pluginkit"
	"github.com/edgehive/edgehive/sdk"
)

// Defaults, from KubeEdge's metamanager defaults (its MetaServer is off by
// default too, on the same address).
const (
	defaultMetaServerEnabled  = false
	defaultMetaServerListen   = "127.0.0.1:10550"
	defaultMetaServerSecrets  = false
	defaultRemoteQueryTimeout = "60s"
	// dbFileName is the database under the plugin's data dir when db_file is empty.
	dbFileName = "edgehive.db"
)

type config struct {
	DBFile             string           `json:"db_file"`
	MetaServer         metaServerConfig `json:"metaserver"`
	RemoteQueryTimeout sdk.Duration     `json:"remote_query_timeout"`
}

// metaServerConfig is the metaserver { ... } block.
type metaServerConfig struct {
	Enabled bool   `json:"enabled"`
	Listen  string `json:"listen"`
	Secrets bool   `json:"secrets"`
}

func defaultConfig() config {
	return config{
		MetaServer: metaServerConfig{
			Enabled: defaultMetaServerEnabled,
			Listen:  defaultMetaServerListen,
			Secrets: defaultMetaServerSecrets,
		},
		RemoteQueryTimeout: pluginkit.MustDuration(defaultRemoteQueryTimeout),
	}
}

func schema() *sdk.Schema {
	return &sdk.Schema{
		Attributes: []sdk.Attribute{
			{Name: "db_file", Type: sdk.TypeString, Default: "",
				Description: "SQLite database; empty means <data_dir>/" + dbFileName},
			{Name: "remote_query_timeout", Type: sdk.TypeDuration, Default: defaultRemoteQueryTimeout,
				Description: "how long a query forwarded to the cloud may take"},
		},
		Blocks: []sdk.Block{{
			Name:        "metaserver",
			Description: "the local read-only Kubernetes API (get, list, watch) for applications on the node",
			Schema: sdk.Schema{Attributes: []sdk.Attribute{
				{Name: "enabled", Type: sdk.TypeBool, Default: defaultMetaServerEnabled,
					Description: "serve the MetaServer"},
				{Name: "listen", Type: sdk.TypeString, Default: defaultMetaServerListen,
					Description: "address to listen on, host:port; loopback only"},
				{Name: "secrets", Type: sdk.TypeBool, Default: defaultMetaServerSecrets,
					Description: "serve secrets too"},
			}},
		}},
	}
}

func (c *config) validate() error {
	var ck pluginkit.Checks
	ck.AbsPath("db_file", c.DBFile)
	if c.MetaServer.Enabled {
		ck.Loopback("metaserver.listen", c.MetaServer.Listen)
	}
	ck.PositiveDuration("remote_query_timeout", c.RemoteQueryTimeout)
	return ck.Err(Name)
}

func (c *config) dbFile() *string { return &c.DBFile }
