// Package grpcbuf is the gRPC receive-buffer pool of the host/plugin channel.
// gRPC's default pool zeroes a whole 1 MiB buffer for every message over
// 32 KiB; a channel frame is a batch of messages and is read in full, so the
// zeroing is pure cost. This pool keeps power-of-two tiers and skips it.
package grpcbuf

import (
	"math/bits"
	"sync"

	"google.golang.org/grpc/mem"
)

const (
	minShift = 8  // 256 B
	maxShift = 27 // 128 MiB, above the channel's frame limit
)

// Pool implements mem.BufferPool.
type Pool struct {
	tiers [maxShift + 1]sync.Pool
}

var _ mem.BufferPool = (*Pool)(nil)

// New returns an empty pool.
func New() *Pool { return &Pool{} }

func tier(n int) int {
	if n <= 1<<minShift {
		return minShift
	}
	return bits.Len(uint(n - 1))
}

// Get returns a buffer of length n; its contents are whatever was there.
func (p *Pool) Get(n int) *[]byte {
	t := tier(n)
	if t > maxShift {
		b := make([]byte, n)
		return &b
	}
	if v, ok := p.tiers[t].Get().(*[]byte); ok {
		*v = (*v)[:n]
		return v
	}
	b := make([]byte, n, 1<<t)
	return &b
}

// Put returns a buffer obtained from Get.
func (p *Pool) Put(b *[]byte) {
	c := cap(*b)
	if c < 1<<minShift || c&(c-1) != 0 {
		return // not one of ours
	}
	t := bits.Len(uint(c)) - 1
	if t > maxShift {
		return
	}
	p.tiers[t].Put(b)
}
