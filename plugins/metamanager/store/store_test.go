package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

func openTemp(t *testing.T) *Store {
	t.Helper()
	s, err := Open(context.Background(), filepath.Join(t.TempDir(), "meta.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func pod(ns, name, rv string) json.RawMessage {
	return json.RawMessage(fmt.Sprintf(`{"metadata":{"name":%q,"namespace":%q,"resourceVersion":%q}}`, name, ns, rv))
}

func TestOpenSettings(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "sub dir", "meta.db")
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	s, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("database file not at %s: %v", path, err)
	}
	for _, tt := range []struct {
		pragma, want string
	}{
		{"journal_mode", "wal"},
		{"synchronous", "1"}, // NORMAL
		{"busy_timeout", fmt.Sprint(BusyTimeout.Milliseconds())},
		{"user_version", fmt.Sprint(SchemaVersion)},
	} {
		var got string
		if err := s.db.QueryRowContext(ctx, "PRAGMA "+tt.pragma).Scan(&got); err != nil {
			t.Fatal(err)
		}
		if got != tt.want {
			t.Errorf("PRAGMA %s = %q, want %q", tt.pragma, got, tt.want)
		}
	}
	if _, err := Open(ctx, "/tmp/a?b.db"); err == nil {
		t.Fatal("a path with '?' was accepted")
	}
	if _, err := Open(ctx, ""); err == nil {
		t.Fatal("an empty path was accepted")
	}
}

func TestMigrationsIdempotent(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "meta.db")
	s, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Save(ctx, "default/pod/a", "pod", "1", pod("default", "a", "1")); err != nil {
		t.Fatal(err)
	}
	// Running every migration again changes nothing.
	for _, m := range migrations {
		if _, err := s.db.ExecContext(ctx, m); err != nil {
			t.Fatalf("migration not idempotent: %v", err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	for range 2 { // reopening keeps the data and the version
		s, err = Open(ctx, path)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Get(ctx, "default/pod/a"); err != nil {
			t.Fatal(err)
		}
		s.Close()
	}
	// A database from a newer build is refused rather than misread.
	s, _ = Open(ctx, path)
	if _, err := s.db.ExecContext(ctx, fmt.Sprintf("PRAGMA user_version = %d", SchemaVersion+1)); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if _, err := Open(ctx, path); err == nil {
		t.Fatal("opened a database with a newer schema")
	}
}

func TestNewer(t *testing.T) {
	tests := []struct {
		a, b         string
		newer, equal bool
	}{
		{"2", "1", true, false},
		{"10", "9", true, false}, // numeric, not lexical
		{"9", "10", false, false},
		{"5", "5", false, true},
		{"05", "5", false, true},
		{"", "5", true, false},
		{"5", "", true, false},
		{"abc", "abd", true, false},
		{"abc", "abc", false, true},
		{"7", "x", true, false},
	}
	for _, tt := range tests {
		newer, equal := Newer(tt.a, tt.b)
		if newer != tt.newer || equal != tt.equal {
			t.Errorf("Newer(%q, %q) = %v, %v; want %v, %v", tt.a, tt.b, newer, equal, tt.newer, tt.equal)
		}
	}
}

func TestSave(t *testing.T) {
	ctx := context.Background()
	type step struct {
		key, typ, rv string
		value        json.RawMessage
		want         Result
		wantErr      error // nil: no error; errAny: some error
		storedRV     string
	}
	errAny := errors.New("any")
	tests := []struct {
		name  string
		steps []step
	}{
		{"insert then newer", []step{
			{"default/pod/a", "pod", "1", pod("default", "a", "1"), Inserted, nil, "1"},
			{"default/pod/a", "pod", "2", pod("default", "a", "2"), Updated, nil, "2"},
		}},
		{"older is stale", []step{
			{"default/pod/a", "pod", "10", pod("default", "a", "10"), Inserted, nil, "10"},
			{"default/pod/a", "pod", "9", pod("default", "a", "9"), Stale, nil, "10"},
		}},
		{"equal is unchanged", []step{
			{"default/pod/a", "pod", "3", pod("default", "a", "3"), Inserted, nil, "3"},
			{"default/pod/a", "pod", "3", pod("default", "a", "other"), Unchanged, nil, "3"},
		}},
		{"no version replaces", []step{
			{"default/pod/a", "pod", "3", pod("default", "a", "3"), Inserted, nil, "3"},
			{"default/pod/a", "pod", "", pod("default", "a", ""), Updated, nil, ""},
		}},
		{"cluster scoped", []step{
			{"null/node/n1", "node", "7", json.RawMessage(`{"metadata":{"name":"n1"}}`), Inserted, nil, "7"},
		}},
		{"name with slashes", []step{
			{"default/device/a/b", "device", "1", json.RawMessage(`{}`), Inserted, nil, "1"},
		}},
		{"string value (a patch)", []step{
			{"default/podpatch/a", "podpatch", "", json.RawMessage(`"{\"status\":{}}"`), Inserted, nil, ""},
		}},
		{"bad key", []step{{"default/pod", "pod", "1", pod("default", "a", "1"), 0, ErrInvalidKey, ""}}},
		{"type mismatch", []step{{"default/pod/a", "secret", "1", pod("default", "a", "1"), 0, ErrInvalidKey, ""}}},
		{"invalid json", []step{{"default/pod/a", "pod", "1", json.RawMessage(`{`), 0, errAny, ""}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := openTemp(t)
			for i, st := range tt.steps {
				got, err := s.Save(ctx, st.key, st.typ, st.rv, st.value)
				switch {
				case st.wantErr == errAny && err == nil, st.wantErr != errAny && !errors.Is(err, st.wantErr):
					t.Fatalf("step %d: err = %v, want %v", i, err, st.wantErr)
				case err != nil:
					if _, gerr := s.Get(ctx, st.key); !errors.Is(gerr, ErrNotFound) {
						t.Fatalf("step %d: after a refused save Get = %v, want not found", i, gerr)
					}
					continue
				}
				if got != st.want {
					t.Fatalf("step %d: result %v, want %v", i, got, st.want)
				}
				o, err := s.Get(ctx, st.key)
				if err != nil {
					t.Fatal(err)
				}
				if o.ResourceVersion != st.storedRV {
					t.Fatalf("step %d: stored rv %q, want %q", i, o.ResourceVersion, st.storedRV)
				}
				if got.Written() && string(o.Value) != string(st.value) {
					t.Fatalf("step %d: stored %s, want %s", i, o.Value, st.value)
				}
				if time.Since(o.Updated) > time.Minute || o.Type != st.typ {
					t.Fatalf("step %d: row %+v", i, o)
				}
			}
		})
	}
}

func TestGetDeleteList(t *testing.T) {
	ctx := context.Background()
	s := openTemp(t)
	rows := []struct{ key, typ string }{
		{"default/pod/a", "pod"},
		{"default/pod/b", "pod"},
		{"kube-system/pod/c", "pod"},
		{"default/configmap/cm", "configmap"},
		{"null/node/n1", "node"},
	}
	for _, r := range rows {
		if _, err := s.Save(ctx, r.key, r.typ, "1", json.RawMessage(`{"k":"`+r.key+`"}`)); err != nil {
			t.Fatal(err)
		}
	}
	o, err := s.Get(ctx, "default/pod/b")
	if err != nil || o.Namespace != "default" || o.Name != "b" || o.Type != "pod" || string(o.Value) != `{"k":"default/pod/b"}` {
		t.Fatalf("Get = %+v, %v", o, err)
	}
	if _, err := s.Get(ctx, "default/pod/zz"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get missing = %v", err)
	}
	keys := func(objs []Object) []string {
		var out []string
		for _, o := range objs {
			out = append(out, o.Key)
		}
		return out
	}
	for _, tt := range []struct {
		typ, ns string
		want    []string
	}{
		{"pod", "", []string{"default/pod/a", "default/pod/b", "kube-system/pod/c"}},
		{"pod", "default", []string{"default/pod/a", "default/pod/b"}},
		{"pod", "nowhere", nil},
		{"node", "null", []string{"null/node/n1"}},
		{"secret", "", nil},
	} {
		got, err := s.List(ctx, tt.typ, tt.ns)
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(keys(got)) != fmt.Sprint(tt.want) {
			t.Errorf("List(%s, %q) = %v, want %v", tt.typ, tt.ns, keys(got), tt.want)
		}
	}
	for _, want := range []bool{true, false} {
		ok, err := s.Delete(ctx, "default/pod/a")
		if err != nil || ok != want {
			t.Fatalf("Delete = %v, %v; want %v", ok, err, want)
		}
	}
	if got, _ := s.List(ctx, "pod", ""); len(got) != 2 {
		t.Fatalf("after delete: %v", keys(got))
	}
}

func TestClosed(t *testing.T) {
	ctx := context.Background()
	s := openTemp(t)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Save(ctx, "default/pod/a", "pod", "1", pod("default", "a", "1")); err == nil {
		t.Fatal("Save on a closed store succeeded")
	}
	if _, err := s.Get(ctx, "default/pod/a"); err == nil || errors.Is(err, ErrNotFound) {
		t.Fatalf("Get on a closed store = %v", err)
	}
	if _, err := s.List(ctx, "pod", ""); err == nil {
		t.Fatal("List on a closed store succeeded")
	}
	if err := s.Ping(ctx); err == nil {
		t.Fatal("Ping on a closed store succeeded")
	}
}

func TestCancelledContext(t *testing.T) {
	s := openTemp(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.Save(ctx, "default/pod/a", "pod", "1", pod("default", "a", "1")); !errors.Is(err, context.Canceled) {
		t.Fatalf("Save with a cancelled context = %v", err)
	}
}

// Parallel writers on the same and on different keys, with two Store values
// on one file as two processes would have: no error, no lost write, and the
// highest version wins on a shared key.
func TestConcurrentWriters(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "meta.db")
	a, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	const writers, perWriter = 8, 50
	var wg sync.WaitGroup
	errs := make(chan error, writers*perWriter*2)
	for w := range writers {
		s := a
		if w%2 == 1 {
			s = b
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perWriter {
				rv := fmt.Sprint(w*perWriter + i + 1)
				if _, err := s.Save(ctx, "default/pod/shared", "pod", rv, pod("default", "shared", rv)); err != nil {
					errs <- err
				}
				own := fmt.Sprintf("default/pod/w%d-%d", w, i)
				if _, err := s.Save(ctx, own, "pod", "1", pod("default", own, "1")); err != nil {
					errs <- err
				}
				if _, err := s.List(ctx, "pod", "default"); err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	got, err := a.List(ctx, "pod", "")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != writers*perWriter+1 {
		t.Fatalf("%d rows, want %d", len(got), writers*perWriter+1)
	}
	o, err := b.Get(ctx, "default/pod/shared")
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprint(writers * perWriter); o.ResourceVersion != want {
		t.Fatalf("shared rv %s, want the highest %s", o.ResourceVersion, want)
	}
}

func TestReplaceKeepsVersion(t *testing.T) {
	ctx := context.Background()
	s := openTemp(t)
	if _, err := s.Save(ctx, "null/node/n1", "node", "10", json.RawMessage(`{"v":1}`)); err != nil {
		t.Fatal(err)
	}
	if err := s.Replace(ctx, "null/node/n1", json.RawMessage(`{"v":2}`)); err != nil {
		t.Fatal(err)
	}
	o, err := s.Get(ctx, "null/node/n1")
	if err != nil || string(o.Value) != `{"v":2}` || o.ResourceVersion != "10" {
		t.Fatalf("after Replace: %+v, %v", o, err)
	}
	// The cloud's ordering still holds: an older version is stale, a newer one replaces.
	if r, _ := s.Save(ctx, "null/node/n1", "node", "9", json.RawMessage(`{"v":0}`)); r != Stale {
		t.Fatalf("older save after Replace: %s", r)
	}
	if r, _ := s.Save(ctx, "null/node/n1", "node", "11", json.RawMessage(`{"v":3}`)); r != Updated {
		t.Fatalf("newer save after Replace: %s", r)
	}
	if err := s.Replace(ctx, "null/node/missing", json.RawMessage(`{}`)); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Replace of a missing key: %v", err)
	}
	if err := s.Replace(ctx, "null/node/n1", json.RawMessage(`{`)); err == nil {
		t.Fatal("Replace accepted invalid JSON")
	}
}
