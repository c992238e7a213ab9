// Package eventbus is the edgehive module that bridges MQTT to the other
// modules and the cloud, as KubeEdge edgecore's EventBus does: device and
// node topics go to devicetwin, everything else it subscribes to goes up to
// the cloud, and publish requests from devicetwin and the cloud go out on
// MQTT. The broker is embedded (loopback only, the default) or external
// (mosquitto). See README.md.
package eventbus

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/hashicorp/go-hclog"

	"github.com/edgehive/edgehive/plugins/internal/pluginkit"
	"github.com/edgehive/edgehive/sdk"
)

// Name, Group and Version identify the module to the host.
const (
	Name    = "eventbus"
	Group   = sdk.GroupBus
	Version = "0.2.0"
)

// Modules eventbus hands MQTT messages to.
const (
	twinModule  = "devicetwin"
	cloudModule = "edgehub"
)

// Route sources of what eventbus sends.
const (
	sourceToTwin  = "eventbus" // to devicetwin
	sourceToCloud = "bus"      // to the cloud, as KubeEdge's eventbus
)

// Operations from the cloud besides sdk's.
const (
	opGetResult = "get_result"
	authInfo    = "auth_info"
)

// Timing. Variables so tests can shorten them.
var (
	publishTimeout       = 10 * time.Second // Handle: wait for a connection and the broker's answer
	subscribeWait        = 10 * time.Second
	enqueueTimeout       = 5 * time.Second  // MQTT callback: wait for room in the queue
	sendTimeout          = 10 * time.Second // one Send to the host
	sendAttempts         = 8                // Sends of one message before it is dropped
	sendBackoff          = 100 * time.Millisecond
	sendMaxBackoff       = 5 * time.Second
	dropUnhealthy        = time.Minute // Health fails this long after a drop
	reconnectMax         = 30 * time.Second
	reconnectFirst       = time.Second
	keepAlive            = 30 * time.Second
	brokerStoreWait      = time.Second // for the embedded broker's store lock
	shutdownTimeout uint = 250         // ms paho waits for work in flight on Disconnect
)

// EventBus is the eventbus module.
type EventBus struct {
	cfg      config
	dbFile   string
	nodeName string

	host   sdk.Context
	logger hclog.Logger
	store  *topicStore
	broker *broker
	// journal holds the messages the embedded broker accepted until they
	// are handed on (internal mode).
	journal     *journal
	journalDone chan struct{} // closed when the journal's writer ends
	brokerFile  string        // the embedded broker's sessions and messages in flight
	journalDir  string        // the journal's segments
	client      paho.Client
	url         string // the broker the client connects to

	queue  chan *inbound
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{} // closed when the forwarder ends

	mu        sync.Mutex
	dynamic   map[string]bool // topics the cloud subscribed
	ready     chan struct{}   // closed once connected and subscribed the first time
	readyOnce sync.Once

	subscribed atomic.Bool // connected and every topic subscribed
	stats      counters
	lastDrop   atomic.Int64 // unix ms
}

// counters are the module's own figures, read with Stats.
type counters struct {
	received, forwarded, refused, dropped, published atomic.Uint64
}

// Stats is a snapshot of the counters.
type Stats struct {
	Received  uint64 // MQTT messages that arrived
	Forwarded uint64 // handed to devicetwin or edgehub
	Refused   uint64 // bad input, from MQTT or from a message
	Dropped   uint64 // good messages lost: queue full, or Send kept failing
	Published uint64 // published on MQTT
}

var (
	_ sdk.Module        = (*EventBus)(nil)
	_ sdk.HealthChecker = (*EventBus)(nil)
	_ sdk.Stopper       = (*EventBus)(nil)
)

// New returns an unconfigured module.
func New() *EventBus { return &EventBus{} }

// Info identifies the module.
func (b *EventBus) Info() sdk.PluginInfo {
	return sdk.PluginInfo{Name: Name, Group: Group, Version: Version, APIVersions: []string{sdk.APIVersion1},
		Description: "MQTT bridge to an external or embedded broker"}
}

// ConfigSchema declares the config block.
func (b *EventBus) ConfigSchema() *sdk.Schema { return schema() }

// SetConfig decodes and validates the config block.
func (b *EventBus) SetConfig(cfg *sdk.Config) error {
	c, err := pluginkit.DecodeWithDBFile(cfg, Name, defaultConfig(), (*config).validate, (*config).dbFile, "eventbus.db")
	if err != nil {
		return err
	}
	db := c.DBFile
	b.cfg, b.dbFile, b.nodeName = c, db, cfg.NodeName
	b.brokerFile = strings.TrimSuffix(db, filepath.Ext(db)) + "-broker.bolt"
	b.journalDir = strings.TrimSuffix(db, filepath.Ext(db)) + "-journal"
	return nil
}

// Start opens the topic store, starts the embedded broker in internal mode,
// and connects the MQTT client, which keeps reconnecting in the background.
func (b *EventBus) Start(ctx context.Context, host sdk.Context) error {
	b.host = host
	b.logger = host.Logger()
	if b.nodeName == "" {
		b.nodeName = host.NodeName()
	}
	store, err := openTopicStore(b.dbFile)
	if err != nil {
		return fmt.Errorf("%s: %w", Name, err)
	}
	topics, err := store.list()
	if err != nil {
		_ = store.close()
		return fmt.Errorf("%s: %w", Name, err)
	}
	b.store = store
	b.mu.Lock()
	b.dynamic = map[string]bool{}
	for _, t := range topics {
		b.dynamic[t] = true
	}
	b.ready = make(chan struct{})
	b.mu.Unlock()

	b.ctx, b.cancel = context.WithCancel(ctx)
	b.queue = make(chan *inbound, b.cfg.SessionQueueSize)
	b.done = make(chan struct{})

	opts := paho.NewClientOptions()
	switch b.cfg.Mode {
	case modeInternal:
		// The broker hands bridged messages to eventbus itself (bridgeHook),
		// journaled before it acknowledges them.
		if err := b.startInternal(); err != nil {
			b.cancel()
			_ = store.close()
			return fmt.Errorf("%s: %w", Name, err)
		}
	case modeExternal:
		b.url = b.cfg.BrokerURL
		tlsCfg, err := b.tlsConfig()
		if err != nil {
			_ = store.close()
			return fmt.Errorf("%s: %w", Name, err)
		}
		if tlsCfg != nil {
			opts.SetTLSConfig(tlsCfg)
		}
		if b.cfg.Username != "" {
			opts.SetUsername(b.cfg.Username)
			opts.SetPassword(b.cfg.Password)
		}
	}

	go b.forward()
	if b.cfg.Mode == modeInternal {
		// eventbus is the broker's inline client: bridged messages come from
		// bridgeHook, publishes go in with Server.Publish. No socket, no
		// session of its own.
		b.subscribed.Store(true)
		b.readyOnce.Do(func() { close(b.ready) })
		b.logger.Info("eventbus started", "mode", b.cfg.Mode, "broker", b.broker.addr(), "cloud_topics", len(topics))
		return nil
	}

	opts.AddBroker(b.url).
		SetClientID(clientID(b.nodeName)).
		// A persistent session: the broker keeps our subscriptions and queues
		// QoS 1 messages while eventbus restarts.
		SetCleanSession(false).
		SetAutoReconnect(true).
		SetConnectRetry(true).
		SetConnectRetryInterval(reconnectFirst).
		SetMaxReconnectInterval(reconnectMax).
		SetKeepAlive(keepAlive).
		SetConnectTimeout(10 * time.Second).
		SetOrderMatters(true). // onMessage only queues; order is kept
		SetAutoAckDisabled(true).
		SetDefaultPublishHandler(b.onMessage).
		SetOnConnectHandler(b.onConnect).
		SetConnectionLostHandler(func(_ paho.Client, err error) {
			b.subscribed.Store(false)
			b.logger.Warn("MQTT connection lost; reconnecting", "broker", b.url, "error", err)
		}).
		SetReconnectingHandler(func(paho.Client, *paho.ClientOptions) {
			b.logger.Debug("MQTT reconnecting", "broker", b.url)
		})
	b.client = paho.NewClient(opts)
	b.client.Connect() // completes in the background; onConnect subscribes
	b.logger.Info("eventbus started", "mode", b.cfg.Mode, "broker", b.url, "client_id", clientID(b.nodeName), "cloud_topics", len(topics))
	return nil
}

func clientID(node string) string { return "edgehive-eventbus-" + node }

func (b *EventBus) tlsConfig() (*tls.Config, error) {
	u, err := url.Parse(b.cfg.BrokerURL)
	if err != nil {
		return nil, err
	}
	secure := slices.Contains([]string{"ssl", "tls", "mqtts", "tcps", "wss"}, u.Scheme)
	if !secure && b.cfg.TLSCAFile == "" && b.cfg.TLSCertFile == "" {
		return nil, nil
	}
	c := &tls.Config{MinVersion: tls.VersionTLS12}
	if b.cfg.TLSCAFile != "" {
		pem, err := os.ReadFile(b.cfg.TLSCAFile)
		if err != nil {
			return nil, fmt.Errorf("tls_ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("tls_ca_file %s: no PEM certificate", b.cfg.TLSCAFile)
		}
		c.RootCAs = pool
	}
	if b.cfg.TLSCertFile != "" {
		cert, err := tls.LoadX509KeyPair(b.cfg.TLSCertFile, b.cfg.TLSKeyFile)
		if err != nil {
			return nil, fmt.Errorf("tls_cert_file/tls_key_file: %w", err)
		}
		c.Certificates = []tls.Certificate{cert}
	}
	return c, nil
}

// startInternal opens the journal, starts the embedded broker with its
// bridge and its store, and the journal's writer with what a previous
// instance left.
func (b *EventBus) startInternal() error {
	j, recs, err := openJournal(b.journalDir)
	if err != nil {
		return err
	}
	b.journal = j
	backlog := b.backlogItems(recs)
	store := brokerStore{file: b.brokerFile, timeout: brokerStoreWait}
	br, err := startBroker(b.cfg.Listen, b.cfg.MaxPayloadBytes, b.cfg.SessionQueueSize, b.logger.Named("broker"),
		&bridgeHook{bus: b}, store)
	if err != nil {
		_ = j.close()
		b.journal = nil
		return err
	}
	b.broker = br
	b.url = "inline://" + br.addr()
	b.journalDone = make(chan struct{})
	go func() {
		defer close(b.journalDone)
		b.runJournal(backlog)
	}()
	b.logger.Info("embedded MQTT broker listening", "address", br.addr(), "store", b.brokerFile, "journal", b.journalDir, "journal_backlog", len(backlog))
	return nil
}

// onConnect runs in its own goroutine after every (re)connection: subscribe
// to every topic at QoS 1. A persistent session may still hold them; asking
// again is harmless and covers a broker that lost its state.
func (b *EventBus) onConnect(c paho.Client) {
	filters := map[string]byte{}
	for _, t := range b.filters() {
		filters[t] = 1
	}
	for attempt := 1; ; attempt++ {
		tok := c.SubscribeMultiple(filters, nil)
		if !tok.WaitTimeout(subscribeWait) {
			b.logger.Error("subscribe timed out", "attempt", attempt, "topics", len(filters))
		} else if err := tok.Error(); err != nil {
			b.logger.Error("subscribe failed", "attempt", attempt, "error", err)
		} else {
			break
		}
		if attempt == 3 || !c.IsConnectionOpen() {
			return // the next reconnection tries again
		}
	}
	b.subscribed.Store(true)
	b.logger.Info("MQTT connected and subscribed", "broker", b.url, "topics", len(filters))
	b.readyOnce.Do(func() { close(b.ready) })
}

// filters returns every topic filter eventbus subscribes to.
func (b *EventBus) filters() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := slices.Clone(fixedTopics)
	for t := range b.dynamic {
		if !slices.Contains(out, t) {
			out = append(out, t)
		}
	}
	return out
}

// Stop stops forwarding, disconnects, stops the embedded broker and closes the
// store. MQTT messages not yet handed on stay unacknowledged, so a persistent
// session on an external broker delivers them again after a restart.
func (b *EventBus) Stop(ctx context.Context) error {
	if b.cancel == nil {
		return nil
	}
	b.cancel()
	select {
	case <-b.done:
	case <-ctx.Done():
	}
	if b.client != nil {
		b.client.Disconnect(shutdownTimeout)
	}
	b.subscribed.Store(false)
	if b.broker != nil {
		b.broker.close()
	}
	if b.journal != nil {
		select {
		case <-b.journalDone:
		case <-ctx.Done():
		}
		if err := b.journal.flush(ctx); err != nil {
			b.logger.Warn("journal flush on stop", "error", err)
		}
		_ = b.journal.close()
	}
	if b.store != nil {
		return b.store.close()
	}
	return nil
}

// Health fails when the client is not connected and subscribed, and for a
// minute after a message was dropped.
func (b *EventBus) Health(context.Context) error {
	if b.ctx == nil {
		return errors.New("not started")
	}
	if !b.subscribed.Load() {
		return fmt.Errorf("not connected to the MQTT broker %s", b.url)
	}
	if last := b.lastDrop.Load(); last != 0 && time.Since(time.UnixMilli(last)) < dropUnhealthy {
		return fmt.Errorf("%d messages dropped, the last at %s", b.stats.dropped.Load(), time.UnixMilli(last).UTC().Format(time.RFC3339))
	}
	return nil
}

// Stats returns the module's counters.
func (b *EventBus) Stats() Stats {
	return Stats{
		Received:  b.stats.received.Load(),
		Forwarded: b.stats.forwarded.Load(),
		Refused:   b.stats.refused.Load(),
		Dropped:   b.stats.dropped.Load(),
		Published: b.stats.published.Load(),
	}
}

// BrokerAddr is the embedded broker's public address, "" in external mode.
func (b *EventBus) BrokerAddr() string {
	if b.broker == nil {
		return ""
	}
	return b.broker.addr()
}

func (b *EventBus) drop() {
	b.stats.dropped.Add(1)
	b.lastDrop.Store(time.Now().UnixMilli())
}
