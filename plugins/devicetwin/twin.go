package devicetwin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"

	"github.com/edgehive/edgehive/internal/twinwire"
	"github.com/edgehive/edgehive/plugins/devicetwin/store"
	"github.com/edgehive/edgehive/sdk"
)

// Result topic suffixes.
const (
	suffixUpdateResult = "/twin/update/result"
	suffixDelta        = "/twin/update/delta"
	suffixDocument     = "/twin/update/document"
	suffixGetResult    = "/twin/get/result"
	suffixStateResult  = "/state/update/result"
)

// Result codes of error results.
const (
	codeBadRequest = 400
	codeNotFound   = 404
	codeInternal   = 500
)

// badRequest marks an update refused as a whole; nothing is stored.
type badRequest struct{ error }

// twinChange collects what one update did.
type twinChange struct {
	result map[string]*twinwire.Twin    // to the mapper (update/result)
	doc    map[string]*twinwire.TwinDoc // update/document
	sync   map[string]*twinwire.Twin    // to the cloud (edge_updated), with versions
	twins  map[string]*store.Twin
	dirty  map[string]bool // twins to write
}

func newChange(twins map[string]*store.Twin) *twinChange {
	return &twinChange{result: map[string]*twinwire.Twin{}, doc: map[string]*twinwire.TwinDoc{}, sync: map[string]*twinwire.Twin{},
		twins: twins, dirty: map[string]bool{}}
}

// applyMapperTwin applies one key of a mapper's update to ch.twins and the store.
// It changes ch.twins only; the batch writes the twins in ch.dirty.
func applyMapperTwin(ch *twinChange, deviceID, key string, in *twinwire.Twin, now int64) error {
	cur := ch.twins[key]
	exists := cur != nil && !cur.Deleted()
	if in == nil { // delete an optional twin
		if !exists || !cur.Optional {
			return nil
		}
		last := twinView(cur, false)
		softDelete(cur)
		cur.ExpectedVersion.Edge++
		cur.ActualVersion.Edge++
		ch.result[key] = nil
		ch.doc[key] = &twinwire.TwinDoc{Last: last}
		ch.sync[key] = deletedSync(cur)
		ch.dirty[key] = true
		return nil
	}
	typ := resolvedType(cur, exists, in)
	if !validType(typ) {
		return badRequest{fmt.Errorf("the type %q of key %s is not one of string, int, integer, float, boolean", typ, key)}
	}
	for _, v := range []*twinwire.TwinValue{in.Expected, in.Actual} {
		if v != nil && v.Value != nil {
			if err := validateTyped(key, typ, *v.Value); err != nil {
				return badRequest{err}
			}
		}
	}
	cur, last := ch.upsert(deviceID, key, in, typ)
	opt := cur.Optional
	res := &twinwire.Twin{Optional: &opt, Metadata: &twinwire.TypeMeta{Type: typ}}
	syn := &twinwire.Twin{Optional: &opt, Metadata: &twinwire.TypeMeta{Type: typ}}
	if in.Expected != nil && in.Expected.Value != nil {
		v := *in.Expected.Value
		cur.Expected, cur.ExpectedTS = &v, now
		cur.ExpectedVersion.Edge++
		res.Expected = valueOf(&v, now)
		syn.Expected, syn.ExpectedVersion = res.Expected, versionOf(cur.ExpectedVersion)
	}
	if in.Actual != nil && in.Actual.Value != nil {
		v := *in.Actual.Value
		cur.Actual, cur.ActualTS = &v, now
		cur.ActualVersion.Edge++
		res.Actual = valueOf(&v, now)
		syn.Actual, syn.ActualVersion = res.Actual, versionOf(cur.ActualVersion)
	}
	ch.result[key] = res
	ch.doc[key] = &twinwire.TwinDoc{Last: last, Current: twinView(cur, false)}
	ch.sync[key] = syn
	ch.dirty[key] = true
	return nil
}

// resolvedType is the type an update gives a twin: its own, else the
// existing twin's, else string.
func resolvedType(cur *store.Twin, exists bool, in *twinwire.Twin) string {
	if in.Metadata != nil && in.Metadata.Type != "" {
		return in.Metadata.Type
	}
	if exists {
		return cur.AttrType
	}
	return typeString
}

// upsert readies key's twin for a checked update: an existing twin, with
// its state before the change as last (nil for a new one), or a new optional
// one; a deleted twin is revived, so its versions carry on. The update's
// optional flag and type are applied.
func (ch *twinChange) upsert(deviceID, key string, in *twinwire.Twin, typ string) (cur *store.Twin, last *twinwire.Twin) {
	cur = ch.twins[key]
	if cur != nil && !cur.Deleted() {
		last = twinView(cur, false)
	} else {
		if cur == nil {
			cur = &store.Twin{DeviceID: deviceID, Name: key}
			ch.twins[key] = cur
		}
		cur.Optional = true
	}
	if in.Optional != nil {
		cur.Optional = *in.Optional
	}
	cur.AttrType, cur.Metadata = typ, typeMetaJSON(typ)
	return cur, last
}

// applyCloudTwin applies one key of a cloud update. Entries with a stale
// expected_version are not applied; the edge's twin goes back to the cloud.
// Like applyMapperTwin it changes ch.twins only.
func (d *DeviceTwin) applyCloudTwin(ch *twinChange, conflicts map[string]*twinwire.Twin, deviceID, key string, in *twinwire.Twin, now int64) error {
	if err := validateKey(key); err != nil {
		d.logger.Warn("cloud twin entry ignored", "device", deviceID, "error", err)
		return nil
	}
	cur := ch.twins[key]
	exists := cur != nil && !cur.Deleted()
	if in == nil || (in.Metadata != nil && in.Metadata.Type == typeDeleted) {
		if !exists {
			return nil
		}
		last := twinView(cur, false)
		softDelete(cur)
		if in != nil && in.ExpectedVersion != nil {
			cur.ExpectedVersion = store.Version(*in.ExpectedVersion)
		} else {
			cur.ExpectedVersion.Cloud++
		}
		ch.doc[key] = &twinwire.TwinDoc{Last: last}
		ch.dirty[key] = true
		return nil
	}
	if in.Expected == nil || in.Expected.Value == nil {
		d.logger.Debug("cloud twin entry without an expected value ignored", "device", deviceID, "key", key)
		return nil
	}
	value := *in.Expected.Value
	typ := resolvedType(cur, exists, in)
	if err := validateValue(key, value); err != nil {
		d.logger.Warn("cloud twin entry ignored", "device", deviceID, "error", err)
		return nil
	}
	if err := validateTyped(key, typ, value); err != nil {
		d.logger.Warn("cloud twin entry ignored", "device", deviceID, "error", err)
		return nil
	}
	var ver store.Version
	if cur != nil {
		ver = cur.ExpectedVersion
	}
	if req := in.ExpectedVersion; req != nil {
		if ver.Cloud > req.Cloud || ver.Edge > req.Edge {
			d.logger.Info("stale cloud twin value not applied", "device", deviceID, "key", key,
				"have", ver, "got", *req)
			if exists {
				conflicts[key] = twinView(cur, true)
			}
			return nil
		}
		ver = store.Version(*req)
	} else {
		ver.Cloud++
	}
	cur, last := ch.upsert(deviceID, key, in, typ)
	cur.Expected, cur.ExpectedTS, cur.ExpectedVersion = &value, now, ver
	ch.doc[key] = &twinwire.TwinDoc{Last: last, Current: twinView(cur, false)}
	ch.dirty[key] = true
	return nil
}

// deltaMessage tells the mapper the desired values its twins have not
// reached; nil when there are none.
func (d *DeviceTwin) deltaMessage(deviceID string, twins map[string]*store.Twin) *sdk.Message {
	delta := twinwire.TwinDelta{Twin: map[string]*twinwire.Twin{}, Delta: map[string]string{}}
	for key, t := range twins {
		if t.Deleted() || t.Expected == nil {
			continue
		}
		delta.Twin[key] = twinView(t, false)
		if *t.Expected != "" && (t.Actual == nil || *t.Actual != *t.Expected) {
			delta.Delta[key] = *t.Expected
		}
	}
	if len(delta.Delta) == 0 {
		return nil
	}
	delta.BaseMessage = twinwire.NewEvent()
	return d.busMessage(deviceTopic(deviceID, suffixDelta), delta)
}

// twinGet handles D/twin/get: every twin that is not deleted.
func (d *DeviceTwin) twinGet(ctx context.Context, deviceID, payload string) error {
	topic := deviceTopic(deviceID, suffixGetResult)
	var req twinwire.BaseMessage
	if err := json.Unmarshal([]byte(payload), &req); err != nil {
		d.publishError(ctx, topic, "", codeBadRequest, errors.New("unmarshal get request body failed, please check the request"))
		return nil
	}
	var twins map[string]*store.Twin
	notFound := false
	err := d.db.View(ctx, func(tx *store.Tx) error {
		dev, err := tx.Device(ctx, deviceID)
		if err != nil || dev == nil {
			notFound = dev == nil
			return err
		}
		twins, err = tx.Twins(ctx, deviceID)
		return err
	})
	switch {
	case err != nil:
		d.publishError(ctx, topic, req.EventID, codeInternal, errors.New("reading the twins failed"))
		return err
	case notFound:
		d.publishError(ctx, topic, req.EventID, codeNotFound, fmt.Errorf("device %s not found while getting twin", deviceID))
		return nil
	}
	out := map[string]*twinwire.Twin{}
	for key, t := range twins {
		if !t.Deleted() {
			out[key] = twinView(t, false)
		}
	}
	d.publish(ctx, topic, twinwire.TwinUpdate{BaseMessage: twinwire.NewBase(req.EventID), Twin: out})
	return nil
}

func (d *DeviceTwin) publishError(ctx context.Context, topic, eventID string, code int, reason error) {
	if m := d.errorMessage(topic, eventID, code, reason); m != nil {
		if err := d.host.Send(ctx, busModule, m); err != nil {
			d.logger.Warn("publish failed", "topic", topic, "error", err)
		}
	}
}

// errorMessage is an error result for the mapper.
func (d *DeviceTwin) errorMessage(topic, eventID string, code int, reason error) *sdk.Message {
	d.logger.Debug("error result", "topic", topic, "code", code, "reason", reason)
	return d.busMessage(topic, twinwire.ErrorResult{BaseMessage: twinwire.NewBase(eventID), Code: code, Reason: reason.Error()})
}

func putPending(ctx context.Context, tx *store.Tx, key, deviceID string, msg *sdk.Message, sentAt int64) error {
	raw, err := json.Marshal(msg)
	if err != nil {
		return err
	}
	return tx.PutPending(ctx, store.Pending{MsgID: msg.Header.ID, Key: key, DeviceID: deviceID, Message: raw, Created: nowMS(), SentAt: sentAt})
}

// mergeSync combines two unconfirmed changes of one twin: the newer one wins
// field by field, a deletion wins outright.
func mergeSync(old, nw *twinwire.Twin) *twinwire.Twin {
	if old == nil || nw == nil || (nw.Metadata != nil && nw.Metadata.Type == typeDeleted) {
		return nw
	}
	if old.Metadata != nil && old.Metadata.Type == typeDeleted {
		return nw
	}
	out := *nw
	if out.Expected == nil {
		out.Expected, out.ExpectedVersion = old.Expected, old.ExpectedVersion
	}
	if out.Actual == nil {
		out.Actual, out.ActualVersion = old.Actual, old.ActualVersion
	}
	return &out
}

// twinView is the JSON form of a stored twin; versions only toward the cloud.
func twinView(t *store.Twin, versions bool) *twinwire.Twin {
	opt := t.Optional
	m := &twinwire.Twin{Optional: &opt, Metadata: &twinwire.TypeMeta{Type: t.AttrType}}
	if t.Expected != nil {
		m.Expected = valueOf(t.Expected, t.ExpectedTS)
		if versions {
			m.ExpectedVersion = versionOf(t.ExpectedVersion)
		}
	}
	if t.Actual != nil {
		m.Actual = valueOf(t.Actual, t.ActualTS)
		if versions {
			m.ActualVersion = versionOf(t.ActualVersion)
		}
	}
	return m
}

// deletedSync tells the cloud a twin was deleted.
func deletedSync(t *store.Twin) *twinwire.Twin {
	opt := t.Optional
	return &twinwire.Twin{Optional: &opt, Metadata: &twinwire.TypeMeta{Type: typeDeleted},
		ExpectedVersion: versionOf(t.ExpectedVersion), ActualVersion: versionOf(t.ActualVersion)}
}

func softDelete(t *store.Twin) {
	t.Expected, t.Actual, t.ExpectedTS, t.ActualTS = nil, nil, 0, 0
	t.AttrType, t.Metadata = store.TypeDeleted, typeMetaJSON(store.TypeDeleted)
}

func valueOf(v *string, ts int64) *twinwire.TwinValue {
	s := *v
	return &twinwire.TwinValue{Value: &s, Metadata: &twinwire.ValueMeta{Timestamp: ts}}
}

func versionOf(v store.Version) *twinwire.TwinVersion { tv := twinwire.TwinVersion(v); return &tv }

func typeMetaJSON(t string) string {
	b, _ := json.Marshal(twinwire.TypeMeta{Type: t})
	return string(b)
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
