// Package metamanager is the edgehive module that stores the node's metadata
// in SQLite and answers edged's queries, online and offline (KubeEdge's
// metamanager). See README.md for the messages it consumes and produces.
package metamanager

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/go-hclog"

	"github.com/edgehive/edgehive/plugins/internal/pluginkit"
	"github.com/edgehive/edgehive/plugins/metamanager/store"
	"github.com/edgehive/edgehive/sdk"
)

// Name, Group and Version identify the module to the host.
const (
	Name    = "metamanager"
	Group   = sdk.GroupMeta
	Version = "0.2.0"
)

// maxBackground bounds the remote queries and sync upstream requests waiting
// for the cloud at once; Handle waits for a slot when all are taken.
const maxBackground = 64

// MetaManager is the metamanager module.
type MetaManager struct {
	cfg config

	host   sdk.Context
	logger hclog.Logger
	store  *store.Store
	life   context.Context // the module's lifetime, from Start

	connected atomic.Bool // the cloud link is up, as edgehub last said

	bg       sync.WaitGroup // background requests to the cloud
	slots    chan struct{}
	stopOnce sync.Once
	stopErr  error
}

var (
	_ sdk.Module        = (*MetaManager)(nil)
	_ sdk.HealthChecker = (*MetaManager)(nil)
	_ sdk.Stopper       = (*MetaManager)(nil)
)

// New returns an unconfigured module.
func New() *MetaManager {
	return &MetaManager{cfg: defaultConfig(), slots: make(chan struct{}, maxBackground)}
}

// Info identifies the module.
func (m *MetaManager) Info() sdk.PluginInfo {
	return sdk.PluginInfo{
		Name:        Name,
		Group:       Group,
		Version:     Version,
		APIVersions: []string{sdk.APIVersion1},
		Description: "SQLite metadata store and local MetaServer",
	}
}

// ConfigSchema declares the config block.
func (m *MetaManager) ConfigSchema() *sdk.Schema { return schema() }

// SetConfig decodes and validates the config block.
func (m *MetaManager) SetConfig(cfg *sdk.Config) error {
	c, err := pluginkit.Decode(cfg, defaultConfig(), (*config).validate)
	if err != nil {
		return err
	}
	file, err := pluginkit.DataFile(cfg, Name, "db_file", c.DBFile, dbFileName)
	if err != nil {
		return err
	}
	c.DBFile = file
	m.cfg = c
	return nil
}

// Start opens the database. Nothing is asked of the cloud: what was stored
// before is served as it is until edgehub reports the cloud connected.
func (m *MetaManager) Start(ctx context.Context, host sdk.Context) error {
	m.host = host
	m.logger = host.Logger()
	m.life = ctx
	if err := os.MkdirAll(filepath.Dir(m.cfg.DBFile), 0o750); err != nil {
		return fmt.Errorf("%s: start: %w", Name, err)
	}
	st, err := store.Open(ctx, m.cfg.DBFile)
	if err != nil {
		return fmt.Errorf("%s: start: %w", Name, err)
	}
	m.store = st
	if m.cfg.MetaServerEnable {
		m.logger.Warn("meta_server_enable is set, but the MetaServer is not built yet; not serving", "address", m.cfg.MetaServerAddress)
	}
	m.logger.Info("started", "version", Version, "db_file", m.cfg.DBFile)
	return nil
}

// Stop waits for the requests still waiting on the cloud (they end with the
// module's context) and closes the database.
func (m *MetaManager) Stop(ctx context.Context) error {
	m.stopOnce.Do(func() {
		done := make(chan struct{})
		go func() { m.bg.Wait(); close(done) }()
		select {
		case <-done:
		case <-ctx.Done():
			m.stopErr = fmt.Errorf("%s: stop: background requests still running: %w", Name, ctx.Err())
			return
		}
		if m.store != nil {
			m.stopErr = m.store.Close()
		}
	})
	return m.stopErr
}

// Health reports whether the database answers.
func (m *MetaManager) Health(ctx context.Context) error {
	if m.store == nil {
		return errors.New("metamanager: not started")
	}
	return m.store.Ping(ctx)
}

// CloudConnected reports whether edgehub last said the cloud is connected.
func (m *MetaManager) CloudConnected() bool { return m.connected.Load() }

// background runs fn on its own goroutine, so that a query waiting for the
// cloud does not hold up the messages behind it; at most maxBackground run.
func (m *MetaManager) background(ctx context.Context, fn func(ctx context.Context)) error {
	select {
	case m.slots <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("%s: no slot for a cloud request: %w", Name, ctx.Err())
	}
	m.bg.Add(1)
	go func() {
		defer m.bg.Done()
		defer func() { <-m.slots }()
		fn(m.life)
	}()
	return nil
}
