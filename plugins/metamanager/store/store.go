// Package store keeps metamanager's metadata in SQLite: one row per object,
// keyed by KubeEdge's resource key "<namespace>/<type>/<name>".
//
// The database runs in WAL mode with synchronous=NORMAL and a busy timeout, so
// readers never block the writer and concurrent writers wait for each other
// instead of failing. Every write is its own IMMEDIATE transaction.
package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	_ "github.com/mattn/go-sqlite3" // registers the "sqlite3" driver (cgo)
)

// BusyTimeout is how long a statement waits for a lock held by another connection.
const BusyTimeout = 5 * time.Second

// maxOpenConns bounds the pool: SQLite has one writer at a time anyway, and
// WAL readers are cheap.
const maxOpenConns = 4

// ErrNotFound is returned (wrapped) by Get when the key is not stored.
var ErrNotFound = errors.New("not found")

// ErrInvalidKey is returned (wrapped) for a key that is not "<ns>/<type>/<name>",
// or whose type differs from the type given.
var ErrInvalidKey = errors.New("invalid key")

// Object is one stored row.
type Object struct {
	Key             string
	Type            string
	Namespace       string
	Name            string
	ResourceVersion string
	Value           json.RawMessage
	Updated         time.Time
}

// Result says what Save did.
type Result int

// Results of Save.
const (
	// Inserted: the key was new.
	Inserted Result = iota + 1
	// Updated: the row was replaced by a newer (or incomparable) version.
	Updated
	// Unchanged: the stored row has the same resourceVersion; it was kept.
	// A redelivered message ends here.
	Unchanged
	// Stale: the stored row is newer; the write was ignored.
	Stale
)

func (r Result) String() string {
	switch r {
	case Inserted:
		return "inserted"
	case Updated:
		return "updated"
	case Unchanged:
		return "unchanged"
	case Stale:
		return "stale"
	}
	return "unknown(" + strconv.Itoa(int(r)) + ")"
}

// Written reports whether Save changed the row.
func (r Result) Written() bool { return r == Inserted || r == Updated }

// Store is a metadata store on one SQLite file. Its methods are safe for
// concurrent use.
type Store struct {
	db   *sql.DB
	path string
}

// Open opens (creating if needed) the database at path and brings its schema
// up to date.
func Open(ctx context.Context, path string) (*Store, error) {
	if path == "" {
		return nil, errors.New("store: open: empty path")
	}
	q := url.Values{}
	q.Set("_journal_mode", "WAL")
	q.Set("_synchronous", "NORMAL")
	q.Set("_busy_timeout", strconv.FormatInt(BusyTimeout.Milliseconds(), 10))
	q.Set("_txlock", "immediate") // writers take the lock up front: no upgrade deadlocks
	q.Set("_foreign_keys", "1")
	if strings.ContainsRune(path, '?') {
		return nil, fmt.Errorf("store: open %q: the path must not contain '?'", path)
	}
	// A plain path (not a file: URI): the driver takes the options after '?'.
	dsn := path + "?" + q.Encode()
	db, err := sql.Open("sqlite3", dsn)
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	db.SetMaxOpenConns(maxOpenConns)
	db.SetMaxIdleConns(maxOpenConns)
	s := &Store{db: db, path: path}
	if err := s.check(ctx); err != nil {
		_ = db.Close()
		return nil, err
	}
	if err := s.migrate(ctx); err != nil {
		_ = db.Close()
		return nil, err
	}
	return s, nil
}

// check verifies that the connection settings took effect.
func (s *Store) check(ctx context.Context) error {
	var mode string
	if err := s.db.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil {
		return fmt.Errorf("store: open %s: %w", s.path, err)
	}
	if !strings.EqualFold(mode, "wal") {
		return fmt.Errorf("store: open %s: journal_mode is %q, want wal", s.path, mode)
	}
	return nil
}

// Path is the database file.
func (s *Store) Path() string { return s.path }

// Close closes the database; later calls fail.
func (s *Store) Close() error {
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("store: close %s: %w", s.path, err)
	}
	return nil
}

// Ping checks that the database answers.
func (s *Store) Ping(ctx context.Context) error {
	var one int
	if err := s.db.QueryRowContext(ctx, "SELECT 1").Scan(&one); err != nil {
		return fmt.Errorf("store: ping %s: %w", s.path, err)
	}
	return nil
}

// migrations are applied in order; PRAGMA user_version counts those applied.
// Each statement is also safe to run again.
var migrations = []string{
	`CREATE TABLE IF NOT EXISTS meta (
		key              TEXT PRIMARY KEY NOT NULL,
		type             TEXT NOT NULL,
		namespace        TEXT NOT NULL,
		name             TEXT NOT NULL,
		resource_version TEXT NOT NULL DEFAULT '',
		value            TEXT NOT NULL,
		updated_at       INTEGER NOT NULL
	);
	CREATE INDEX IF NOT EXISTS meta_type_namespace ON meta(type, namespace);`,
}

// SchemaVersion is the schema version Open leaves the database at.
var SchemaVersion = len(migrations)

func (s *Store) migrate(ctx context.Context) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("store: migrate %s: %w", s.path, err)
	}
	defer func() { _ = tx.Rollback() }()
	var version int
	if err := tx.QueryRowContext(ctx, "PRAGMA user_version").Scan(&version); err != nil {
		return fmt.Errorf("store: migrate %s: read version: %w", s.path, err)
	}
	if version > len(migrations) {
		return fmt.Errorf("store: migrate %s: schema version %d is newer than this build knows (%d)", s.path, version, len(migrations))
	}
	for i := version; i < len(migrations); i++ {
		if _, err := tx.ExecContext(ctx, migrations[i]); err != nil {
			return fmt.Errorf("store: migrate %s: step %d: %w", s.path, i+1, err)
		}
	}
	if version != len(migrations) {
		// PRAGMA takes no bound parameters; the value is our own integer.
		if _, err := tx.ExecContext(ctx, fmt.Sprintf("PRAGMA user_version = %d", len(migrations))); err != nil {
			return fmt.Errorf("store: migrate %s: set version: %w", s.path, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("store: migrate %s: commit: %w", s.path, err)
	}
	return nil
}

// SplitKey splits "<namespace>/<type>/<name>"; the name may contain slashes.
func SplitKey(key string) (namespace, typ, name string, err error) {
	parts := strings.SplitN(key, "/", 3)
	if len(parts) != 3 || parts[0] == "" || parts[1] == "" || parts[2] == "" {
		return "", "", "", fmt.Errorf("%w %q: want <namespace>/<type>/<name>", ErrInvalidKey, key)
	}
	return parts[0], parts[1], parts[2], nil
}

// Newer reports whether resourceVersion a must replace stored version b, and
// whether they are equal. Both parsing as integers are compared numerically
// (as KubeEdge does); otherwise any different a replaces b, and an empty a
// always does (an object without a version cannot be ordered).
func Newer(a, b string) (newer, equal bool) {
	if a == "" || b == "" {
		return true, false
	}
	if a == b {
		return false, true
	}
	ai, aerr := strconv.ParseUint(a, 10, 64)
	bi, berr := strconv.ParseUint(b, 10, 64)
	if aerr == nil && berr == nil {
		return ai > bi, ai == bi
	}
	return true, false
}

// Save inserts or replaces the object at key. typ must be the key's type. A
// write whose resourceVersion is lower than the stored one is ignored and
// reported as Stale; an equal one as Unchanged (the stored row is kept).
func (s *Store) Save(ctx context.Context, key, typ, rv string, value json.RawMessage) (Result, error) {
	ns, ktyp, name, err := SplitKey(key)
	if err != nil {
		return 0, fmt.Errorf("store: save: %w", err)
	}
	if typ != ktyp {
		return 0, fmt.Errorf("store: save %s: %w: type %q does not match the key", key, ErrInvalidKey, typ)
	}
	if !json.Valid(value) {
		return 0, fmt.Errorf("store: save %s: value is not valid JSON", key)
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("store: save %s: %w", key, err)
	}
	defer func() { _ = tx.Rollback() }()
	var stored string
	result := Updated
	switch err := tx.QueryRowContext(ctx, `SELECT resource_version FROM meta WHERE key = ?`, key).Scan(&stored); {
	case errors.Is(err, sql.ErrNoRows):
		result = Inserted
	case err != nil:
		return 0, fmt.Errorf("store: save %s: read version: %w", key, err)
	default:
		newer, equal := Newer(rv, stored)
		switch {
		case equal:
			return Unchanged, nil
		case !newer:
			return Stale, nil
		}
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO meta (key, type, namespace, name, resource_version, value, updated_at)
		VALUES (?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT(key) DO UPDATE SET type = excluded.type, namespace = excluded.namespace, name = excluded.name,
			resource_version = excluded.resource_version, value = excluded.value, updated_at = excluded.updated_at`,
		key, typ, ns, name, rv, string(value), time.Now().UnixMilli())
	if err != nil {
		return 0, fmt.Errorf("store: save %s: %w", key, err)
	}
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("store: save %s: commit: %w", key, err)
	}
	return result, nil
}

// Replace overwrites the value of a stored row and keeps its
// resourceVersion: for a change made on the node (a status edged reported)
// that the cloud has not numbered, so that the cloud's next version still
// replaces it and an older one still does not. The error wraps ErrNotFound
// when key is not stored.
func (s *Store) Replace(ctx context.Context, key string, value json.RawMessage) error {
	if !json.Valid(value) {
		return fmt.Errorf("store: replace %s: value is not valid JSON", key)
	}
	res, err := s.db.ExecContext(ctx, `UPDATE meta SET value = ?, updated_at = ? WHERE key = ?`,
		string(value), time.Now().UnixMilli(), key)
	if err != nil {
		return fmt.Errorf("store: replace %s: %w", key, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("store: replace %s: %w", key, err)
	}
	if n == 0 {
		return fmt.Errorf("store: replace %s: %w", key, ErrNotFound)
	}
	return nil
}

// Delete removes key and reports whether it was there.
func (s *Store) Delete(ctx context.Context, key string) (bool, error) {
	res, err := s.db.ExecContext(ctx, `DELETE FROM meta WHERE key = ?`, key)
	if err != nil {
		return false, fmt.Errorf("store: delete %s: %w", key, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("store: delete %s: %w", key, err)
	}
	return n > 0, nil
}

const columns = `key, type, namespace, name, resource_version, value, updated_at`

type scanner interface{ Scan(dest ...any) error }

func scanObject(row scanner) (Object, error) {
	var (
		o       Object
		value   string
		updated int64
	)
	if err := row.Scan(&o.Key, &o.Type, &o.Namespace, &o.Name, &o.ResourceVersion, &value, &updated); err != nil {
		return Object{}, err
	}
	o.Value = json.RawMessage(value)
	o.Updated = time.UnixMilli(updated)
	return o, nil
}

// Get returns the object at key, or an error wrapping ErrNotFound.
func (s *Store) Get(ctx context.Context, key string) (Object, error) {
	o, err := scanObject(s.db.QueryRowContext(ctx, `SELECT `+columns+` FROM meta WHERE key = ?`, key))
	if errors.Is(err, sql.ErrNoRows) {
		return Object{}, fmt.Errorf("store: get %s: %w", key, ErrNotFound)
	}
	if err != nil {
		return Object{}, fmt.Errorf("store: get %s: %w", key, err)
	}
	return o, nil
}

// List returns the objects of typ in namespace ("" = every namespace), by key.
func (s *Store) List(ctx context.Context, typ, namespace string) ([]Object, error) {
	query := `SELECT ` + columns + ` FROM meta WHERE type = ?`
	args := []any{typ}
	if namespace != "" {
		query += ` AND namespace = ?`
		args = append(args, namespace)
	}
	query += ` ORDER BY key`
	rows, err := s.db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("store: list %s in %q: %w", typ, namespace, err)
	}
	defer rows.Close()
	var out []Object
	for rows.Next() {
		o, err := scanObject(rows)
		if err != nil {
			return nil, fmt.Errorf("store: list %s in %q: %w", typ, namespace, err)
		}
		out = append(out, o)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: list %s in %q: %w", typ, namespace, err)
	}
	return out, nil
}
