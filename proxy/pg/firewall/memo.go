package firewall

import (
	"hash/maphash"
	"sync/atomic"
)

// shapeMemo is a small direct-mapped table in front of the verdict cache,
// for shape keys. A hit costs one seeded hash of the shape and one
// comparison of the whole shape; a ristretto Get costs two hashes, a
// sharded lock and a push of the key into its admission statistics, about
// as much as lexing the statement. A slot holds the last shape that
// hashed to it; entries are immutable and replaced whole, and the full
// comparison means a hit is never another shape's verdict.
type shapeMemo struct {
	seed  maphash.Seed
	slots [memoSlots]atomic.Pointer[memoEntry]
}

const memoSlots = 1 << 12

type memoEntry struct {
	shape string
	v     *Verdict
}

func newShapeMemo() *shapeMemo { return &shapeMemo{seed: maphash.MakeSeed()} }

// get returns the verdict remembered for shape, if any, and the shape's
// hash for put.
func (m *shapeMemo) get(shape []byte) (*Verdict, uint64) {
	h := maphash.Bytes(m.seed, shape)
	if e := m.slots[h%memoSlots].Load(); e != nil && e.shape == string(shape) {
		return e.v, h
	}
	return nil, h
}

// put remembers v for shape, whose hash get returned.
func (m *shapeMemo) put(h uint64, shape string, v *Verdict) {
	m.slots[h%memoSlots].Store(&memoEntry{shape: shape, v: v})
}
