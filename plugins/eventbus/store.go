package eventbus

import (
	"database/sql"
	"fmt"
	"sort"

	_ "github.com/mattn/go-sqlite3" // database/sql driver "sqlite3"
)

// topicStore keeps the MQTT topics the cloud subscribed, so that they are
// subscribed again after a restart. One row per topic filter.
type topicStore struct {
	db *sql.DB
}

func openTopicStore(file string) (*topicStore, error) {
	// WAL keeps readers and the writer apart; synchronous=FULL makes a row
	// durable before Handle returns, so an acknowledged subscribe survives
	// a crash of the process or the machine.
	dsn := "file:" + file + "?_journal_mode=WAL&_synchronous=FULL&_busy_timeout=5000&_foreign_keys=on"
	db, err := sql.Open("sqlite3", dsn)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", file, err)
	}
	db.SetMaxOpenConns(1)
	if _, err := db.Exec(`CREATE TABLE IF NOT EXISTS sub_topics (
		topic TEXT PRIMARY KEY NOT NULL,
		created_ms INTEGER NOT NULL
	)`); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("create table in %s: %w", file, err)
	}
	return &topicStore{db: db}, nil
}

// add records topic; adding a topic twice is not an error.
func (s *topicStore) add(topic string, nowMS int64) error {
	if _, err := s.db.Exec(`INSERT OR IGNORE INTO sub_topics (topic, created_ms) VALUES (?, ?)`, topic, nowMS); err != nil {
		return fmt.Errorf("store topic %q: %w", topic, err)
	}
	return nil
}

// remove forgets topic; removing an unknown topic is not an error.
func (s *topicStore) remove(topic string) error {
	if _, err := s.db.Exec(`DELETE FROM sub_topics WHERE topic = ?`, topic); err != nil {
		return fmt.Errorf("delete topic %q: %w", topic, err)
	}
	return nil
}

// list returns every stored topic, sorted.
func (s *topicStore) list() ([]string, error) {
	rows, err := s.db.Query(`SELECT topic FROM sub_topics`)
	if err != nil {
		return nil, fmt.Errorf("list topics: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var t string
		if err := rows.Scan(&t); err != nil {
			return nil, fmt.Errorf("list topics: %w", err)
		}
		out = append(out, t)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list topics: %w", err)
	}
	sort.Strings(out)
	return out, nil
}

func (s *topicStore) close() error { return s.db.Close() }
