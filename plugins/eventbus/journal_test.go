package eventbus

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/edgehive/edgehive/sdk"
)

func journalReqs(ids ...string) []*journalReq {
	var out []*journalReq
	for _, id := range ids {
		m := sdk.NewMessage("")
		m.Header.ID = id
		out = append(out, &journalReq{item: &inbound{msg: m}, topic: "t/" + id, payload: []byte("p-" + id)})
	}
	return out
}

func ids(recs []journalRecord) []string {
	var out []string
	for _, r := range recs {
		out = append(out, r.id)
	}
	return out
}

// What was written and not handed on comes back after a restart, in order;
// a torn record at the end is ignored; segments below the watermark go.
func TestJournalFile(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "j")
	old := segmentBytes
	segmentBytes = 200
	t.Cleanup(func() { segmentBytes = old })

	j, backlog, err := openJournal(dir)
	if err != nil || len(backlog) != 0 {
		t.Fatalf("open: %v %v", backlog, err)
	}
	reqs := journalReqs("a", "b", "c", "d", "e", "f")
	if err := j.write(ctx, reqs[:3]); err != nil {
		t.Fatal(err)
	}
	if err := j.write(ctx, reqs[3:]); err != nil {
		t.Fatal(err)
	}
	for i, r := range reqs {
		if r.item.seq != int64(i+1) {
			t.Fatalf("seq of %d: %d", i, r.item.seq)
		}
	}
	j.handedOn(reqs[1].item.seq) // a and b handed on
	if err := j.flush(ctx); err != nil {
		t.Fatal(err)
	}
	// A torn record: the writer was killed in the middle of a write.
	if _, err := j.f.Write([]byte{40, 0, 0, 0, 1, 2}); err != nil {
		t.Fatal(err)
	}
	_ = j.close()

	j, backlog, err = openJournal(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got := ids(backlog); len(got) != 4 || got[0] != "c" || got[3] != "f" || string(backlog[0].payload) != "p-c" || backlog[0].topic != "t/c" {
		t.Fatalf("backlog after restart: %v", got)
	}
	more := journalReqs("g")
	if err := j.write(ctx, more); err != nil {
		t.Fatal(err)
	}
	if more[0].item.seq != 7 {
		t.Fatalf("seq after restart: %d", more[0].item.seq)
	}
	j.handedOn(7)
	if err := j.flush(ctx); err != nil {
		t.Fatal(err)
	}
	_ = j.close()
	segs, _ := filepath.Glob(filepath.Join(dir, "*.log"))
	if len(segs) != 1 {
		t.Errorf("segments left: %v", segs)
	}
	_, backlog, err = openJournal(dir)
	if err != nil || len(backlog) != 0 {
		t.Fatalf("everything was handed on, backlog %v, %v", ids(backlog), err)
	}
	if _, err := os.Stat(dir); err != nil {
		t.Fatal(err)
	}
}

// FuzzJournalSegment: whatever a segment file holds (a torn or damaged
// write), reading it never panics and returns only whole records.
func FuzzJournalSegment(f *testing.F) {
	good := appendRecord(nil, recData, 1, []byte{1, 0}, []byte("i"), []byte{1, 0, 0, 0}, []byte("t"), []byte("payload"))
	good = appendRecord(good, recMark, 1)
	f.Add(good)
	f.Add(good[:len(good)-3])
	f.Add([]byte{255, 255, 255, 255, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		name := filepath.Join(t.TempDir(), "1.log")
		if err := os.WriteFile(name, data, 0o600); err != nil {
			t.Fatal(err)
		}
		recs, _, last, err := readSegment(name)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range recs {
			if r.seq > last {
				t.Fatalf("record %d above the last seq %d", r.seq, last)
			}
		}
	})
}

// Two instances at once (a live upgrade): the second gets its own directory;
// whatever either left is taken over by the next instance, and the extra
// directory goes.
func TestJournalTwoInstances(t *testing.T) {
	ctx := context.Background()
	base := filepath.Join(t.TempDir(), "j")
	a, _, err := openJournal(base)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.write(ctx, journalReqs("a1", "a2")); err != nil {
		t.Fatal(err)
	}
	b, _, err := openJournal(base)
	if err != nil {
		t.Fatal(err)
	}
	if b.dir == a.dir {
		t.Fatalf("both instances in %s", a.dir)
	}
	if err := b.write(ctx, journalReqs("b1")); err != nil {
		t.Fatal(err)
	}
	_ = a.close() // both die with messages not handed on
	_ = b.close()

	c, backlog, err := openJournal(base)
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()
	if c.dir != base {
		t.Errorf("the next instance is in %s, want %s", c.dir, base)
	}
	got := ids(backlog)
	if len(got) != 3 || got[0] != "a1" || got[1] != "a2" || got[2] != "b1" {
		t.Fatalf("backlog %v, want [a1 a2 b1]", got)
	}
	if _, err := os.Stat(b.dir); !os.IsNotExist(err) {
		t.Errorf("the second instance's directory is still there: %v", err)
	}
	// The adopted message is in c's own journal now.
	_ = c.close()
	_, backlog, err = openJournal(base)
	if err != nil || len(backlog) != 3 {
		t.Fatalf("after another restart: %v %v", ids(backlog), err)
	}
}
