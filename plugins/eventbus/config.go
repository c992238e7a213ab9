package eventbus

import (
	"github.com/edgehive/edgehive/plugins/internal/pluginkit"
	"github.com/edgehive/edgehive/sdk"
)

// Modes of the MQTT connection.
const (
	modeInternal = "internal" // an embedded broker on listen
	modeExternal = "external" // a broker at broker_url (mosquitto)
)

// Defaults, from KubeEdge's eventbus defaults.
const (
	defaultMode             = modeInternal
	defaultBrokerURL        = "tcp://127.0.0.1:1883"
	defaultListen           = "127.0.0.1:1883"
	defaultQoS              = 0
	defaultRetain           = false
	defaultMaxPayloadBytes  = 1 << 20
	defaultSessionQueueSize = 100
)

type config struct {
	Mode             string `json:"mode"`
	BrokerURL        string `json:"broker_url"`
	Listen           string `json:"listen"`
	QoS              int    `json:"qos"`
	Retain           bool   `json:"retain"`
	Username         string `json:"username"`
	Password         string `json:"password"`
	TLSCAFile        string `json:"tls_ca_file"`
	TLSCertFile      string `json:"tls_cert_file"`
	TLSKeyFile       string `json:"tls_key_file"`
	MaxPayloadBytes  int    `json:"max_payload_bytes"`
	SessionQueueSize int    `json:"session_queue_size"`
	DBFile           string `json:"db_file"`
}

func defaultConfig() config {
	return config{
		Mode:             defaultMode,
		BrokerURL:        defaultBrokerURL,
		Listen:           defaultListen,
		QoS:              defaultQoS,
		Retain:           defaultRetain,
		MaxPayloadBytes:  defaultMaxPayloadBytes,
		SessionQueueSize: defaultSessionQueueSize,
	}
}

func schema() *sdk.Schema {
	return &sdk.Schema{Attributes: []sdk.Attribute{
		{Name: "mode", Type: sdk.TypeString, Default: defaultMode,
			Description: "internal (embedded broker) or external (broker_url)"},
		{Name: "broker_url", Type: sdk.TypeString, Default: defaultBrokerURL,
			Description: "external broker URL (tcp://, ssl://, tls://, ws://, wss://)"},
		{Name: "listen", Type: sdk.TypeString, Default: defaultListen,
			Description: "embedded broker address in internal mode; loopback only"},
		{Name: "qos", Type: sdk.TypeNumber, Default: defaultQoS,
			Description: "MQTT QoS of published messages, 0..2"},
		{Name: "retain", Type: sdk.TypeBool, Default: defaultRetain,
			Description: "publish with the retain flag"},
		{Name: "username", Type: sdk.TypeString, Default: "",
			Description: "broker user name"},
		{Name: "password", Type: sdk.TypeString, Default: "",
			Description: "broker password"},
		{Name: "tls_ca_file", Type: sdk.TypeString, Default: "",
			Description: "CA that signs the broker's certificate"},
		{Name: "tls_cert_file", Type: sdk.TypeString, Default: "",
			Description: "client certificate for the broker"},
		{Name: "tls_key_file", Type: sdk.TypeString, Default: "",
			Description: "client private key for the broker"},
		{Name: "max_payload_bytes", Type: sdk.TypeNumber, Default: defaultMaxPayloadBytes,
			Description: "largest MQTT payload bridged"},
		{Name: "session_queue_size", Type: sdk.TypeNumber, Default: defaultSessionQueueSize,
			Description: "MQTT messages received and waiting to be handed to the other modules"},
		{Name: "db_file", Type: sdk.TypeString, Default: "",
			Description: "SQLite file keeping the topics the cloud subscribed; default <data_dir>/eventbus.db"},
	}}
}

func (c *config) validate() error {
	var ck pluginkit.Checks
	ck.OneOf("mode", c.Mode, modeInternal, modeExternal)
	switch c.Mode {
	case modeInternal:
		ck.Loopback("listen", c.Listen)
	case modeExternal:
		ck.URL("broker_url", c.BrokerURL, "tcp", "ssl", "tls", "mqtt", "mqtts", "ws", "wss")
	}
	ck.Range("qos", c.QoS, 0, 2)
	if c.Password != "" && c.Username == "" {
		ck.Fail("password", "set without username")
	}
	if (c.TLSCertFile == "") != (c.TLSKeyFile == "") {
		ck.Fail("tls_cert_file", "tls_cert_file and tls_key_file go together")
	}
	ck.AbsPath("tls_ca_file", c.TLSCAFile)
	ck.AbsPath("tls_cert_file", c.TLSCertFile)
	ck.AbsPath("tls_key_file", c.TLSKeyFile)
	ck.Range("max_payload_bytes", c.MaxPayloadBytes, 1, sdk.MaxSendBytes)
	ck.Positive("session_queue_size", c.SessionQueueSize)
	ck.AbsPath("db_file", c.DBFile)
	return ck.Err(Name)
}

func (c *config) dbFile() *string { return &c.DBFile }
