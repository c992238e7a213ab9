package metamanager

import (
	"github.com/edgehive/edgehive/plugins/internal/pluginkit"
	"github.com/edgehive/edgehive/sdk"
)

// Defaults, from KubeEdge's metamanager defaults.
const (
	defaultMetaServerEnable   = true
	defaultMetaServerAddress  = "127.0.0.1:10550"
	defaultServeSecrets       = false
	defaultRemoteQueryTimeout = "60s"
	// dbFileName is the database under the plugin's data dir when db_file is empty.
	dbFileName = "edgehive.db"
)

type config struct {
	DBFile             string       `json:"db_file"`
	MetaServerEnable   bool         `json:"meta_server_enable"`
	MetaServerAddress  string       `json:"meta_server_address"`
	ServeSecrets       bool         `json:"serve_secrets"`
	RemoteQueryTimeout sdk.Duration `json:"remote_query_timeout"`
}

func defaultConfig() config {
	return config{
		MetaServerEnable:   defaultMetaServerEnable,
		MetaServerAddress:  defaultMetaServerAddress,
		ServeSecrets:       defaultServeSecrets,
		RemoteQueryTimeout: pluginkit.MustDuration(defaultRemoteQueryTimeout),
	}
}

func schema() *sdk.Schema {
	return &sdk.Schema{Attributes: []sdk.Attribute{
		{Name: "db_file", Type: sdk.TypeString, Default: "",
			Description: "SQLite database; empty means <data_dir>/" + dbFileName},
		{Name: "meta_server_enable", Type: sdk.TypeBool, Default: defaultMetaServerEnable,
			Description: "serve the local read-mostly Kubernetes API"},
		{Name: "meta_server_address", Type: sdk.TypeString, Default: defaultMetaServerAddress,
			Description: "MetaServer address; loopback only"},
		{Name: "serve_secrets", Type: sdk.TypeBool, Default: defaultServeSecrets,
			Description: "let the MetaServer return secrets"},
		{Name: "remote_query_timeout", Type: sdk.TypeDuration, Default: defaultRemoteQueryTimeout,
			Description: "how long a query forwarded to the cloud may take"},
	}}
}

func (c *config) validate() error {
	var ck pluginkit.Checks
	ck.AbsPath("db_file", c.DBFile)
	if c.MetaServerEnable {
		ck.Loopback("meta_server_address", c.MetaServerAddress)
	}
	ck.PositiveDuration("remote_query_timeout", c.RemoteQueryTimeout)
	return ck.Err(Name)
}
