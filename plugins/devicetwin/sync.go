package devicetwin

import (
	"context"
	"encoding/json"
	"time"

	"github.com/edgehive/edgehive/internal/twinwire"
	"github.com/edgehive/edgehive/sdk"
)

// handledTTL is how long ids of handled twin updates are remembered to drop
// redeliveries.
const handledTTL = time.Hour

// connection follows edgehub's cloud connection events on node/connection.
func (d *DeviceTwin) connection(ctx context.Context, op, content string) {
	if op == opDisconnect || content == contentDisconnected {
		if !d.offline.Swap(true) {
			d.logger.Info("cloud disconnected: twin syncs stay queued")
		}
		return
	}
	if op != opConnect {
		return
	}
	d.offline.Store(false)
	d.logger.Info("cloud connected: resending queued twin syncs")
	d.requestDetail(ctx)
	select {
	case d.kick <- struct{}{}:
	default:
	}
}

// requestDetail asks the cloud for this node's device membership, once per
// connect (KubeEdge resends it until answered; the cloud never answers).
func (d *DeviceTwin) requestDetail(ctx context.Context) {
	body, _ := json.Marshal(twinwire.MembershipDetail{EventType: "group_membership_event", EventID: twinwire.NewEvent().EventID,
		GroupID: d.host.NodeName(), Operation: "detail", Timestamp: nowMS()})
	m := sdk.NewMessage("").BuildRouter(cloudSource, sdk.WireGroupResource, resMembershipDetail, opGet)
	_ = m.FillBody(string(body))
	if err := d.host.Send(ctx, cloudModule, m); err != nil {
		d.logger.Warn("membership detail request failed", "error", err)
	}
}

// confirm ends the resending of the sync the cloud confirmed.
func (d *DeviceTwin) confirm(ctx context.Context, parentID string) error {
	ok, err := d.db.Confirm(ctx, parentID)
	if err != nil {
		d.dropCaches()
		return err
	}
	d.confirmed([]string{parentID})
	d.logger.Debug("cloud confirmation", "parent_msg_id", parentID, "pending", ok)
	return nil
}

// sendCloud sends a stored sync now, unless the cloud is known to be away.
func (d *DeviceTwin) sendCloud(ctx context.Context, msg *sdk.Message) {
	if d.offline.Load() {
		return
	}
	if err := d.host.Send(ctx, cloudModule, msg); err != nil {
		d.logger.Warn("sync to the cloud failed; it will be resent", "resource", msg.Router.Resource, "error", err)
		return
	}
	if err := d.db.MarkSent(ctx, msg.Header.ID, nowMS()); err != nil {
		d.logger.Warn("mark sync sent", "error", err)
	}
}

// syncLoop resends unconfirmed syncs every sync_retry_interval, and all of
// them at once on start and when the cloud comes back.
func (d *DeviceTwin) syncLoop(ctx context.Context) {
	defer close(d.done)
	interval := d.cfg.SyncRetryInterval.D()
	tick := max(interval/2, 10*time.Millisecond)
	t := time.NewTicker(tick)
	defer t.Stop()
	d.resend(ctx, true)
	lastPrune := time.Time{}
	for {
		select {
		case <-ctx.Done():
			return
		case <-d.kick:
			d.resend(ctx, true)
		case <-t.C:
			d.resend(ctx, false)
			if time.Since(lastPrune) > time.Minute {
				lastPrune = time.Now()
				if err := d.db.PruneHandled(ctx, time.Now().Add(-handledTTL).UnixMilli()); err != nil && ctx.Err() == nil {
					d.logger.Warn("prune handled ids", "error", err)
				}
			}
		}
	}
}

// resend sends the pending syncs that are due (all of them when all is set).
func (d *DeviceTwin) resend(ctx context.Context, all bool) {
	if d.offline.Load() {
		return
	}
	pending, err := d.db.Pending(ctx)
	if err != nil {
		if ctx.Err() == nil {
			d.logger.Warn("read pending syncs", "error", err)
		}
		return
	}
	due := nowMS() - d.cfg.SyncRetryInterval.D().Milliseconds()
	for _, p := range pending {
		if ctx.Err() != nil || d.offline.Load() {
			return
		}
		if !all && p.SentAt != 0 && p.SentAt > due {
			continue
		}
		var m sdk.Message
		if err := json.Unmarshal(p.Message, &m); err != nil {
			d.logger.Error("dropping unreadable pending sync", "msg_id", p.MsgID, "error", err)
			_, _ = d.db.Confirm(ctx, p.MsgID)
			continue
		}
		if err := d.host.Send(ctx, cloudModule, &m); err != nil {
			d.logger.Warn("resend to the cloud failed", "msg_id", p.MsgID, "error", err)
			return
		}
		d.logger.Debug("sync resent", "msg_id", p.MsgID, "resource", m.Router.Resource)
		if err := d.db.MarkSent(ctx, p.MsgID, nowMS()); err != nil && ctx.Err() == nil {
			d.logger.Warn("mark sync sent", "error", err)
		}
	}
}
