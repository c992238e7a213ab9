package sdk

import (
	"context"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/google/uuid"
	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/grpc/experimental"

	"github.com/edgehive/edgehive/internal/grpcbuf"

	pluginv1 "github.com/edgehive/edgehive/sdk/proto/plugin/v1"
)

// Handshake is go-plugin's handshake between the edgehive host and its
// plugins. ProtocolVersion is go-plugin's; plugin API versions are negotiated
// separately through GetInfo and SetConfig.
var Handshake = plugin.HandshakeConfig{
	ProtocolVersion:  1,
	MagicCookieKey:   "EDGEHIVE_PLUGIN",
	MagicCookieValue: "b6c3f0a4-edgehive-module",
}

// PluginKey is the name under which the module is dispensed.
const PluginKey = "module"

// Environment variables the host sets for a plugin.
const (
	EnvPluginName = "EDGEHIVE_PLUGIN_NAME" // the name of the plugin block
	EnvLogLevel   = "EDGEHIVE_LOG_LEVEL"
)

// GRPCPlugin adapts a Module to go-plugin. The host uses it with a nil Module
// to obtain a client.
type GRPCPlugin struct {
	plugin.NetRPCUnsupportedPlugin
	runtime *runtime
}

// GRPCServer registers the plugin service.
func (p *GRPCPlugin) GRPCServer(_ *plugin.GRPCBroker, s *grpc.Server) error {
	pluginv1.RegisterPluginServer(s, p.runtime)
	return nil
}

// GRPCClient returns the host's client.
func (p *GRPCPlugin) GRPCClient(_ context.Context, _ *plugin.GRPCBroker, c *grpc.ClientConn) (interface{}, error) {
	return pluginv1.NewPluginClient(c), nil
}

// NewLogger returns the logger a plugin should use: JSON lines on stderr, which
// the host parses, re-levels and prefixes with the plugin's name.
func NewLogger(name string) hclog.Logger {
	level := hclog.LevelFromString(os.Getenv(EnvLogLevel))
	if level == hclog.NoLevel {
		level = hclog.Info
	}
	return hclog.New(&hclog.LoggerOptions{
		Name:       name,
		Level:      level,
		Output:     os.Stderr,
		JSONFormat: true,
	})
}

// Serve runs module as an edgehive plugin; it returns when the host stops the
// plugin. Call it from main.
func Serve(module Module) {
	name := os.Getenv(EnvPluginName)
	if name == "" {
		name = module.Info().Name
	}
	logger := NewLogger(name)
	// Message ids come from a buffered random pool: one getrandom call per
	// many ids instead of one per message.
	uuid.EnableRandPool()
	rt := newRuntime(module, logger)
	go rt.watchParent(os.Getppid(), 500*time.Millisecond)
	// The host stops its plugins in order; a terminal's or a service
	// manager's signal to the whole process group must not cut in.
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		for sig := range signals {
			logger.Debug("ignoring signal: the host stops this plugin", "signal", sig.String())
		}
	}()
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig: Handshake,
		Plugins:         plugin.PluginSet{PluginKey: &GRPCPlugin{runtime: rt}},
		GRPCServer: func(opts []grpc.ServerOption) *grpc.Server {
			opts = append(opts, grpc.MaxRecvMsgSize(MaxFrameBytes), grpc.MaxSendMsgSize(MaxFrameBytes),
				experimental.BufferPool(grpcbuf.New()))
			return grpc.NewServer(opts...)
		},
		Logger: logger.Named("go-plugin"),
	})
}

// IsPluginProcess reports whether this process was started by a host as a
// plugin; a multi-call binary uses it to choose between its roles.
func IsPluginProcess() bool {
	return strings.TrimSpace(os.Getenv(Handshake.MagicCookieKey)) == Handshake.MagicCookieValue
}
