package devicetwin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"strings"

	"github.com/edgehive/edgehive/internal/twinwire"
	"github.com/edgehive/edgehive/plugins/devicetwin/store"
	"github.com/edgehive/edgehive/sdk"
)

var _ sdk.BatchHandler = (*DeviceTwin)(nil)

// HandleBatch handles the messages that piled up while the previous batch
// ran, in order. Runs of twin updates (from mappers and from the cloud) are
// committed in one transaction and their answers sent with one SendBatch;
// runs of cloud confirmations are removed in one statement; anything else
// goes through Handle. Every message is stored before HandleBatch returns,
// which is when the runtime acknowledges them.
func (d *DeviceTwin) HandleBatch(ctx context.Context, msgs []*sdk.Message) []error {
	errs := make([]error, len(msgs))
	if d.db == nil {
		for i, m := range msgs {
			errs[i] = fmt.Errorf("%s: message %s arrived before Start", Name, m.Header.ID)
		}
		return errs
	}
	for i := 0; i < len(msgs); {
		j := i + 1
		switch kind := batchKind(msgs[i]); kind {
		case kindTwinUpdate, kindConfirm:
			for j < len(msgs) && batchKind(msgs[j]) == kind {
				j++
			}
			if kind == kindTwinUpdate {
				copy(errs[i:j], d.handleTwinBatch(ctx, msgs[i:j]))
			} else {
				err := d.confirmAll(ctx, msgs[i:j])
				for k := i; k < j; k++ {
					errs[k] = err
				}
			}
		default:
			errs[i] = d.Handle(ctx, msgs[i])
		}
		i = j
	}
	return errs
}

type msgKind int

const (
	kindOther      msgKind = iota
	kindTwinUpdate         // D/twin/update from a mapper or twin/cloud_updated from the cloud
	kindConfirm            // the cloud confirmed a sync
)

// batchKind sorts a message as Handle would dispatch it.
func batchKind(msg *sdk.Message) msgKind {
	res := msg.Router.Resource
	switch {
	case strings.HasPrefix(res, devicePrefix):
		if strings.HasSuffix(res, suffixTwinUpdate) {
			return kindTwinUpdate
		}
	case strings.HasPrefix(res, nodePrefix), res == resConnection:
	case msg.Router.Operation == sdk.OpResponse && msg.Header.ParentID != "":
		return kindConfirm
	case res == resMembership:
	case strings.HasPrefix(res, cloudDevicePrefix) && strings.HasSuffix(res, cloudUpdatedSuffix):
		return kindTwinUpdate
	}
	return kindOther
}

// confirmAll ends the resending of the syncs the cloud confirmed.
func (d *DeviceTwin) confirmAll(ctx context.Context, msgs []*sdk.Message) error {
	ids := make([]string, len(msgs))
	for i, m := range msgs {
		ids[i] = m.Header.ParentID
	}
	n, err := d.db.ConfirmAll(ctx, ids)
	if err != nil {
		d.dropCaches()
		d.logger.Error("confirmations failed", "count", len(ids), "error", err)
		return err
	}
	d.confirmed(ids)
	d.logger.Trace("cloud confirmations", "count", len(ids), "pending_removed", n)
	return nil
}

// twinOp is one twin update of a batch.
type twinOp struct {
	msg      *sdk.Message
	fromCld  bool // cloud_updated, else a mapper's update
	deviceID string
	update   twinwire.TwinUpdate
	parsed   bool           // passed the checks that need no database
	applied  bool           // changed the device's twins in this batch
	err      error          // what Handle would return for it
	pubs     []*sdk.Message // to eventbus once committed
	failPubs []*sdk.Message // to eventbus instead, if the commit fails
}

// batchDevice is one device as a batch sees it: read once, written once.
type batchDevice struct {
	found      bool
	twins      map[string]*store.Twin
	dirty      map[string]bool
	sync       map[string]*twinwire.Twin // edge_updated content: the stored pending one merged with this batch's
	syncLoaded bool
	syncDirty  bool
}

// handleTwinBatch applies twin updates in one transaction, then sends their
// answers to eventbus and the resulting edge_updated syncs (one per device)
// to the cloud. It returns what Handle would return for each message.
func (d *DeviceTwin) handleTwinBatch(ctx context.Context, msgs []*sdk.Message) []error {
	ops := make([]*twinOp, len(msgs))
	for i, m := range msgs {
		ops[i] = d.parseTwinOp(m)
	}
	var syncs []*sdk.Message
	var devices map[string]*batchDevice
	var written map[string]cachedSync
	err := d.db.Update(ctx, func(tx *store.Tx) error {
		syncs = nil
		var ids []string
		for _, op := range ops {
			if op.parsed {
				ids = append(ids, op.msg.Header.ID)
			}
		}
		handled, err := tx.HandledAmong(ctx, ids)
		if err != nil {
			return err
		}
		devices = map[string]*batchDevice{}
		written = map[string]cachedSync{}
		var order []string
		var applied []string
		for _, op := range ops {
			if !op.parsed {
				continue
			}
			id := op.msg.Header.ID
			if handled[id] {
				d.logger.Debug("twin update already handled", "msg_id", id, "device", op.deviceID)
				continue
			}
			dev := devices[op.deviceID]
			if dev == nil {
				if dev, err = d.loadBatchDevice(ctx, tx, op.deviceID); err != nil {
					return err
				}
				devices[op.deviceID] = dev
				order = append(order, op.deviceID)
			}
			toCloud, err := d.applyTwinOp(op, dev)
			if err != nil || !op.applied {
				continue
			}
			handled[id] = true
			applied = append(applied, id)
			if len(toCloud) > 0 {
				if err := d.loadSync(ctx, tx, dev, op.deviceID); err != nil {
					return err
				}
				for k, v := range toCloud {
					dev.sync[k] = mergeSync(dev.sync[k], v)
				}
				dev.syncDirty = true
			}
		}
		for _, id := range order {
			dev := devices[id]
			for _, key := range sortedKeys(dev.dirty) {
				if err := tx.PutTwin(ctx, dev.twins[key]); err != nil {
					return err
				}
			}
			if dev.syncDirty {
				msg := sdk.NewMessage("").BuildRouter(cloudSource, sdk.WireGroupResource, cloudDevicePrefix+id+edgeUpdatedSuffix, sdk.OpUpdate)
				if err := msg.FillBody(twinwire.TwinUpdate{BaseMessage: twinwire.NewEvent(), Twin: dev.sync}); err != nil {
					return err
				}
				// Stamped as sent: it goes right after the commit (when it
				// does not, sendCloudBatch clears the stamp).
				sentAt := int64(0)
				if !d.offline.Load() {
					sentAt = nowMS()
				}
				if err := putPending(ctx, tx, "twin:"+id, id, msg, sentAt); err != nil {
					return err
				}
				syncs = append(syncs, msg)
				written[id] = cachedSync{msgID: msg.Header.ID, twins: dev.sync}
			}
		}
		return tx.MarkHandledAll(ctx, applied, nowMS())
	})
	if err != nil {
		d.dropCaches() // they may hold what was rolled back
	} else {
		for id, dev := range devices {
			if dev.found {
				d.twins[id] = dev.twins
			}
		}
		for id, c := range written {
			if old, ok := d.pendingSync[id]; ok {
				delete(d.syncOwner, old.msgID)
			}
			d.pendingSync[id] = c
			d.syncOwner[c.msgID] = id
		}
	}
	errs := make([]error, len(ops))
	var out []*sdk.Message
	for i, op := range ops {
		if err != nil && op.applied {
			op.pubs, op.err = op.failPubs, err
		}
		out = append(out, op.pubs...)
		errs[i] = op.err
	}
	if err != nil {
		d.logger.Error("storing twin updates failed", "messages", len(ops), "error", err)
		syncs = nil
	}
	d.sendBus(ctx, out)
	d.sendCloudBatch(ctx, syncs)
	return errs
}

// parseTwinOp runs the checks that need no database; a mapper's malformed
// update gets its error result here.
func (d *DeviceTwin) parseTwinOp(msg *sdk.Message) *twinOp {
	op := &twinOp{msg: msg}
	res := msg.Router.Resource
	if strings.HasPrefix(res, devicePrefix) {
		op.deviceID = strings.TrimSuffix(strings.TrimPrefix(res, devicePrefix), suffixTwinUpdate)
		errTopic := deviceTopic("", suffixUpdateResult)
		if err := json.Unmarshal([]byte(msg.ContentString()), &op.update); err != nil {
			op.pubs = d.nonNil(d.errorMessage(errTopic, "", codeBadRequest,
				errors.New("unmarshal update request body failed, please check the request")))
			return op
		}
		if err := validateUpdate(&op.update); err != nil {
			op.pubs = d.nonNil(d.errorMessage(errTopic, "", codeBadRequest, err))
			return op
		}
		op.parsed = true
		return op
	}
	op.fromCld = true
	op.deviceID = strings.TrimSuffix(strings.TrimPrefix(res, cloudDevicePrefix), cloudUpdatedSuffix)
	if err := msg.DecodeContent(&op.update); err != nil || op.update.Twin == nil {
		d.logger.Warn("cloud twin update ignored: bad content", "msg_id", msg.Header.ID, "device", op.deviceID, "error", err)
		return op
	}
	op.parsed = true
	return op
}

// applyTwinOp applies op to a copy of the device's twins and, when every key
// is accepted, makes the copy the device's. It fills op's answers and returns
// what goes to the cloud.
func (d *DeviceTwin) applyTwinOp(op *twinOp, dev *batchDevice) (map[string]*twinwire.Twin, error) {
	u := &op.update
	resultTopic := deviceTopic(op.deviceID, suffixUpdateResult)
	if !dev.found {
		if op.fromCld {
			d.logger.Warn("cloud twin update for an unknown device", "device", op.deviceID, "msg_id", op.msg.Header.ID)
		} else {
			op.pubs = d.nonNil(d.errorMessage(resultTopic, u.EventID, codeNotFound,
				fmt.Errorf("update rejected: the device %s does not exist", op.deviceID)))
		}
		return nil, nil
	}
	work := make(map[string]*store.Twin, len(dev.twins))
	for k, t := range dev.twins {
		c := *t
		work[k] = &c
	}
	ch := newChange(work)
	conflicts := map[string]*twinwire.Twin{}
	now := nowMS()
	for _, key := range sortedKeys(u.Twin) {
		var err error
		if op.fromCld {
			err = d.applyCloudTwin(ch, conflicts, op.deviceID, key, u.Twin[key], now)
		} else {
			err = applyMapperTwin(ch, op.deviceID, key, u.Twin[key], now)
		}
		if err != nil {
			var br badRequest
			if errors.As(err, &br) && !op.fromCld {
				op.pubs = d.nonNil(d.errorMessage(resultTopic, u.EventID, codeBadRequest, br.error))
				return nil, err
			}
			op.err = err
			return nil, err
		}
	}
	dev.twins = work
	for k := range ch.dirty {
		dev.dirty[k] = true
	}
	op.applied = true
	if op.fromCld {
		if len(ch.doc) > 0 {
			eventID := u.EventID
			if eventID == "" {
				eventID = twinwire.NewEvent().EventID
			}
			op.pubs = append(op.pubs, d.busMessage(deviceTopic(op.deviceID, suffixDocument), twinwire.TwinDocument{BaseMessage: twinwire.NewBase(eventID), Twin: ch.doc}))
		}
		op.pubs = d.nonNil(append(op.pubs, d.deltaMessage(op.deviceID, work))...)
		return conflicts, nil
	}
	op.pubs = append(op.pubs, d.busMessage(resultTopic, twinwire.TwinUpdate{BaseMessage: twinwire.NewBase(u.EventID), Twin: ch.result}))
	if len(ch.doc) > 0 {
		op.pubs = append(op.pubs, d.busMessage(deviceTopic(op.deviceID, suffixDocument), twinwire.TwinDocument{BaseMessage: twinwire.NewBase(u.EventID), Twin: ch.doc}))
	}
	op.pubs = d.nonNil(append(op.pubs, d.deltaMessage(op.deviceID, work))...)
	op.failPubs = d.nonNil(d.errorMessage(resultTopic, u.EventID, codeInternal, errors.New("storing the twin update failed")))
	return ch.sync, nil
}

// loadBatchDevice reads a device and its twins, or takes them from the
// cache. The twins are never changed in place (applyTwinOp works on copies),
// so the cache can share them.
func (d *DeviceTwin) loadBatchDevice(ctx context.Context, tx *store.Tx, id string) (*batchDevice, error) {
	dev := &batchDevice{dirty: map[string]bool{}}
	if twins, ok := d.twins[id]; ok {
		dev.found, dev.twins = true, twins
		return dev, nil
	}
	row, err := tx.Device(ctx, id)
	if err != nil || row == nil {
		return dev, err
	}
	dev.found = true
	dev.twins, err = tx.Twins(ctx, id)
	return dev, err
}

// loadSync reads the device's unconfirmed edge_updated, once per batch, so
// that this batch's changes are merged into it in order. The last one
// written is usually cached.
func (d *DeviceTwin) loadSync(ctx context.Context, tx *store.Tx, dev *batchDevice, id string) error {
	if dev.syncLoaded {
		return nil
	}
	dev.syncLoaded = true
	if p, ok := d.pendingSync[id]; ok {
		dev.sync = maps.Clone(p.twins)
		if dev.sync == nil {
			dev.sync = map[string]*twinwire.Twin{}
		}
		return nil
	}
	dev.sync = map[string]*twinwire.Twin{}
	old, err := tx.PendingByKey(ctx, "twin:"+id)
	if err != nil || old == nil {
		return err
	}
	var m sdk.Message
	var c twinwire.TwinUpdate
	if json.Unmarshal(old.Message, &m) == nil && m.DecodeContent(&c) == nil {
		for k, v := range c.Twin {
			dev.sync[k] = v
		}
	}
	return nil
}

// nonNil drops the nil messages (those that failed to encode, logged).
func (d *DeviceTwin) nonNil(msgs ...*sdk.Message) []*sdk.Message {
	out := msgs[:0]
	for _, m := range msgs {
		if m != nil {
			out = append(out, m)
		}
	}
	return out
}

// sendBus hands messages to eventbus in one round trip.
func (d *DeviceTwin) sendBus(ctx context.Context, msgs []*sdk.Message) {
	if len(msgs) == 0 {
		return
	}
	if err := d.host.SendBatch(ctx, busModule, msgs); err != nil {
		d.logger.Warn("publish failed", "messages", len(msgs), "error", err)
	}
}

// sendCloudBatch sends stored syncs in one round trip, unless the cloud is
// known to be away. They were stored as sent; those that did not go are
// marked unsent, so that the sync loop sends them at its next tick.
func (d *DeviceTwin) sendCloudBatch(ctx context.Context, msgs []*sdk.Message) {
	if len(msgs) == 0 || d.offline.Load() {
		return
	}
	err := d.host.SendBatch(ctx, cloudModule, msgs)
	if err == nil {
		return
	}
	var be *sdk.BatchError
	unsent := make([]string, 0, len(msgs))
	for i, m := range msgs {
		if !errors.As(err, &be) || i >= len(be.Errs) || be.Errs[i] != nil {
			unsent = append(unsent, m.Header.ID)
		}
	}
	d.logger.Warn("sync to the cloud failed; it will be resent", "messages", len(unsent), "error", err)
	if err := d.db.MarkSentAll(ctx, unsent, 0); err != nil {
		d.logger.Warn("mark syncs unsent", "error", err)
	}
}

// cachedSync is a device's stored, unconfirmed edge_updated: its msg_id
// and content (twins nil: none is pending).
type cachedSync struct {
	msgID string
	twins map[string]*twinwire.Twin
}

// dropCaches forgets the cached twins and syncs.
func (d *DeviceTwin) dropCaches() {
	clear(d.twins)
	clear(d.pendingSync)
	clear(d.syncOwner)
}

// confirmed updates the sync cache for syncs the cloud confirmed.
func (d *DeviceTwin) confirmed(msgIDs []string) {
	for _, id := range msgIDs {
		if dev, ok := d.syncOwner[id]; ok {
			delete(d.syncOwner, id)
			d.pendingSync[dev] = cachedSync{} // none pending
		}
	}
}
