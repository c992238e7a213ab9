package eventbus

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/edgehive/edgehive/sdk"
)

// journal keeps the MQTT messages that the embedded broker accepted for the
// other modules until they were handed on. A QoS 1 or 2 publish on a bridged
// topic is written here before the broker acknowledges it (the broker calls
// OnPublish before its PUBACK), so a kill -9 of eventbus — and with it of the
// broker — loses nothing a mapper saw acknowledged: the next instance hands
// on what the journal still holds, with the same msg_id, so devicetwin drops
// a message it had already taken.
//
// It is an append-only log in segment files (<dir>/<number>.log): each write is
// one write(2) of every record of a batch of publishes — in the OS once it
// returns, which is what a killed process needs, with no fsync (a power cut
// can lose the last writes, as the broker's own state). Records carry a
// CRC; a torn record at the end is ignored. Messages are handed on in the
// order they were written, so a watermark record ("handed on up to seq N")
// says what a restart can skip; segments wholly below it are deleted.
type journal struct {
	dir  string
	lock *os.File // flock'ed lock file of dir
	reqs chan *journalReq
	kick chan struct{} // the watermark moved

	// Owned by the writer (runJournal), and by Start/Stop around it.
	f         *os.File
	size      int64
	segs      []segment // closed segments, oldest first
	cur       segment   // the one f writes
	nextSeg   int64     // number of the next segment file
	nextSeq   int64
	markWrote int64 // watermark last written
	buf       []byte

	mu   sync.Mutex
	done int64 // handed on up to this seq
}

type segment struct {
	path    string
	lastSeq int64
}

type journalReq struct {
	item    *inbound
	topic   string
	payload []byte
	err     chan error
}

// maxJournalBatch bounds the publishes of one write.
const maxJournalBatch = 256

// segmentBytes is the size at which the journal starts a new segment.
var segmentBytes int64 = 4 << 20

// Record types.
const (
	recData = 'D'
	recMark = 'W'
)

// openJournal opens the journal in the directory base — or, when another
// instance holds it (a live upgrade runs two), in a fresh directory beside
// it — and returns it with what a previous instance had not handed on. It
// also takes over every journal beside it that no instance holds (left by an
// instance that died during an upgrade): their messages are written into
// this one, then their directory is removed.
func openJournal(base string) (*journal, []journalRecord, error) {
	dir := base
	lock, err := lockDir(dir)
	if errors.Is(err, errLocked) {
		dir = fmt.Sprintf("%s.%d", base, time.Now().UnixNano())
		lock, err = lockDir(dir)
	}
	if err != nil {
		return nil, nil, err
	}
	j := &journal{dir: dir, lock: lock, reqs: make(chan *journalReq, maxJournalBatch), kick: make(chan struct{}, 1), nextSeq: 1}
	backlog, err := j.load()
	if err == nil {
		err = j.startSegment()
	}
	if err != nil {
		_ = lock.Close()
		return nil, nil, err
	}
	others, _ := filepath.Glob(base + ".*")
	if dir != base {
		others = append([]string{base}, others...)
	}
	for _, other := range others {
		if other == dir {
			continue
		}
		adopted, err := j.adopt(other)
		if err != nil {
			_ = j.close()
			return nil, nil, err
		}
		backlog = append(backlog, adopted...)
	}
	return j, backlog, nil
}

// errLocked: another instance holds the journal directory.
var errLocked = errors.New("journal in use by another instance")

// lockDir creates dir and takes its lock file; the kernel releases it when
// the process dies.
func lockDir(dir string) (*os.File, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("journal: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("journal: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		_ = f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, errLocked
		}
		return nil, fmt.Errorf("journal: lock %s: %w", dir, err)
	}
	return f, nil
}

// load reads the segments of j.dir and returns the messages not handed on.
func (j *journal) load() ([]journalRecord, error) {
	names, err := filepath.Glob(filepath.Join(j.dir, "*.log"))
	if err != nil {
		return nil, fmt.Errorf("journal: %w", err)
	}
	sort.Strings(names)
	var records []journalRecord
	var mark int64
	for _, name := range names {
		recs, marks, last, err := readSegment(name)
		if err != nil {
			return nil, err
		}
		records = append(records, recs...)
		mark = max(mark, marks)
		j.nextSeq = max(j.nextSeq, last+1)
		j.segs = append(j.segs, segment{path: name, lastSeq: last})
		if n, err := strconv.ParseInt(strings.TrimSuffix(filepath.Base(name), ".log"), 10, 64); err == nil {
			j.nextSeg = max(j.nextSeg, n+1)
		}
	}
	var backlog []journalRecord
	for _, r := range records {
		if r.seq > mark {
			backlog = append(backlog, r)
		}
	}
	j.done, j.markWrote = mark, mark
	return backlog, nil
}

// adopt moves the messages of another journal directory that no instance
// holds into j, and removes it. A directory in use is left alone.
func (j *journal) adopt(dir string) ([]journalRecord, error) {
	lock, err := lockDir(dir)
	if errors.Is(err, errLocked) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer lock.Close()
	other := &journal{dir: dir, nextSeq: 1}
	recs, err := other.load()
	if err != nil {
		return nil, err
	}
	reqs := make([]*journalReq, len(recs))
	for i, r := range recs {
		m := sdk.NewMessage("")
		m.Header.ID = r.id
		reqs[i] = &journalReq{item: &inbound{msg: m}, topic: r.topic, payload: r.payload}
	}
	if len(reqs) > 0 {
		if err := j.write(context.Background(), reqs); err != nil {
			return nil, err
		}
	}
	for i := range recs {
		recs[i].seq = reqs[i].item.seq
	}
	if err := os.RemoveAll(dir); err != nil {
		return nil, fmt.Errorf("journal: remove %s: %w", dir, err)
	}
	return recs, nil
}

// journalRecord is a message as it was journaled.
type journalRecord struct {
	seq       int64
	id, topic string
	payload   []byte
}

// readSegment returns a segment's messages, its highest watermark and its
// highest seq. It stops at the first record that is short or fails its CRC:
// the end of what a killed writer wrote.
func readSegment(name string) (recs []journalRecord, mark, last int64, err error) {
	data, err := os.ReadFile(name)
	if err != nil {
		return nil, 0, 0, fmt.Errorf("journal: %w", err)
	}
	for len(data) >= 8 {
		n := binary.LittleEndian.Uint32(data[0:4])
		sum := binary.LittleEndian.Uint32(data[4:8])
		if uint64(n) > uint64(len(data)-8) || n < 9 {
			break
		}
		body := data[8 : 8+n]
		if crc32.ChecksumIEEE(body) != sum {
			break
		}
		data = data[8+n:]
		seq := int64(binary.LittleEndian.Uint64(body[1:9]))
		switch body[0] {
		case recMark:
			mark = max(mark, seq)
		case recData:
			r, ok := decodeData(seq, body[9:])
			if !ok {
				continue
			}
			recs = append(recs, r)
			last = max(last, seq)
		}
	}
	return recs, mark, last, nil
}

func decodeData(seq int64, b []byte) (journalRecord, bool) {
	if len(b) < 2 {
		return journalRecord{}, false
	}
	idLen := int(binary.LittleEndian.Uint16(b))
	b = b[2:]
	if len(b) < idLen+4 {
		return journalRecord{}, false
	}
	id := string(b[:idLen])
	b = b[idLen:]
	topicLen := int(binary.LittleEndian.Uint32(b))
	b = b[4:]
	if len(b) < topicLen {
		return journalRecord{}, false
	}
	return journalRecord{seq: seq, id: id, topic: string(b[:topicLen]), payload: append([]byte(nil), b[topicLen:]...)}, true
}

// appendRecord adds one record to buf.
func appendRecord(buf []byte, typ byte, seq int64, fields ...[]byte) []byte {
	n := 9
	for _, f := range fields {
		n += len(f)
	}
	start := len(buf)
	buf = binary.LittleEndian.AppendUint32(buf, uint32(n))
	buf = binary.LittleEndian.AppendUint32(buf, 0) // CRC, filled below
	buf = append(buf, typ)
	buf = binary.LittleEndian.AppendUint64(buf, uint64(seq))
	for _, f := range fields {
		buf = append(buf, f...)
	}
	binary.LittleEndian.PutUint32(buf[start+4:], crc32.ChecksumIEEE(buf[start+8:]))
	return buf
}

func (j *journal) startSegment() error {
	path := filepath.Join(j.dir, fmt.Sprintf("%020d.log", j.nextSeg))
	j.nextSeg++
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("journal: %w", err)
	}
	j.f, j.size, j.cur = f, 0, segment{path: path}
	return nil
}

func (j *journal) close() error {
	var err error
	if j.f != nil {
		err = j.f.Close()
		j.f = nil
	}
	if j.lock != nil {
		_ = j.lock.Close()
		j.lock = nil
	}
	return err
}

// backlogItems rebuilds the messages a previous instance left, as they were
// first built (same msg_id).
func (b *EventBus) backlogItems(recs []journalRecord) []*inbound {
	var out []*inbound
	for _, r := range recs {
		item, err := b.inboundFor(r.topic, r.payload)
		if err != nil { // the limits changed meanwhile
			// Not marked handed on: the watermark moves in order, and passes
			// it with the next message handed on.
			b.refuse("journaled MQTT message", err, "topic", printable(r.topic))
			continue
		}
		item.msg.Header.ID = r.id
		item.seq = r.seq
		out = append(out, item)
	}
	return out
}

// write appends the messages of a batch, and the watermark when it moved,
// with one write(2).
func (j *journal) write(_ context.Context, items []*journalReq) error {
	buf := j.buf[:0]
	var lens [6]byte
	for _, r := range items {
		r.item.seq = j.nextSeq
		j.nextSeq++
		id := r.item.msg.Header.ID
		binary.LittleEndian.PutUint16(lens[0:2], uint16(len(id)))
		binary.LittleEndian.PutUint32(lens[2:6], uint32(len(r.topic)))
		buf = appendRecord(buf, recData, r.item.seq, lens[0:2], []byte(id), lens[2:6], []byte(r.topic), r.payload)
	}
	buf = j.appendMark(buf)
	j.buf = buf
	return j.append(buf)
}

// appendMark adds the watermark when it moved since last written.
func (j *journal) appendMark(buf []byte) []byte {
	j.mu.Lock()
	done := j.done
	j.mu.Unlock()
	if done > j.markWrote {
		buf = appendRecord(buf, recMark, done)
		j.markWrote = done
	}
	return buf
}

func (j *journal) append(buf []byte) error {
	if len(buf) == 0 {
		return nil
	}
	if _, err := j.f.Write(buf); err != nil {
		return fmt.Errorf("journal: write: %w", err)
	}
	j.size += int64(len(buf))
	j.cur.lastSeq = j.nextSeq - 1
	if j.size >= segmentBytes {
		_ = j.f.Close()
		j.segs = append(j.segs, j.cur)
		if err := j.startSegment(); err != nil {
			return err
		}
		// The new segment starts with the watermark, so that it alone tells
		// a restart what to skip once the old ones are gone.
		j.markWrote = 0
		if err := j.append(j.appendMark(nil)); err != nil {
			return err
		}
	}
	return nil
}

// handedOn records that the message seq was handed on; the forwarder hands
// them on in the order they were written, so everything up to seq is done.
func (j *journal) handedOn(seq int64) {
	if seq == 0 {
		return
	}
	j.mu.Lock()
	if seq > j.done {
		j.done = seq
	}
	j.mu.Unlock()
	select {
	case j.kick <- struct{}{}:
	default:
	}
}

// flush writes the watermark and deletes the segments wholly below it.
func (j *journal) flush(context.Context) error {
	if err := j.append(j.appendMark(nil)); err != nil {
		return err
	}
	j.mu.Lock()
	done := j.done
	j.mu.Unlock()
	keep := j.segs[:0]
	for _, s := range j.segs {
		if s.lastSeq <= done {
			if err := os.Remove(s.path); err != nil && !errors.Is(err, os.ErrNotExist) {
				keep = append(keep, s)
			}
			continue
		}
		keep = append(keep, s)
	}
	j.segs = keep
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
