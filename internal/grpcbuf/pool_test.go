package grpcbuf

import "testing"

func TestPoolTiers(t *testing.T) {
	p := New()
	for _, n := range []int{0, 1, 256, 257, 4096, 5000, 1 << 20, 3<<20 + 1} {
		b := p.Get(n)
		if len(*b) != n {
			t.Fatalf("Get(%d) has length %d", n, len(*b))
		}
		if c := cap(*b); c < n || c&(c-1) != 0 {
			t.Fatalf("Get(%d) capacity %d is not a power of two >= n", n, c)
		}
		p.Put(b)
		again := p.Get(n)
		if cap(*again) < n {
			t.Fatalf("reused buffer too small for %d", n)
		}
	}
	odd := make([]byte, 300)
	p.Put(&odd) // foreign buffers are ignored, not pooled
	if b := p.Get(300); cap(*b) == 300 {
		t.Fatal("a foreign buffer was handed out")
	}
}
