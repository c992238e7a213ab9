package sdktest_test

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/edgehive/edgehive/sdk"
	"github.com/edgehive/edgehive/sdk/sdktest"
)

// batcher is a recorder that takes messages in batches.
type batcher struct {
	recorder
	batches [][]string
}

var _ sdk.BatchHandler = (*batcher)(nil)

func (b *batcher) HandleBatch(_ context.Context, msgs []*sdk.Message) []error {
	var ids []string
	errs := make([]error, len(msgs))
	for i, m := range msgs {
		ids = append(ids, m.Header.ID)
		if m.Router.Operation == "fail" {
			errs[i] = errors.New("failed")
		}
	}
	b.batches = append(b.batches, ids)
	return errs
}

func bmsg(id, op string) *sdk.Message {
	m := sdk.NewMessage("").BuildRouter("src", "user", "r/"+id, op)
	m.Header.ID = id
	return m
}

func TestDeliverBatch(t *testing.T) {
	b := &batcher{}
	h := sdktest.New(t, b, sdktest.Options{})
	errs := h.DeliverBatch(bmsg("m1", "x"), bmsg("m2", "fail"), bmsg("m1", "x"), bmsg("m3", "x"))
	if len(b.batches) != 1 || !slices.Equal(b.batches[0], []string{"m1", "m2", "m3"}) {
		t.Fatalf("batches %v, want one [m1 m2 m3] (the duplicate left out)", b.batches)
	}
	if errs[0] != nil || errs[1] == nil || errs[2] != nil || errs[3] != nil {
		t.Fatalf("errors %v", errs)
	}
	// The failed message may come again; the others are duplicates now.
	h.DeliverBatch(bmsg("m2", "x"), bmsg("m3", "x"))
	if len(b.batches) != 2 || !slices.Equal(b.batches[1], []string{"m2"}) {
		t.Fatalf("second batch %v, want [m2]", b.batches)
	}

	// A module without HandleBatch gets Handle, one message at a time.
	rec := &recorder{}
	h2 := sdktest.New(t, rec, sdktest.Options{Name: "plain"})
	h2.DeliverBatch(bmsg("p1", "x"), bmsg("p2", "x"))
	if !slices.Equal(rec.handledIDs(), []string{"p1", "p2"}) {
		t.Fatalf("Handle got %v", rec.handledIDs())
	}
}
