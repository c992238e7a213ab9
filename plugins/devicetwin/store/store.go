// Package store keeps devicetwin's devices, attributes, twins and the twin
// changes not yet confirmed by the cloud in SQLite. The device, device_attr and
// device_twin tables have KubeEdge's columns; sync_pending and handled_msg are
// edgehive's own.
package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"

	_ "github.com/mattn/go-sqlite3" // the sqlite3 driver
)

// Version is a twin value's version pair, stored as JSON {"cloud":n,"edge":n}.
type Version struct {
	Cloud int64 `json:"cloud"`
	Edge  int64 `json:"edge"`
}

// Device is a row of the device table.
type Device struct {
	ID          string // <namespace>/<name>
	Name        string
	Description string
	State       string
	LastOnline  string // RFC 3339, UTC; empty when not online
}

// Attr is a row of the device_attr table.
type Attr struct {
	DeviceID    string
	Name        string
	Description string
	Value       string
	Optional    bool
	AttrType    string
	Metadata    string // JSON text as received, e.g. {"type":"string"}
}

// Twin is a row of the device_twin table. A nil Expected or Actual is a NULL
// column: no value. A twin whose AttrType is "deleted" was deleted and is kept
// for its versions.
type Twin struct {
	DeviceID        string
	Name            string
	Description     string
	Expected        *string
	Actual          *string
	ExpectedTS      int64 // expected_meta {"timestamp":ms}; 0 with no value
	ActualTS        int64 // actual_meta {"timestamp":ms}
	ExpectedVersion Version
	ActualVersion   Version
	Optional        bool
	AttrType        string
	Metadata        string // JSON text, e.g. {"type":"float"}
}

// Deleted reports whether the twin was deleted.
func (t *Twin) Deleted() bool { return t.AttrType == TypeDeleted }

// TypeDeleted is the attr_type of a deleted twin.
const TypeDeleted = "deleted"

// Pending is a message to the cloud waiting for its confirmation.
type Pending struct {
	MsgID    string
	Key      string // one pending message per key, e.g. "twin:default/thermo-1"
	DeviceID string
	Message  []byte // the whole message JSON, resent as it is
	Created  int64  // Unix ms
	SentAt   int64  // Unix ms of the last send; 0 = never sent
}

const schemaSQL = `
CREATE TABLE IF NOT EXISTS device (
	id          TEXT PRIMARY KEY CHECK (length(id) <= 64),
	name        TEXT NOT NULL DEFAULT '',
	description TEXT NOT NULL DEFAULT '',
	state       TEXT NOT NULL DEFAULT '',
	last_online TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS device_attr (
	id          INTEGER PRIMARY KEY AUTOINCREMENT,
	deviceid    TEXT NOT NULL,
	name        TEXT NOT NULL,
	description TEXT NOT NULL DEFAULT '',
	value       TEXT NOT NULL DEFAULT '',
	optional    BOOLEAN NOT NULL DEFAULT 1,
	attr_type   TEXT NOT NULL DEFAULT '',
	metadata    TEXT NOT NULL DEFAULT ''
);
CREATE UNIQUE INDEX IF NOT EXISTS device_attr_key ON device_attr (deviceid, name);
CREATE TABLE IF NOT EXISTS device_twin (
	id               INTEGER PRIMARY KEY AUTOINCREMENT,
	deviceid         TEXT NOT NULL,
	name             TEXT NOT NULL,
	description      TEXT NOT NULL DEFAULT '',
	expected         TEXT,
	actual           TEXT,
	expected_meta    TEXT,
	actual_meta      TEXT,
	expected_version TEXT,
	actual_version   TEXT,
	optional         BOOLEAN NOT NULL DEFAULT 1,
	attr_type        TEXT NOT NULL DEFAULT '',
	metadata         TEXT NOT NULL DEFAULT ''
);
CREATE UNIQUE INDEX IF NOT EXISTS device_twin_key ON device_twin (deviceid, name);
CREATE TABLE IF NOT EXISTS sync_pending (
	msg_id   TEXT PRIMARY KEY,
	key      TEXT NOT NULL UNIQUE,
	deviceid TEXT NOT NULL DEFAULT '',
	message  BLOB NOT NULL,
	created  INTEGER NOT NULL,
	sent_at  INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS handled_msg (
	msg_id TEXT PRIMARY KEY,
	at     INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS handled_msg_at ON handled_msg (at);
`

// Store is the devicetwin database.
type Store struct {
	db *sql.DB
}

// Open opens (creating if needed) the database at path: WAL, a busy timeout,
// synchronous NORMAL, write transactions that take the lock at BEGIN, and a
// cache of prepared statements.
func Open(path string) (*Store, error) {
	q := url.Values{}
	q.Set("_journal_mode", "WAL")
	q.Set("_busy_timeout", "10000")
	q.Set("_synchronous", "NORMAL")
	q.Set("_txlock", "immediate")
	// The driver keeps prepared statements per connection: the twin path
	// runs the same few statements for every batch.
	q.Set("_stmt_cache_size", "64")
	dsn := "file:" + path + "?" + q.Encode()
	db, err := sql.Open("sqlite3", dsn)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	if _, err := db.Exec(schemaSQL); err != nil {
		db.Close()
		return nil, fmt.Errorf("open %s: create tables: %w", path, err)
	}
	return &Store{db: db}, nil
}

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

// Ping checks that the database answers.
func (s *Store) Ping(ctx context.Context) error {
	var n int
	return s.db.QueryRowContext(ctx, "SELECT count(*) FROM device").Scan(&n)
}

// Tx is one transaction; its methods run inside it.
type Tx struct {
	tx *sql.Tx
}

// Update runs fn in a write transaction, committed if fn returns nil.
func (s *Store) Update(ctx context.Context, fn func(*Tx) error) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	if err := fn(&Tx{tx: tx}); err != nil {
		_ = tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// View runs fn in a transaction that is rolled back afterwards.
func (s *Store) View(ctx context.Context, fn func(*Tx) error) error {
	tx, err := s.db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	return fn(&Tx{tx: tx})
}

// Device returns the device id, or nil if there is none.
func (t *Tx) Device(ctx context.Context, id string) (*Device, error) {
	d := Device{}
	err := t.tx.QueryRowContext(ctx, `SELECT id, name, description, state, last_online FROM device WHERE id = ?`, id).
		Scan(&d.ID, &d.Name, &d.Description, &d.State, &d.LastOnline)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("device %s: %w", id, err)
	}
	return &d, nil
}

// Devices returns every device, ordered by id.
func (t *Tx) Devices(ctx context.Context) ([]Device, error) {
	rows, err := t.tx.QueryContext(ctx, `SELECT id, name, description, state, last_online FROM device ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("devices: %w", err)
	}
	defer rows.Close()
	var out []Device
	for rows.Next() {
		var d Device
		if err := rows.Scan(&d.ID, &d.Name, &d.Description, &d.State, &d.LastOnline); err != nil {
			return nil, fmt.Errorf("devices: %w", err)
		}
		out = append(out, d)
	}
	return out, rows.Err()
}

// PutDevice inserts the device, or updates its name and description. State
// and last_online of an existing device are kept.
func (t *Tx) PutDevice(ctx context.Context, d Device) error {
	_, err := t.tx.ExecContext(ctx, `INSERT INTO device (id, name, description, state, last_online) VALUES (?, ?, ?, ?, ?)
		ON CONFLICT (id) DO UPDATE SET name = excluded.name, description = excluded.description`,
		d.ID, d.Name, d.Description, d.State, d.LastOnline)
	if err != nil {
		return fmt.Errorf("put device %s: %w", d.ID, err)
	}
	return nil
}

// SetState sets a device's state and last_online; false if there is no such device.
func (t *Tx) SetState(ctx context.Context, id, state, lastOnline string) (bool, error) {
	res, err := t.tx.ExecContext(ctx, `UPDATE device SET state = ?, last_online = ? WHERE id = ?`, state, lastOnline, id)
	if err != nil {
		return false, fmt.Errorf("set state of %s: %w", id, err)
	}
	n, _ := res.RowsAffected()
	return n > 0, nil
}

// DeleteDevice removes a device with its attributes, twins and pending syncs.
func (t *Tx) DeleteDevice(ctx context.Context, id string) error {
	for _, q := range []string{
		`DELETE FROM device WHERE id = ?`,
		`DELETE FROM device_attr WHERE deviceid = ?`,
		`DELETE FROM device_twin WHERE deviceid = ?`,
		`DELETE FROM sync_pending WHERE deviceid = ?`,
	} {
		if _, err := t.tx.ExecContext(ctx, q, id); err != nil {
			return fmt.Errorf("delete device %s: %w", id, err)
		}
	}
	return nil
}

// Attrs returns a device's attributes, ordered by name.
func (t *Tx) Attrs(ctx context.Context, deviceID string) ([]Attr, error) {
	rows, err := t.tx.QueryContext(ctx, `SELECT deviceid, name, description, value, optional, attr_type, metadata
		FROM device_attr WHERE deviceid = ? ORDER BY name`, deviceID)
	if err != nil {
		return nil, fmt.Errorf("attrs of %s: %w", deviceID, err)
	}
	defer rows.Close()
	var out []Attr
	for rows.Next() {
		var a Attr
		if err := rows.Scan(&a.DeviceID, &a.Name, &a.Description, &a.Value, &a.Optional, &a.AttrType, &a.Metadata); err != nil {
			return nil, fmt.Errorf("attrs of %s: %w", deviceID, err)
		}
		out = append(out, a)
	}
	return out, rows.Err()
}

// PutAttr inserts or replaces an attribute (by device and name).
func (t *Tx) PutAttr(ctx context.Context, a Attr) error {
	_, err := t.tx.ExecContext(ctx, `INSERT INTO device_attr (deviceid, name, description, value, optional, attr_type, metadata)
		VALUES (?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (deviceid, name) DO UPDATE SET description = excluded.description, value = excluded.value,
			optional = excluded.optional, attr_type = excluded.attr_type, metadata = excluded.metadata`,
		a.DeviceID, a.Name, a.Description, a.Value, a.Optional, a.AttrType, a.Metadata)
	if err != nil {
		return fmt.Errorf("put attr %s/%s: %w", a.DeviceID, a.Name, err)
	}
	return nil
}

// Twins returns a device's twins by name, deleted ones included.
func (t *Tx) Twins(ctx context.Context, deviceID string) (map[string]*Twin, error) {
	rows, err := t.tx.QueryContext(ctx, `SELECT deviceid, name, description, expected, actual, expected_meta, actual_meta,
		expected_version, actual_version, optional, attr_type, metadata FROM device_twin WHERE deviceid = ?`, deviceID)
	if err != nil {
		return nil, fmt.Errorf("twins of %s: %w", deviceID, err)
	}
	defer rows.Close()
	out := map[string]*Twin{}
	for rows.Next() {
		var (
			tw                     Twin
			expected, actual       sql.NullString
			expMeta, actMeta       sql.NullString
			expVersion, actVersion sql.NullString
		)
		if err := rows.Scan(&tw.DeviceID, &tw.Name, &tw.Description, &expected, &actual, &expMeta, &actMeta,
			&expVersion, &actVersion, &tw.Optional, &tw.AttrType, &tw.Metadata); err != nil {
			return nil, fmt.Errorf("twins of %s: %w", deviceID, err)
		}
		if expected.Valid {
			tw.Expected = &expected.String
		}
		if actual.Valid {
			tw.Actual = &actual.String
		}
		tw.ExpectedTS = metaTimestamp(expMeta)
		tw.ActualTS = metaTimestamp(actMeta)
		tw.ExpectedVersion = version(expVersion)
		tw.ActualVersion = version(actVersion)
		out[tw.Name] = &tw
	}
	return out, rows.Err()
}

// PutTwin inserts or replaces a twin (by device and name).
func (t *Tx) PutTwin(ctx context.Context, tw *Twin) error {
	var expMeta, actMeta any
	if tw.Expected != nil {
		expMeta = fmt.Sprintf(`{"timestamp":%d}`, tw.ExpectedTS)
	}
	if tw.Actual != nil {
		actMeta = fmt.Sprintf(`{"timestamp":%d}`, tw.ActualTS)
	}
	expVersion, _ := json.Marshal(tw.ExpectedVersion)
	actVersion, _ := json.Marshal(tw.ActualVersion)
	_, err := t.tx.ExecContext(ctx, `INSERT INTO device_twin (deviceid, name, description, expected, actual, expected_meta,
		actual_meta, expected_version, actual_version, optional, attr_type, metadata)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (deviceid, name) DO UPDATE SET description = excluded.description, expected = excluded.expected,
			actual = excluded.actual, expected_meta = excluded.expected_meta, actual_meta = excluded.actual_meta,
			expected_version = excluded.expected_version, actual_version = excluded.actual_version,
			optional = excluded.optional, attr_type = excluded.attr_type, metadata = excluded.metadata`,
		tw.DeviceID, tw.Name, tw.Description, nullable(tw.Expected), nullable(tw.Actual), expMeta, actMeta,
		string(expVersion), string(actVersion), tw.Optional, tw.AttrType, tw.Metadata)
	if err != nil {
		return fmt.Errorf("put twin %s/%s: %w", tw.DeviceID, tw.Name, err)
	}
	return nil
}

// PendingByKey returns the pending message for key, or nil.
func (t *Tx) PendingByKey(ctx context.Context, key string) (*Pending, error) {
	var p Pending
	err := t.tx.QueryRowContext(ctx, `SELECT msg_id, key, deviceid, message, created, sent_at FROM sync_pending WHERE key = ?`, key).
		Scan(&p.MsgID, &p.Key, &p.DeviceID, &p.Message, &p.Created, &p.SentAt)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("pending %s: %w", key, err)
	}
	return &p, nil
}

// PutPending stores p, replacing the pending message with the same key.
func (t *Tx) PutPending(ctx context.Context, p Pending) error {
	if _, err := t.tx.ExecContext(ctx, `DELETE FROM sync_pending WHERE key = ?`, p.Key); err != nil {
		return fmt.Errorf("put pending %s: %w", p.Key, err)
	}
	_, err := t.tx.ExecContext(ctx, `INSERT INTO sync_pending (msg_id, key, deviceid, message, created, sent_at) VALUES (?, ?, ?, ?, ?, ?)`,
		p.MsgID, p.Key, p.DeviceID, p.Message, p.Created, p.SentAt)
	if err != nil {
		return fmt.Errorf("put pending %s: %w", p.Key, err)
	}
	return nil
}

// MarkHandled records msgID; false if it was recorded before.
func (t *Tx) MarkHandled(ctx context.Context, msgID string, now int64) (bool, error) {
	res, err := t.tx.ExecContext(ctx, `INSERT OR IGNORE INTO handled_msg (msg_id, at) VALUES (?, ?)`, msgID, now)
	if err != nil {
		return false, fmt.Errorf("mark %s handled: %w", msgID, err)
	}
	n, _ := res.RowsAffected()
	return n > 0, nil
}

// MarkHandledAll records msgIDs (already recorded ones are kept).
func (t *Tx) MarkHandledAll(ctx context.Context, msgIDs []string, now int64) error {
	for len(msgIDs) > 0 {
		n := min(len(msgIDs), maxVars/2)
		args := make([]any, 0, 2*n)
		for _, id := range msgIDs[:n] {
			args = append(args, id, now)
		}
		q := `INSERT OR IGNORE INTO handled_msg (msg_id, at) VALUES ` + strings.TrimSuffix(strings.Repeat("(?, ?), ", n), ", ")
		if _, err := t.tx.ExecContext(ctx, q, args...); err != nil {
			return fmt.Errorf("mark %d messages handled: %w", n, err)
		}
		msgIDs = msgIDs[n:]
	}
	return nil
}

// HandledAmong returns which of msgIDs were recorded by MarkHandled.
func (t *Tx) HandledAmong(ctx context.Context, msgIDs []string) (map[string]bool, error) {
	out := map[string]bool{}
	for len(msgIDs) > 0 {
		n := min(len(msgIDs), maxVars)
		rows, err := t.tx.QueryContext(ctx, `SELECT msg_id FROM handled_msg WHERE msg_id IN (`+placeholders(n)+`)`, anys(msgIDs[:n])...)
		if err != nil {
			return nil, fmt.Errorf("handled messages: %w", err)
		}
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				rows.Close()
				return nil, fmt.Errorf("handled messages: %w", err)
			}
			out[id] = true
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return nil, fmt.Errorf("handled messages: %w", err)
		}
		msgIDs = msgIDs[n:]
	}
	return out, nil
}

// maxVars keeps a statement under SQLite's limit of bound variables.
const maxVars = 500

func placeholders(n int) string { return strings.TrimSuffix(strings.Repeat("?, ", n), ", ") }

func anys(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}

// Handled reports whether msgID was recorded by MarkHandled.
func (s *Store) Handled(ctx context.Context, msgID string) (bool, error) {
	var n int
	if err := s.db.QueryRowContext(ctx, `SELECT count(*) FROM handled_msg WHERE msg_id = ?`, msgID).Scan(&n); err != nil {
		return false, fmt.Errorf("handled %s: %w", msgID, err)
	}
	return n > 0, nil
}

// PruneHandled forgets message ids recorded before the time before (Unix ms).
func (s *Store) PruneHandled(ctx context.Context, before int64) error {
	_, err := s.db.ExecContext(ctx, `DELETE FROM handled_msg WHERE at < ?`, before)
	return err
}

// Pending returns every pending message, oldest first.
func (s *Store) Pending(ctx context.Context) ([]Pending, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT msg_id, key, deviceid, message, created, sent_at FROM sync_pending ORDER BY created, msg_id`)
	if err != nil {
		return nil, fmt.Errorf("pending: %w", err)
	}
	defer rows.Close()
	var out []Pending
	for rows.Next() {
		var p Pending
		if err := rows.Scan(&p.MsgID, &p.Key, &p.DeviceID, &p.Message, &p.Created, &p.SentAt); err != nil {
			return nil, fmt.Errorf("pending: %w", err)
		}
		out = append(out, p)
	}
	return out, rows.Err()
}

// MarkSent records that the pending message msgID was sent at (Unix ms).
func (s *Store) MarkSent(ctx context.Context, msgID string, at int64) error {
	_, err := s.db.ExecContext(ctx, `UPDATE sync_pending SET sent_at = ? WHERE msg_id = ?`, at, msgID)
	if err != nil {
		return fmt.Errorf("mark %s sent: %w", msgID, err)
	}
	return nil
}

// MarkSentAll records that the pending messages msgIDs were sent at (Unix ms).
func (s *Store) MarkSentAll(ctx context.Context, msgIDs []string, at int64) error {
	for len(msgIDs) > 0 {
		n := min(len(msgIDs), maxVars)
		args := append([]any{at}, anys(msgIDs[:n])...)
		if _, err := s.db.ExecContext(ctx, `UPDATE sync_pending SET sent_at = ? WHERE msg_id IN (`+placeholders(n)+`)`, args...); err != nil {
			return fmt.Errorf("mark %d messages sent: %w", n, err)
		}
		msgIDs = msgIDs[n:]
	}
	return nil
}

// ConfirmAll removes the pending messages msgIDs and returns how many there were.
func (s *Store) ConfirmAll(ctx context.Context, msgIDs []string) (int64, error) {
	var total int64
	for len(msgIDs) > 0 {
		n := min(len(msgIDs), maxVars)
		res, err := s.db.ExecContext(ctx, `DELETE FROM sync_pending WHERE msg_id IN (`+placeholders(n)+`)`, anys(msgIDs[:n])...)
		if err != nil {
			return total, fmt.Errorf("confirm %d messages: %w", n, err)
		}
		c, _ := res.RowsAffected()
		total += c
		msgIDs = msgIDs[n:]
	}
	return total, nil
}

// Confirm removes the pending message msgID; false if there was none.
func (s *Store) Confirm(ctx context.Context, msgID string) (bool, error) {
	res, err := s.db.ExecContext(ctx, `DELETE FROM sync_pending WHERE msg_id = ?`, msgID)
	if err != nil {
		return false, fmt.Errorf("confirm %s: %w", msgID, err)
	}
	n, _ := res.RowsAffected()
	return n > 0, nil
}

// Update and View on the whole store are the usual way in; these helpers read
// outside a transaction for callers that need one row.

// Device reads one device outside a transaction.
func (s *Store) Device(ctx context.Context, id string) (*Device, error) {
	var d *Device
	err := s.View(ctx, func(tx *Tx) error {
		var err error
		d, err = tx.Device(ctx, id)
		return err
	})
	return d, err
}

// Twins reads one device's twins outside a transaction.
func (s *Store) Twins(ctx context.Context, deviceID string) (map[string]*Twin, error) {
	var tw map[string]*Twin
	err := s.View(ctx, func(tx *Tx) error {
		var err error
		tw, err = tx.Twins(ctx, deviceID)
		return err
	})
	return tw, err
}

func nullable(s *string) any {
	if s == nil {
		return nil
	}
	return *s
}

func metaTimestamp(s sql.NullString) int64 {
	if !s.Valid || s.String == "" {
		return 0
	}
	var m struct {
		Timestamp int64 `json:"timestamp"`
	}
	_ = json.Unmarshal([]byte(s.String), &m)
	return m.Timestamp
}

func version(s sql.NullString) Version {
	var v Version
	if s.Valid && s.String != "" {
		_ = json.Unmarshal([]byte(s.String), &v)
	}
	return v
}
