package devicetwin

import (
	"context"
	"encoding/json"
	"strings"
	"time"

	"github.com/edgehive/edgehive/internal/twinwire"
	"github.com/edgehive/edgehive/plugins/devicetwin/store"
	"github.com/edgehive/edgehive/sdk"
)

// States a mapper may report, compared case-insensitively.
var knownStates = map[string]bool{"online": true, "offline": true, "ok": true, "unknown": true, "unhealthy": true}

// stateUpdate handles D/state/update: the state is stored, echoed to the
// mapper and synced to the cloud.
func (d *DeviceTwin) stateUpdate(ctx context.Context, deviceID, payload string) error {
	var s twinwire.StateUpdate
	if err := json.Unmarshal([]byte(payload), &s); err != nil {
		d.logger.Warn("state update ignored: bad payload", "device", deviceID, "error", err)
		return nil
	}
	lower := strings.ToLower(s.State)
	if !knownStates[lower] {
		d.logger.Warn("state update ignored: unknown state", "device", deviceID, "state", s.State)
		return nil
	}
	lastOnline := ""
	if lower == "online" || lower == "ok" {
		lastOnline = time.Now().UTC().Format(time.RFC3339)
	}
	var (
		result   []byte
		sync     *sdk.Message
		notFound bool
	)
	err := d.db.Update(ctx, func(tx *store.Tx) error {
		dev, err := tx.Device(ctx, deviceID)
		if err != nil {
			return err
		}
		if dev == nil {
			notFound = true
			return nil
		}
		if _, err := tx.SetState(ctx, deviceID, s.State, lastOnline); err != nil {
			return err
		}
		result, err = json.Marshal(twinwire.StateResult{BaseMessage: twinwire.NewEvent(),
			Device: twinwire.DeviceState{Name: dev.Name, State: s.State, LastOnline: lastOnline}})
		if err != nil {
			return err
		}
		sync = sdk.NewMessage("").BuildRouter(cloudSource, sdk.WireGroupResource, cloudDevicePrefix+deviceID+stateUpdateSuffix, sdk.OpUpdate)
		if err := sync.FillBody(string(result)); err != nil {
			return err
		}
		return putPending(ctx, tx, "state:"+deviceID, deviceID, sync, 0)
	})
	if err != nil {
		return err
	}
	if notFound {
		d.logger.Warn("state update for an unknown device", "device", deviceID)
		return nil
	}
	d.publish(ctx, deviceTopic(deviceID, suffixStateResult), json.RawMessage(result))
	d.sendCloud(ctx, sync)
	return nil
}

// membershipGet handles N/membership/get: the node's devices with their
// attributes, without twins.
func (d *DeviceTwin) membershipGet(ctx context.Context, topic, payload string) error {
	var req twinwire.BaseMessage
	if err := json.Unmarshal([]byte(payload), &req); err != nil {
		d.logger.Warn("membership get ignored: bad payload", "topic", topic, "error", err)
		return nil
	}
	out := []twinwire.Device{}
	err := d.db.View(ctx, func(tx *store.Tx) error {
		devs, err := tx.Devices(ctx)
		if err != nil {
			return err
		}
		for _, dv := range devs {
			attrs, err := tx.Attrs(ctx, dv.ID)
			if err != nil {
				return err
			}
			out = append(out, twinwire.Device{ID: dv.ID, Name: dv.Name, Description: dv.Description, State: dv.State,
				LastOnline: dv.LastOnline, Attributes: attrViews(attrs)})
		}
		return nil
	})
	if err != nil {
		return err
	}
	d.publish(ctx, topic+"/result", twinwire.MembershipGetResult{BaseMessage: twinwire.NewBase(req.EventID), Devices: out})
	return nil
}

// membershipUpdate handles the cloud's added and removed devices, then tells
// mappers about each one on N/membership/updated.
func (d *DeviceTwin) membershipUpdate(ctx context.Context, msg *sdk.Message) error {
	var u twinwire.MembershipUpdate
	if err := msg.DecodeContent(&u); err != nil {
		d.logger.Warn("membership update ignored: bad content", "msg_id", msg.Header.ID, "error", err)
		return nil
	}
	var added, removed []twinwire.Device
	d.dropCaches() // devices come and go, twins of added ones may be stored
	err := d.db.Update(ctx, func(tx *store.Tx) error {
		for _, dv := range u.AddDevices {
			if dv.ID == "" || len(dv.ID) > 64 {
				d.logger.Warn("added device ignored: id must be 1 to 64 characters", "id", dv.ID)
				continue
			}
			if dv.Name == "" {
				dv.Name = dv.ID[strings.LastIndex(dv.ID, "/")+1:]
			}
			if err := d.storeDevice(ctx, tx, dv); err != nil {
				return err
			}
			added = append(added, dv)
		}
		for _, dv := range u.RemoveDevices {
			if dv.ID == "" {
				continue
			}
			if err := tx.DeleteDevice(ctx, dv.ID); err != nil {
				return err
			}
			removed = append(removed, dv)
		}
		return nil
	})
	if err != nil {
		return err
	}
	topic := nodePrefix + d.host.NodeName() + "/membership/updated"
	for _, dv := range added {
		dv.Twin = withoutVersions(dv.Twin)
		d.publish(ctx, topic, twinwire.MembershipUpdate{BaseMessage: twinwire.NewEvent(), AddDevices: []twinwire.Device{dv}})
	}
	for _, dv := range removed {
		d.publish(ctx, topic, twinwire.MembershipUpdate{BaseMessage: twinwire.NewEvent(), RemoveDevices: []twinwire.Device{dv}})
	}
	d.logger.Info("membership updated", "added", len(added), "removed", len(removed))
	return nil
}

// storeDevice stores an added device with the attributes and twins the cloud sent.
func (d *DeviceTwin) storeDevice(ctx context.Context, tx *store.Tx, dv twinwire.Device) error {
	if err := tx.PutDevice(ctx, store.Device{ID: dv.ID, Name: dv.Name, Description: dv.Description, State: dv.State}); err != nil {
		return err
	}
	for name, a := range dv.Attributes {
		if a == nil {
			continue
		}
		row := store.Attr{DeviceID: dv.ID, Name: name, Value: a.Value, Optional: true}
		if a.Optional != nil {
			row.Optional = *a.Optional
		}
		if a.Metadata != nil {
			row.AttrType, row.Metadata = a.Metadata.Type, typeMetaJSON(a.Metadata.Type)
		}
		if err := tx.PutAttr(ctx, row); err != nil {
			return err
		}
	}
	if len(dv.Twin) == 0 {
		return nil
	}
	have, err := tx.Twins(ctx, dv.ID)
	if err != nil {
		return err
	}
	now := nowMS()
	for name, t := range dv.Twin {
		if t == nil || validateKey(name) != nil || (have[name] != nil && !have[name].Deleted()) {
			continue // twins the edge has are kept; the cloud changes them with cloud_updated
		}
		row := &store.Twin{DeviceID: dv.ID, Name: name, Optional: true, AttrType: typeString}
		if t.Optional != nil {
			row.Optional = *t.Optional
		}
		if t.Metadata != nil && validType(t.Metadata.Type) {
			row.AttrType = t.Metadata.Type
		}
		row.Metadata = typeMetaJSON(row.AttrType)
		if t.Expected != nil && t.Expected.Value != nil {
			v := *t.Expected.Value
			row.Expected, row.ExpectedTS = &v, now
		}
		if t.Actual != nil && t.Actual.Value != nil {
			v := *t.Actual.Value
			row.Actual, row.ActualTS = &v, now
		}
		if t.ExpectedVersion != nil {
			row.ExpectedVersion = store.Version(*t.ExpectedVersion)
		}
		if t.ActualVersion != nil {
			row.ActualVersion = store.Version(*t.ActualVersion)
		}
		if err := tx.PutTwin(ctx, row); err != nil {
			return err
		}
	}
	return nil
}

func attrViews(attrs []store.Attr) map[string]*twinwire.Attr {
	if len(attrs) == 0 {
		return nil
	}
	out := map[string]*twinwire.Attr{}
	for _, a := range attrs {
		opt := a.Optional
		m := &twinwire.Attr{Value: a.Value, Optional: &opt}
		if a.AttrType != "" {
			m.Metadata = &twinwire.TypeMeta{Type: a.AttrType}
		}
		out[a.Name] = m
	}
	return out
}

func withoutVersions(twins map[string]*twinwire.Twin) map[string]*twinwire.Twin {
	if twins == nil {
		return nil
	}
	out := make(map[string]*twinwire.Twin, len(twins))
	for k, t := range twins {
		if t == nil {
			out[k] = nil
			continue
		}
		c := *t
		c.ExpectedVersion, c.ActualVersion = nil, nil
		out[k] = &c
	}
	return out
}
