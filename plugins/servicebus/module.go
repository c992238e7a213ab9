// Package servicebus is the edgehive module that forwards HTTP requests from
// the cloud to applications on the node and returns their answers, and lets
// applications on the node call allowed cloud targets through a loopback
// HTTP server. KubeEdge's servicebus message shapes are kept.
package servicebus

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"

	"github.com/edgehive/edgehive/plugins/internal/pluginkit"
	"github.com/edgehive/edgehive/sdk"
)

// Name, Group and Version identify the module to the host.
const (
	Name    = "servicebus"
	Group   = sdk.GroupServiceBus
	Version = "0.2.0"
)

// cloudModule is the module that carries messages to the cloud.
const cloudModule = "edgehub"

// ServiceBus is the servicebus module.
type ServiceBus struct {
	cfg     config
	allow   map[string]bool // host:port the cloud may call
	host    sdk.Context
	logger  hclog.Logger
	client  *http.Client
	targets *targetSet

	mu     sync.Mutex
	server *http.Server
	addr   net.Addr
	done   chan struct{}
}

var (
	_ sdk.Module        = (*ServiceBus)(nil)
	_ sdk.HealthChecker = (*ServiceBus)(nil)
	_ sdk.Stopper       = (*ServiceBus)(nil)
)

// New returns an unconfigured module.
func New() *ServiceBus { return &ServiceBus{} }

// Info identifies the module.
func (s *ServiceBus) Info() sdk.PluginInfo {
	return sdk.PluginInfo{Name: Name, Group: Group, Version: Version, APIVersions: []string{sdk.APIVersion1},
		Description: "HTTP bridge from the cloud to applications on the node"}
}

// ConfigSchema declares the config block.
func (s *ServiceBus) ConfigSchema() *sdk.Schema { return schema() }

// SetConfig decodes and validates the config block.
func (s *ServiceBus) SetConfig(cfg *sdk.Config) error {
	c, err := pluginkit.Decode(cfg, defaultConfig(), (*config).validate)
	if err != nil {
		return err
	}
	s.cfg = c
	s.allow = map[string]bool{}
	for _, a := range c.Allow {
		s.allow[normalizeHostPort(a)] = true
	}
	file := ""
	if cfg.DataDir != "" {
		file = filepath.Join(cfg.DataDir, "cloud-targets.json")
	}
	targets, err := loadTargets(file)
	if err != nil {
		return fmt.Errorf("%s: %w", Name, err)
	}
	s.targets = targets
	return nil
}

// Start opens the loopback server for applications on the node.
func (s *ServiceBus) Start(_ context.Context, host sdk.Context) error {
	s.host = host
	s.logger = host.Logger()
	s.client = newTargetClient(s.cfg.Timeout.D(), s.allowed)
	// SO_REUSEPORT lets a new instance bind during a live upgrade while the
	// old one finishes its requests.
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, unix.SO_REUSEPORT, 1)
		}); err != nil {
			return err
		}
		return serr
	}}
	ln, err := lc.Listen(context.Background(), "tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("%s: listen %s: %w", Name, s.cfg.Listen, err)
	}
	srv := &http.Server{
		Handler:           http.HandlerFunc(s.serveLocal),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       s.cfg.Timeout.D() + 10*time.Second,
		WriteTimeout:      s.cfg.Timeout.D() + 10*time.Second,
	}
	s.mu.Lock()
	s.server, s.addr, s.done = srv, ln.Addr(), make(chan struct{})
	s.mu.Unlock()
	go func() {
		defer close(s.done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.logger.Error("local server stopped", "error", err)
		}
	}()
	s.logger.Info("servicebus listening", "address", ln.Addr().String(), "allow", s.cfg.Allow)
	return nil
}

// Addr is the local server's address once started.
func (s *ServiceBus) Addr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addr
}

// Stop closes the local server.
func (s *ServiceBus) Stop(ctx context.Context) error {
	s.mu.Lock()
	srv, done := s.server, s.done
	s.mu.Unlock()
	if srv == nil {
		return nil
	}
	err := srv.Shutdown(ctx)
	<-done
	return err
}

// Health fails when the local server has stopped.
func (s *ServiceBus) Health(context.Context) error {
	s.mu.Lock()
	done := s.done
	s.mu.Unlock()
	if done == nil {
		return errors.New("not started")
	}
	select {
	case <-done:
		return errors.New("local server stopped")
	default:
		return nil
	}
}

// Handle runs one message from the cloud: start/stop of a cloud target, or an
// HTTP request for an application on the node.
func (s *ServiceBus) Handle(ctx context.Context, msg *sdk.Message) error {
	switch msg.Router.Operation {
	case opStart:
		return s.targets.add(msg.Router.Resource)
	case opStop:
		return s.targets.remove(msg.Router.Resource)
	}
	resp := s.forwardToApp(ctx, msg)
	if msg.Header.Sync {
		return s.host.Response(ctx, resp)
	}
	return s.host.SendToGroup(ctx, sdk.GroupHub, resp)
}

// allowed reports whether host:port is on the allow-list.
func (s *ServiceBus) allowed(hostPort string) bool { return s.allow[normalizeHostPort(hostPort)] }
