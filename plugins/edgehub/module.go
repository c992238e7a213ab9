// Package edgehub is the edgehive module that keeps the node's link to the
// cloud: a websocket to KubeEdge's cloudhub carrying one beehive message per
// frame. Downstream frames are dispatched to the modules on the node as
// KubeEdge's edgehub does; messages the modules hand to edgehub go upstream.
// See README.md.
package edgehub

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/yamux"

	"github.com/edgehive/edgehive/plugins/internal/pluginkit"
	"github.com/edgehive/edgehive/sdk"
)

// Name, Group and Version identify the module to the host.
const (
	Name    = "edgehub"
	Group   = sdk.GroupHub
	Version = "0.3.0"
)

// Modules on the node edgehub delivers to.
const (
	moduleMeta       = "metamanager"
	moduleTwin       = "devicetwin"
	moduleEventBus   = "eventbus"
	moduleServiceBus = "servicebus"
	moduleEdged      = "edged"
)

// The connection event edgehub sends to metamanager, devicetwin and edged on every
// change of the cloud link (KubeEdge's shape).
const (
	resourceConnection = "node/connection"
	opConnect          = "connect"
	cloudConnected     = "cloud_connected"
	cloudDisconnected  = "cloud_disconnected"
)

// Link timing. KubeEdge's values where it has them; the read timeout and the
// ping are edgehive's own dead-link detection (KubeEdge never applies its read
// deadline).
const (
	defaultQueueSize    = 1000
	defaultPingInterval = 10 * time.Second
	defaultReadTimeout  = 30 * time.Second
	writeTimeout        = 15 * time.Second
	handshakeTimeout    = 30 * time.Second
	minBackoff          = time.Second
	maxBackoff          = 30 * time.Second
	deliverTimeout      = 10 * time.Second
)

// ErrDisconnected is returned by Handle for a sync request while the cloud is
// not connected: the caller should fall back (e.g. to its local store).
var ErrDisconnected = errors.New("cloud not connected")

// EdgeHub is the edgehub module.
type EdgeHub struct {
	cfg    config
	host   sdk.Context
	logger hclog.Logger

	// Timing knobs; tests shorten them.
	pingInterval time.Duration
	readTimeout  time.Duration
	minBackoff   time.Duration
	maxBackoff   time.Duration
	queueSize    int

	mu        sync.Mutex
	conn      *websocket.Conn // the live connection, nil while disconnected
	tunnel    *yamux.Session  // the live tunnel session, nil while there is none
	connected bool            // conn is set and the offline queue is flushed
	queue     []*sdk.Message  // async upstream messages waiting for a connection
	cancel    context.CancelFunc
	done      chan struct{}

	writeMu sync.Mutex // gorilla allows one writer at a time

	// certMu serialises reading and replacing the node certificate files
	// (bootstrap at dial, renewal by the rotation loop).
	certMu         sync.Mutex
	rotateFraction func() float64 // where in the lifetime to renew; tests fix it
	rotations      atomic.Uint64  // successful renewals

	dropped     atomic.Uint64 // upstream messages dropped from a full queue
	connects    atomic.Uint64 // successful connections
	refusedDown atomic.Uint64 // downstream frames refused (malformed, oversized, unroutable)
}

var (
	_ sdk.Module        = (*EdgeHub)(nil)
	_ sdk.HealthChecker = (*EdgeHub)(nil)
	_ sdk.Stopper       = (*EdgeHub)(nil)
)

// New returns an unconfigured module.
func New() *EdgeHub {
	return &EdgeHub{
		pingInterval: defaultPingInterval,
		readTimeout:  defaultReadTimeout,
		minBackoff:   minBackoff,
		maxBackoff:   maxBackoff,
		queueSize:    defaultQueueSize,

		rotateFraction: randomRotateFraction,
	}
}

// Info identifies the module.
func (e *EdgeHub) Info() sdk.PluginInfo {
	return sdk.PluginInfo{Name: Name, Group: Group, Version: Version, APIVersions: []string{sdk.APIVersion1},
		Description: "cloud link: websocket to KubeEdge cloudhub"}
}

// ConfigSchema declares the config block.
func (e *EdgeHub) ConfigSchema() *sdk.Schema { return schema() }

// SetConfig decodes and validates the config block.
func (e *EdgeHub) SetConfig(cfg *sdk.Config) error {
	c, err := pluginkit.Decode(cfg, defaultConfig(), (*config).validate)
	if err != nil {
		return err
	}
	e.cfg = c
	return nil
}

// Start begins connecting to the cloud in the background; it never fails
// because the cloud is unreachable.
func (e *EdgeHub) Start(ctx context.Context, host sdk.Context) error {
	e.host = host
	e.logger = host.Logger()
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	e.mu.Lock()
	e.cancel, e.done = cancel, done
	e.mu.Unlock()
	go func() {
		defer close(done)
		var side sync.WaitGroup // the tunnel and rotation loops
		if e.cfg.Tunnel.Enabled {
			side.Add(1)
			go func() {
				defer side.Done()
				e.tunnelLoop(ctx)
			}()
		}
		if e.cfg.RotateCertificates {
			side.Add(1)
			go func() {
				defer side.Done()
				e.rotateLoop(ctx)
			}()
		}
		e.run(ctx)
		side.Wait()
	}()
	e.logger.Info("edgehub started", "server", e.cfg.Server, "node", host.NodeName(), "tunnel", e.cfg.Tunnel.Enabled)
	return nil
}

// Stop closes the connection and waits for the link loop to end.
func (e *EdgeHub) Stop(ctx context.Context) error {
	e.mu.Lock()
	cancel, done, conn := e.cancel, e.done, e.conn
	e.mu.Unlock()
	if cancel == nil {
		return nil
	}
	cancel()
	if conn != nil {
		_ = conn.Close()
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Health fails only when the link loop is not running. A disconnected cloud
// is a normal state of an edge node (offline autonomy), not a fault.
func (e *EdgeHub) Health(context.Context) error {
	e.mu.Lock()
	done := e.done
	e.mu.Unlock()
	if done == nil {
		return errors.New("not started")
	}
	select {
	case <-done:
		return errors.New("link loop stopped")
	default:
		return nil
	}
}

// Connected reports whether the cloud link is up.
func (e *EdgeHub) Connected() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.connected
}

// Handle sends a message from a module on the node to the cloud. A sync
// request is written at once (the cloud's answer comes back through
// Response) or refused with ErrDisconnected; an async message is written, or
// queued while the link is down.
func (e *EdgeHub) Handle(_ context.Context, msg *sdk.Message) error {
	up := msg.Clone()
	sync := up.Header.Sync
	up.Header.Sync = false // never on the wire
	e.mu.Lock()
	conn, connected := e.conn, e.connected
	if !connected {
		if sync {
			e.mu.Unlock()
			return fmt.Errorf("%s: %s: %w", Name, msg, ErrDisconnected)
		}
		e.enqueueLocked(up)
		e.mu.Unlock()
		return nil
	}
	e.mu.Unlock()
	if err := e.write(conn, up); err != nil {
		_ = conn.Close() // the read loop notices and reconnects
		if sync {
			return fmt.Errorf("%s: %s: %w", Name, msg, err)
		}
		e.mu.Lock()
		e.enqueueLocked(up)
		e.mu.Unlock()
	}
	return nil
}

// enqueueLocked queues an async upstream message, dropping the oldest when
// the queue is full. e.mu is held.
func (e *EdgeHub) enqueueLocked(msg *sdk.Message) {
	if len(e.queue) >= e.queueSize {
		n := e.dropped.Add(1)
		e.logger.Warn("offline queue full, dropped the oldest upstream message", "msg", e.queue[0].String(), "dropped_total", n)
		e.queue[0] = nil
		e.queue = e.queue[1:]
	}
	e.queue = append(e.queue, msg)
}
