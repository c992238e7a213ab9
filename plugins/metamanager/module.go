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
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/edgehive/edgehive/plugins/internal/pluginkit"
	"github.com/edgehive/edgehive/plugins/metamanager/metaserver"
	"github.com/edgehive/edgehive/plugins/metamanager/store"
	"github.com/edgehive/edgehive/sdk"
)

// Name, Group and Version identify the module to the host.
const (
	Name    = "metamanager"
	Group   = sdk.GroupMeta
	Version = "0.3.0"
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

	// The MetaServer, when enabled: hub numbers the store's changes and
	// feeds the watches; server answers the API. Both nil when disabled.
	hub        *metaserver.Hub
	server     *metaserver.Server
	metaErr    atomic.Pointer[string] // why the MetaServer is not listening; nil when it is
	metaCancel context.CancelFunc     // ends the listen retries; nil when none run
	metaDone   chan struct{}

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
	c, err := pluginkit.DecodeWithDBFile(cfg, Name, defaultConfig(), (*config).validate, (*config).dbFile, dbFileName)
	if err != nil {
		return err
	}
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
	if m.cfg.MetaServer.Enabled {
		if err := m.startMetaServer(ctx); err != nil {
			_ = st.Close()
			return fmt.Errorf("%s: start: %w", Name, err)
		}
	}
	m.logger.Info("started", "version", Version, "db_file", m.cfg.DBFile)
	return nil
}

// startMetaServer seeds the hub with what is stored and starts listening.
// Revisions start at the start time in microseconds, so that they keep
// growing across restarts and a client's version from before one is refused
// as too old (it relists) rather than mistaken for a current one.
func (m *MetaManager) startMetaServer(ctx context.Context) error {
	hub := metaserver.NewHub(uint64(time.Now().UnixMicro()), 0, 0)
	for _, typ := range metaserver.ServedTypes() {
		objs, err := m.store.List(ctx, typ, "")
		if err != nil {
			return fmt.Errorf("metaserver: %w", err)
		}
		for _, o := range objs {
			hub.Seed(o)
		}
	}
	srv := metaserver.New(m.store, hub, metaserver.Options{
		Secrets:  m.cfg.MetaServer.Secrets,
		Logger:   m.logger.Named("metaserver"),
		Decorate: m.withLocalStatus,
	})
	m.hub, m.server = hub, srv
	err := srv.Start(ctx, m.cfg.MetaServer.Listen)
	if err == nil {
		return nil
	}
	// The store and edged come first: metamanager runs on without its
	// MetaServer (reported by Health) and keeps trying to listen.
	m.setMetaServerErr(err)
	m.logger.Error("metaserver cannot listen; metamanager runs on without it and retries", "listen", m.cfg.MetaServer.Listen, "error", err)
	metaCtx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	m.metaCancel, m.metaDone = cancel, done
	go func() {
		defer close(done)
		wait := metaServerRetryMin
		for {
			t := time.NewTimer(wait)
			select {
			case <-metaCtx.Done():
				t.Stop()
				return
			case <-t.C:
			}
			err := srv.Start(metaCtx, m.cfg.MetaServer.Listen)
			if err == nil {
				m.setMetaServerErr(nil)
				return
			}
			m.setMetaServerErr(err)
			m.logger.Warn("metaserver still cannot listen", "listen", m.cfg.MetaServer.Listen, "error", err, "retry_in", wait)
			wait = min(wait*2, metaServerRetryMax)
		}
	}()
	return nil
}

// How often a MetaServer that cannot listen (address in use) tries again.
const (
	metaServerRetryMin = time.Second
	metaServerRetryMax = 30 * time.Second
)

func (m *MetaManager) setMetaServerErr(err error) {
	if err == nil {
		m.metaErr.Store(nil)
		return
	}
	msg := err.Error()
	m.metaErr.Store(&msg)
}

// MetaServerAddr is the address the MetaServer listens on, or "".
func (m *MetaManager) MetaServerAddr() string {
	if m.server == nil {
		return ""
	}
	return m.server.Addr()
}

// publish tells the MetaServer's watches about a change to the store; a
// pod goes with edged's reported status (see podstatus.go).
func (m *MetaManager) publish(ctx context.Context, event, key string, value []byte) {
	if m.hub == nil {
		return
	}
	ns, typ, name, err := store.SplitKey(key)
	if err != nil {
		return
	}
	obj := store.Object{Key: key, Type: typ, Namespace: ns, Name: name, Value: value}
	if event != metaserver.Deleted {
		obj.Value = m.withLocalStatus(ctx, obj)
	}
	m.hub.Publish(event, obj)
}

// Stop waits for the requests still waiting on the cloud (they end with the
// module's context) and closes the database.
func (m *MetaManager) Stop(ctx context.Context) error {
	m.stopOnce.Do(func() {
		if m.metaCancel != nil {
			m.metaCancel()
			<-m.metaDone
		}
		if m.server != nil {
			if err := m.server.Stop(ctx); err != nil {
				m.logger.Warn("metaserver stop", "error", err)
			}
		}
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
	if err := m.store.Ping(ctx); err != nil {
		return err
	}
	if msg := m.metaErr.Load(); msg != nil {
		return fmt.Errorf("metamanager: metaserver not listening on %s: %s", m.cfg.MetaServer.Listen, *msg)
	}
	return nil
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
