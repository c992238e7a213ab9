package store

import (
	"context"
	"path/filepath"
	"reflect"
	"testing"
)

func open(t *testing.T) (*Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "twin.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, path
}

func ptr(s string) *string { return &s }

func TestPragmas(t *testing.T) {
	s, _ := open(t)
	var mode string
	if err := s.db.QueryRow("PRAGMA journal_mode").Scan(&mode); err != nil || mode != "wal" {
		t.Fatalf("journal_mode = %q, %v", mode, err)
	}
	var sync, busy int
	if err := s.db.QueryRow("PRAGMA synchronous").Scan(&sync); err != nil || sync != 1 {
		t.Fatalf("synchronous = %d, %v (want 1 = NORMAL)", sync, err)
	}
	if err := s.db.QueryRow("PRAGMA busy_timeout").Scan(&busy); err != nil || busy <= 0 {
		t.Fatalf("busy_timeout = %d, %v", busy, err)
	}
}

func TestDevices(t *testing.T) {
	ctx := context.Background()
	s, _ := open(t)
	tests := []struct {
		name string
		put  []Device
		want []Device
	}{
		{"insert", []Device{{ID: "default/a", Name: "a"}}, []Device{{ID: "default/a", Name: "a"}}},
		{"update keeps state", []Device{{ID: "default/a", Name: "a", Description: "d", State: "ignored"}},
			[]Device{{ID: "default/a", Name: "a", Description: "d", State: "online", LastOnline: "t"}}},
		{"second", []Device{{ID: "default/b", Name: "b"}},
			[]Device{{ID: "default/a", Name: "a", Description: "d", State: "online", LastOnline: "t"}, {ID: "default/b", Name: "b"}}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := s.Update(ctx, func(tx *Tx) error {
				for _, d := range tt.put {
					if err := tx.PutDevice(ctx, d); err != nil {
						return err
					}
				}
				if i == 0 {
					ok, err := tx.SetState(ctx, "default/a", "online", "t")
					if !ok || err != nil {
						t.Fatalf("SetState = %v, %v", ok, err)
					}
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			var got []Device
			_ = s.View(ctx, func(tx *Tx) error { got, err = tx.Devices(ctx); return err })
			if i == 0 {
				tt.want[0].State, tt.want[0].LastOnline = "online", "t"
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("devices = %+v, want %+v", got, tt.want)
			}
		})
	}
	if ok, err := func() (ok bool, err error) {
		err = s.Update(ctx, func(tx *Tx) error { ok, err = tx.SetState(ctx, "default/none", "online", ""); return err })
		return
	}(); ok || err != nil {
		t.Fatalf("SetState of a missing device = %v, %v", ok, err)
	}
}

func TestTwinsAttrsAndDelete(t *testing.T) {
	ctx := context.Background()
	s, path := open(t)
	twins := []*Twin{
		{DeviceID: "default/a", Name: "temp", Actual: ptr("23.5"), ActualTS: 7, ActualVersion: Version{Edge: 3},
			Optional: true, AttrType: "float", Metadata: `{"type":"float"}`},
		{DeviceID: "default/a", Name: "switch", Expected: ptr("on"), Actual: ptr(""), ExpectedTS: 1, ActualTS: 2,
			ExpectedVersion: Version{Cloud: 2, Edge: 1}, AttrType: "string", Metadata: `{"type":"string"}`},
		{DeviceID: "default/a", Name: "gone", AttrType: TypeDeleted, Optional: true, Metadata: `{"type":"deleted"}`},
	}
	err := s.Update(ctx, func(tx *Tx) error {
		if err := tx.PutDevice(ctx, Device{ID: "default/a", Name: "a"}); err != nil {
			return err
		}
		if err := tx.PutAttr(ctx, Attr{DeviceID: "default/a", Name: "model", Value: "x1", Optional: true, AttrType: "string"}); err != nil {
			return err
		}
		for _, tw := range twins {
			if err := tx.PutTwin(ctx, tw); err != nil {
				return err
			}
		}
		return tx.PutPending(ctx, Pending{MsgID: "m1", Key: "twin:default/a", DeviceID: "default/a", Message: []byte("{}"), Created: 1})
	})
	if err != nil {
		t.Fatal(err)
	}
	// Reopen: everything survives.
	s.Close()
	s2, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	got, err := s2.Twins(ctx, "default/a")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range twins {
		if !reflect.DeepEqual(got[want.Name], want) {
			t.Errorf("twin %s = %+v, want %+v", want.Name, got[want.Name], want)
		}
	}
	if !got["gone"].Deleted() || got["temp"].Deleted() {
		t.Error("Deleted() wrong")
	}
	var attrs []Attr
	_ = s2.View(ctx, func(tx *Tx) error { attrs, err = tx.Attrs(ctx, "default/a"); return err })
	if len(attrs) != 1 || attrs[0].Value != "x1" {
		t.Fatalf("attrs = %+v", attrs)
	}
	if err := s2.Update(ctx, func(tx *Tx) error { return tx.DeleteDevice(ctx, "default/a") }); err != nil {
		t.Fatal(err)
	}
	if got, _ := s2.Twins(ctx, "default/a"); len(got) != 0 {
		t.Fatalf("twins left after delete: %v", got)
	}
	if p, _ := s2.Pending(ctx); len(p) != 0 {
		t.Fatalf("pending left after delete: %v", p)
	}
	if d, _ := s2.Device(ctx, "default/a"); d != nil {
		t.Fatalf("device left: %+v", d)
	}
}

func TestPending(t *testing.T) {
	ctx := context.Background()
	s, _ := open(t)
	put := func(p Pending) {
		t.Helper()
		if err := s.Update(ctx, func(tx *Tx) error { return tx.PutPending(ctx, p) }); err != nil {
			t.Fatal(err)
		}
	}
	put(Pending{MsgID: "m1", Key: "twin:a", Message: []byte(`{"n":1}`), Created: 1})
	put(Pending{MsgID: "m2", Key: "state:a", Message: []byte(`{"n":2}`), Created: 2})
	put(Pending{MsgID: "m3", Key: "twin:a", Message: []byte(`{"n":3}`), Created: 3}) // replaces m1

	tests := []struct {
		name string
		do   func() error
		want []string
	}{
		{"replaced by key", func() error { return nil }, []string{"m2", "m3"}},
		{"mark sent", func() error { return s.MarkSent(ctx, "m2", 99) }, []string{"m2", "m3"}},
		{"confirm", func() error {
			ok, err := s.Confirm(ctx, "m3")
			if !ok {
				t.Error("Confirm(m3) = false")
			}
			return err
		}, []string{"m2"}},
		{"confirm unknown", func() error {
			ok, err := s.Confirm(ctx, "m1")
			if ok {
				t.Error("Confirm(m1) = true")
			}
			return err
		}, []string{"m2"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.do(); err != nil {
				t.Fatal(err)
			}
			ps, err := s.Pending(ctx)
			if err != nil {
				t.Fatal(err)
			}
			var ids []string
			for _, p := range ps {
				ids = append(ids, p.MsgID)
				if p.MsgID == "m2" && tt.name != "replaced by key" && p.SentAt != 99 {
					t.Errorf("sent_at = %d", p.SentAt)
				}
			}
			if !reflect.DeepEqual(ids, tt.want) {
				t.Fatalf("pending = %v, want %v", ids, tt.want)
			}
		})
	}
	var p *Pending
	_ = s.View(ctx, func(tx *Tx) error { var err error; p, err = tx.PendingByKey(ctx, "state:a"); return err })
	if p == nil || string(p.Message) != `{"n":2}` {
		t.Fatalf("PendingByKey = %+v", p)
	}
}

func TestHandled(t *testing.T) {
	ctx := context.Background()
	s, _ := open(t)
	for i, want := range []bool{true, false} {
		var first bool
		err := s.Update(ctx, func(tx *Tx) error { var err error; first, err = tx.MarkHandled(ctx, "m", 10); return err })
		if err != nil || first != want {
			t.Fatalf("MarkHandled #%d = %v, %v", i, first, err)
		}
	}
	if ok, _ := s.Handled(ctx, "m"); !ok {
		t.Fatal("Handled = false")
	}
	if err := s.PruneHandled(ctx, 11); err != nil {
		t.Fatal(err)
	}
	if ok, _ := s.Handled(ctx, "m"); ok {
		t.Fatal("Handled after prune")
	}
}
