package servicebus

import (
	"github.com/edgehive/edgehive/plugins/internal/pluginkit"
	"github.com/edgehive/edgehive/sdk"
)

// Defaults, from KubeEdge's servicebus defaults.
const (
	defaultListen       = "127.0.0.1:9060"
	defaultMaxBodyBytes = 5 << 20
	defaultTimeout      = "10s"
)

type config struct {
	Listen       string       `json:"listen"`
	Allow        []string     `json:"allow"`
	MaxBodyBytes int          `json:"max_body_bytes"`
	Timeout      sdk.Duration `json:"timeout"`
}

func defaultConfig() config {
	return config{
		Listen:       defaultListen,
		Allow:        []string{},
		MaxBodyBytes: defaultMaxBodyBytes,
		Timeout:      pluginkit.MustDuration(defaultTimeout),
	}
}

func schema() *sdk.Schema {
	return &sdk.Schema{Attributes: []sdk.Attribute{
		{Name: "listen", Type: sdk.TypeString, Default: defaultListen,
			Description: "address applications on the node call to reach the cloud"},
		{Name: "allow", Type: sdk.TypeListOfString, Default: []string{},
			Description: "host:port targets the cloud may call; empty allows none"},
		{Name: "max_body_bytes", Type: sdk.TypeNumber, Default: defaultMaxBodyBytes,
			Description: "largest request or response body forwarded"},
		{Name: "timeout", Type: sdk.TypeDuration, Default: defaultTimeout,
			Description: "time limit of one forwarded request"},
	}}
}

func (c *config) validate() error {
	var ck pluginkit.Checks
	ck.Loopback("listen", c.Listen)
	for _, a := range c.Allow {
		ck.HostPort("allow", a)
	}
	ck.Range("max_body_bytes", c.MaxBodyBytes, 1, sdk.MaxSendBytes)
	ck.PositiveDuration("timeout", c.Timeout)
	return ck.Err(Name)
}
