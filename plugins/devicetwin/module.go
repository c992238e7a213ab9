// Package devicetwin is the edgehive module that keeps devices and their twins
// in SQLite, speaks KubeEdge's devicetwin MQTT JSON with mappers (through
// eventbus) and syncs twin changes with the cloud (through edgehub). See README.md.
package devicetwin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"

	"github.com/hashicorp/go-hclog"

	"github.com/edgehive/edgehive/plugins/devicetwin/store"
	"github.com/edgehive/edgehive/plugins/internal/pluginkit"
	"github.com/edgehive/edgehive/sdk"
)

// Name, Group and Version identify the module to the host.
const (
	Name    = "devicetwin"
	Group   = sdk.GroupTwin
	Version = "0.2.0"
)

// Modules devicetwin talks to, and the names it uses on the wire.
const (
	busModule   = "eventbus" // MQTT
	cloudModule = "edgehub"  // the cloud link
	cloudSource = "twin"     // route.source of messages to the cloud, as KubeEdge's devicetwin
)

// DeviceTwin is the devicetwin module.
type DeviceTwin struct {
	cfg    config
	host   sdk.Context
	logger hclog.Logger
	db     *store.Store

	// twins holds the stored twins of devices that twin updates touched, so
	// that a batch need not read them again. Owned by the handler goroutine
	// (Handle, HandleBatch); entries are replaced after each commit and the
	// whole map is dropped when membership changes or a commit fails. Only
	// devices that exist are kept, so it is bounded by the membership.
	twins map[string]map[string]*store.Twin
	// pendingSync caches each device's unconfirmed edge_updated as last
	// written, syncOwner maps its msg_id back to the device; same owner and
	// lifetime as twins.
	pendingSync map[string]cachedSync
	syncOwner   map[string]string

	offline atomic.Bool   // edgehub said the cloud is disconnected
	kick    chan struct{} // resend every pending sync now
	cancel  context.CancelFunc
	done    chan struct{} // closed when the sync loop ends
	stopped atomic.Bool
}

var (
	_ sdk.Module        = (*DeviceTwin)(nil)
	_ sdk.HealthChecker = (*DeviceTwin)(nil)
	_ sdk.Stopper       = (*DeviceTwin)(nil)
)

// New returns an unconfigured module.
func New() *DeviceTwin { return &DeviceTwin{} }

// Info identifies the module.
func (d *DeviceTwin) Info() sdk.PluginInfo {
	return sdk.PluginInfo{Name: Name, Group: Group, Version: Version, APIVersions: []string{sdk.APIVersion1},
		Description: "device twins in SQLite, MQTT twin protocol for mappers, synced with the cloud"}
}

// ConfigSchema declares the config block.
func (d *DeviceTwin) ConfigSchema() *sdk.Schema { return schema() }

// SetConfig decodes and validates the config block.
func (d *DeviceTwin) SetConfig(cfg *sdk.Config) error {
	c, err := pluginkit.DecodeWithDBFile(cfg, Name, defaultConfig(), (*config).validate, (*config).dbFile, dbFileName)
	if err != nil {
		return err
	}
	d.cfg = c
	return nil
}

// Start opens the database and starts the loop that resends unconfirmed syncs.
func (d *DeviceTwin) Start(ctx context.Context, host sdk.Context) error {
	d.host = host
	d.logger = host.Logger()
	db, err := store.Open(d.cfg.DBFile)
	if err != nil {
		return fmt.Errorf("%s: %w", Name, err)
	}
	d.db = db
	d.twins = map[string]map[string]*store.Twin{}
	d.pendingSync = map[string]cachedSync{}
	d.syncOwner = map[string]string{}
	d.kick = make(chan struct{}, 1)
	d.done = make(chan struct{})
	loopCtx, cancel := context.WithCancel(ctx)
	d.cancel = cancel
	go d.syncLoop(loopCtx)
	d.logger.Info("devicetwin started", "db_file", d.cfg.DBFile, "sync_retry_interval", d.cfg.SyncRetryInterval.D().String())
	return nil
}

// Stop ends the sync loop and closes the database.
func (d *DeviceTwin) Stop(ctx context.Context) error {
	if d.cancel == nil || !d.stopped.CompareAndSwap(false, true) {
		return nil
	}
	d.cancel()
	select {
	case <-d.done:
	case <-ctx.Done():
		return fmt.Errorf("%s: sync loop did not stop: %w", Name, ctx.Err())
	}
	return d.db.Close()
}

// Health fails before Start, after Stop, when the sync loop has ended or the
// database does not answer.
func (d *DeviceTwin) Health(ctx context.Context) error {
	if d.db == nil || d.done == nil {
		return errors.New("not started")
	}
	select {
	case <-d.done:
		return errors.New("sync loop stopped")
	default:
	}
	if err := d.db.Ping(ctx); err != nil {
		return fmt.Errorf("database: %w", err)
	}
	return nil
}

// Topic prefixes and suffixes of KubeEdge's device protocol.
const (
	devicePrefix = "$hw/events/device/"
	nodePrefix   = "$hw/events/node/"

	suffixTwinUpdate    = "/twin/update"
	suffixTwinGet       = "/twin/get"
	suffixStateUpdate   = "/state/update"
	suffixMembershipGet = "/membership/get"

	resMembership       = "membership"
	resMembershipDetail = "membership/detail"
	resConnection       = "node/connection"
	cloudUpdatedSuffix  = "/twin/cloud_updated"
	edgeUpdatedSuffix   = "/twin/edge_updated"
	stateUpdateSuffix   = "/state/update"
	cloudDevicePrefix   = "device/"
	opConnect           = "connect"
	opDisconnect        = "disconnect"
	opGet               = "get"
	contentDisconnected = "cloud_disconnected"
)

// Handle dispatches one message: MQTT from mappers (via eventbus), device
// messages from the cloud (via edgehub), and cloud connection events.
func (d *DeviceTwin) Handle(ctx context.Context, msg *sdk.Message) error {
	if d.db == nil {
		return fmt.Errorf("%s: message %s arrived before Start", Name, msg.Header.ID)
	}
	res, op := msg.Router.Resource, msg.Router.Operation
	var err error
	switch {
	case strings.HasPrefix(res, devicePrefix):
		err = d.handleDeviceTopic(ctx, msg)
	case strings.HasPrefix(res, nodePrefix) && strings.HasSuffix(res, suffixMembershipGet):
		err = d.membershipGet(ctx, res, msg.ContentString())
	case res == resConnection:
		d.connection(ctx, op, msg.ContentString())
	case op == sdk.OpResponse && msg.Header.ParentID != "":
		err = d.confirm(ctx, msg.Header.ParentID)
	case res == resMembership:
		err = d.membershipUpdate(ctx, msg)
	case strings.HasPrefix(res, cloudDevicePrefix) && strings.HasSuffix(res, cloudUpdatedSuffix):
		err = d.handleTwinBatch(ctx, []*sdk.Message{msg})[0]
	default:
		d.logger.Debug("message ignored", "msg_id", msg.Header.ID, "source", msg.Router.Source, "operation", op, "resource", res)
		if msg.Header.Sync {
			return d.host.Response(ctx, sdk.NewErrorResponse(msg, fmt.Errorf("%s does not handle %s %s", Name, op, res)))
		}
		return nil
	}
	if err != nil {
		d.logger.Error("message failed", "msg_id", msg.Header.ID, "operation", op, "resource", res, "error", err)
	}
	return err
}

func (d *DeviceTwin) handleDeviceTopic(ctx context.Context, msg *sdk.Message) error {
	rest := strings.TrimPrefix(msg.Router.Resource, devicePrefix)
	payload := msg.ContentString()
	switch {
	case strings.HasSuffix(rest, suffixTwinUpdate):
		return d.handleTwinBatch(ctx, []*sdk.Message{msg})[0]
	case strings.HasSuffix(rest, suffixTwinGet):
		return d.twinGet(ctx, strings.TrimSuffix(rest, suffixTwinGet), payload)
	case strings.HasSuffix(rest, suffixStateUpdate):
		return d.stateUpdate(ctx, strings.TrimSuffix(rest, suffixStateUpdate), payload)
	}
	d.logger.Debug("device topic ignored", "topic", msg.Router.Resource)
	return nil
}

// publish sends payload to the MQTT topic through eventbus.
func (d *DeviceTwin) publish(ctx context.Context, topic string, payload any) {
	m := d.busMessage(topic, payload)
	if m == nil {
		return
	}
	if err := d.host.Send(ctx, busModule, m); err != nil {
		d.logger.Warn("publish failed", "topic", topic, "error", err)
	}
}

// busMessage is the message that asks eventbus to publish payload on topic;
// nil (logged) when payload does not encode.
func (d *DeviceTwin) busMessage(topic string, payload any) *sdk.Message {
	b, err := json.Marshal(payload)
	if err != nil {
		d.logger.Error("encode payload", "topic", topic, "error", err)
		return nil
	}
	m := sdk.NewMessage("").BuildRouter(Name, sdk.GroupUser, topic, sdk.OpPublish)
	if err := m.FillBody(string(b)); err != nil {
		d.logger.Error("encode message", "topic", topic, "error", err)
		return nil
	}
	return m
}

func deviceTopic(deviceID, suffix string) string { return devicePrefix + deviceID + suffix }
