package eventbus

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// journal keeps the MQTT messages that the embedded broker accepted for the
// other modules until they were handed on. A QoS 1 or 2 publish on a bridged
// topic is written here before the broker acknowledges it (the broker calls
// OnPublish before its PUBACK), so a kill -9 of eventbus — and with it of the
// broker — loses nothing a mapper saw acknowledged: the next instance hands
// on what the journal still holds, with the same msg_id, so devicetwin drops
// a message it had already taken. Writes of publishes that arrive together
// share one commit.
type journal struct {
	db   *sql.DB
	reqs chan *journalReq

	mu   sync.Mutex
	done []int64       // rows handed on, deleted with the next write or flush
	kick chan struct{} // something to delete
}

type journalReq struct {
	item    *inbound
	topic   string
	payload []byte
	err     chan error
}

// maxJournalBatch bounds the publishes of one commit.
const maxJournalBatch = 256

func openJournal(file string) (*journal, error) {
	// synchronous=NORMAL: a commit is in the OS before OnPublish returns, which
	// is what a killed process needs; one fsync per publish would cap the rate.
	dsn := "file:" + file + "?_journal_mode=WAL&_synchronous=NORMAL&_busy_timeout=5000&_stmt_cache_size=16"
	db, err := sql.Open("sqlite3", dsn)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", file, err)
	}
	db.SetMaxOpenConns(1)
	// No index but the rowid: a commit of appended rows touches few pages.
	if _, err := db.Exec(`CREATE TABLE IF NOT EXISTS mqtt_journal (
		seq     INTEGER PRIMARY KEY,
		msg_id  TEXT NOT NULL,
		topic   TEXT NOT NULL,
		payload BLOB NOT NULL
	)`); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("create table mqtt_journal in %s: %w", file, err)
	}
	return &journal{db: db, reqs: make(chan *journalReq, maxJournalBatch), kick: make(chan struct{}, 1)}, nil
}

func (j *journal) close() error { return j.db.Close() }

// backlog returns what a previous instance left, oldest first, rebuilt as
// it was first built (same msg_id).
func (b *EventBus) journalBacklog(ctx context.Context) ([]*inbound, error) {
	rows, err := b.journal.db.QueryContext(ctx, `SELECT seq, msg_id, topic, payload FROM mqtt_journal ORDER BY seq`)
	if err != nil {
		return nil, fmt.Errorf("read the journal: %w", err)
	}
	defer rows.Close()
	var out []*inbound
	for rows.Next() {
		var seq int64
		var id, topic string
		var payload []byte
		if err := rows.Scan(&seq, &id, &topic, &payload); err != nil {
			return nil, fmt.Errorf("read the journal: %w", err)
		}
		item, err := b.inboundFor(topic, payload)
		if err != nil { // the limits changed meanwhile
			b.refuse("journaled MQTT message", err, "topic", printable(topic))
			b.journal.handedOn(seq)
			continue
		}
		item.msg.Header.ID = id
		item.seq = seq
		out = append(out, item)
	}
	return out, rows.Err()
}

// write stores items, and forgets the messages handed on meanwhile, in one
// transaction.
func (j *journal) write(ctx context.Context, items []*journalReq) error {
	tx, err := j.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("journal: begin: %w", err)
	}
	done := j.takeDone()
	if err := deleteIDs(ctx, tx, done); err != nil {
		_ = tx.Rollback()
		j.giveBack(done)
		return err
	}
	for _, r := range items {
		res, err := tx.ExecContext(ctx, `INSERT INTO mqtt_journal (msg_id, topic, payload) VALUES (?, ?, ?)`,
			r.item.msg.Header.ID, r.topic, r.payload)
		if err == nil {
			r.item.seq, err = res.LastInsertId()
		}
		if err != nil {
			_ = tx.Rollback()
			j.giveBack(done)
			return fmt.Errorf("journal: insert: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		j.giveBack(done)
		return fmt.Errorf("journal: commit: %w", err)
	}
	return nil
}

func (j *journal) takeDone() []int64 {
	j.mu.Lock()
	defer j.mu.Unlock()
	ids := j.done
	j.done = nil
	return ids
}

func (j *journal) giveBack(ids []int64) {
	j.mu.Lock()
	j.done = append(ids, j.done...)
	j.mu.Unlock()
}

type execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

func deleteIDs(ctx context.Context, db execer, ids []int64) error {
	for len(ids) > 0 {
		n := min(len(ids), 500)
		args := make([]any, n)
		for i, id := range ids[:n] {
			args[i] = id
		}
		q := `DELETE FROM mqtt_journal WHERE seq IN (` + strings.TrimSuffix(strings.Repeat("?,", n), ",") + `)`
		if _, err := db.ExecContext(ctx, q, args...); err != nil {
			return fmt.Errorf("journal: delete: %w", err)
		}
		ids = ids[n:]
	}
	return nil
}

// handedOn marks a message for deletion with the next write or flush, and
// wakes the writer so that an idle journal is flushed too.
func (j *journal) handedOn(seq int64) {
	j.mu.Lock()
	j.done = append(j.done, seq)
	j.mu.Unlock()
	select {
	case j.kick <- struct{}{}:
	default:
	}
}

// flush deletes the messages handed on since the last write or flush.
func (j *journal) flush(ctx context.Context) error {
	ids := j.takeDone()
	if err := deleteIDs(ctx, j.db, ids); err != nil {
		j.giveBack(ids)
		return err
	}
	return nil
}

// runJournal is the journal's writer: it first queues what a previous
// instance left, then commits the publishes that arrive, together when they
// arrive together, and queues them in order for the forwarder.
func (b *EventBus) runJournal(backlog []*inbound) {
	for _, it := range backlog {
		b.journalAck(it)
		select {
		case b.queue <- it:
		case <-b.ctx.Done():
			return
		}
	}
	var batch []*journalReq
	for {
		select {
		case <-b.ctx.Done():
			return
		case <-b.journal.kick:
			// Let a publish arriving now carry the deletions in its commit.
			runtime.Gosched()
			if len(b.journal.reqs) == 0 {
				if err := b.journal.flush(b.ctx); err != nil && b.ctx.Err() == nil {
					b.logger.Warn("journal", "error", err) // kept: deleted with a later write
				}
			}
			continue
		case r := <-b.journal.reqs:
			batch = append(batch[:0], r)
		}
	more:
		for len(batch) < maxJournalBatch {
			select {
			case r := <-b.journal.reqs:
				batch = append(batch, r)
			default:
				break more
			}
		}
		err := b.journal.write(b.ctx, batch)
		for _, r := range batch {
			if err == nil {
				select {
				case b.queue <- r.item:
				case <-b.ctx.Done():
					err = b.ctx.Err() // stored: the next instance hands it on
				}
			}
			r.err <- err
		}
	}
}

// journalAck makes an item's acknowledgement a deletion from the journal.
func (b *EventBus) journalAck(it *inbound) {
	it.ack = func() { b.journal.handedOn(it.seq) }
}

// bridgeHook is the embedded broker's side of eventbus: every publish on a
// topic eventbus bridges is handed to the forwarder from inside the broker,
// journaled first when its QoS is above 0.
type bridgeHook struct {
	mqtt.HookBase
	bus *EventBus
}

func (h *bridgeHook) ID() string { return "edgehive-bridge" }

func (h *bridgeHook) Provides(b byte) bool { return b == mqtt.OnPublish }

// OnPublish runs in the publishing client's goroutine before the broker
// acknowledges the publish. Refusing the packet (the journal cannot be
// written, eventbus stops) leaves the publish unacknowledged, so the client
// sends it again.
func (h *bridgeHook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	b := h.bus
	topic := pk.TopicName
	if !b.subscribedTo(topic) {
		return pk, nil
	}
	b.stats.received.Add(1)
	item, err := b.inboundFor(topic, pk.Payload)
	if err != nil {
		b.refuse("MQTT message", err, "topic", printable(topic), "bytes", len(pk.Payload), "client", cl.ID)
		return pk, nil
	}
	if pk.FixedHeader.Qos == 0 {
		item.ack = func() {}
		b.enqueue(item)
		return pk, nil
	}
	b.journalAck(item)
	r := &journalReq{item: item, topic: topic, payload: pk.Payload, err: make(chan error, 1)}
	select {
	case b.journal.reqs <- r:
	case <-b.ctx.Done():
		return pk, packets.ErrRejectPacket
	}
	select {
	case err = <-r.err:
	case <-b.ctx.Done(): // the writer is gone; journaled or not, it is not acknowledged
		err = b.ctx.Err()
	}
	if err != nil {
		if !errors.Is(err, context.Canceled) {
			b.logger.Error("journaling an MQTT message failed; not acknowledged", "topic", printable(topic), "error", err)
		}
		return pk, packets.ErrRejectPacket
	}
	return pk, nil
}

// enqueue queues a QoS 0 message, waiting for room at most enqueueTimeout.
func (b *EventBus) enqueue(item *inbound) {
	select {
	case b.queue <- item:
		return
	default:
	}
	ctx, cancel := context.WithTimeout(b.ctx, enqueueTimeout)
	defer cancel()
	select {
	case b.queue <- item:
	case <-ctx.Done():
		if b.ctx.Err() == nil {
			b.drop()
			b.logger.Error("dropping a QoS 0 MQTT message: the queue to the other modules is full", "topic", item.msg.Router.Resource, "queue", cap(b.queue))
		}
	}
}
