package traffic

// flowIndex finds live flows by key. It is an open-addressing table with linear probing
// whose 16-byte slots hold the flow's keyed hash beside its pointer: a lookup reads one
// slot (usually one cache line) and touches a flow only when the full 64-bit hash
// matches. Go's map costs a control-word probe plus the slot on separate lines, and with
// tens of thousands of flows live every extra line is a cache miss per packet. Deletion
// shifts the following cluster back (no tombstones), so probe lengths stay short under
// the constant churn of short flows. The load factor stays at or below one half.
type flowIndex struct {
	slots []flowSlot
	mask  uint64
	n     int
}

type flowSlot struct {
	hash uint64
	f    *flow
}

func newFlowIndex(capacity int) flowIndex {
	size := 16
	for size < 2*capacity {
		size <<= 1
	}
	return flowIndex{slots: make([]flowSlot, size), mask: uint64(size - 1)}
}

// get returns the flow with key k and hash h, or nil.
func (x *flowIndex) get(h uint64, k *flowKey) *flow {
	for i := h & x.mask; ; i = (i + 1) & x.mask {
		s := &x.slots[i]
		if s.f == nil {
			return nil
		}
		if s.hash == h && s.f.key.equal(k) {
			return s.f
		}
	}
}

// put adds f (not present) under f.hash.
func (x *flowIndex) put(f *flow) {
	if 2*(x.n+1) > len(x.slots) {
		x.grow()
	}
	i := f.hash & x.mask
	for x.slots[i].f != nil {
		i = (i + 1) & x.mask
	}
	x.slots[i] = flowSlot{f.hash, f}
	x.n++
}

func (x *flowIndex) grow() {
	old := x.slots
	x.slots = make([]flowSlot, 2*len(old))
	x.mask = uint64(len(x.slots) - 1)
	for _, s := range old {
		if s.f == nil {
			continue
		}
		i := s.hash & x.mask
		for x.slots[i].f != nil {
			i = (i + 1) & x.mask
		}
		x.slots[i] = s
	}
}

// del removes f, which must be present.
func (x *flowIndex) del(f *flow) {
	i := f.hash & x.mask
	for x.slots[i].f != f {
		if x.slots[i].f == nil {
			return // not present: nothing to do
		}
		i = (i + 1) & x.mask
	}
	// Backward-shift deletion: move later members of the cluster into the hole unless
	// their home slot lies cyclically after the hole.
	for j := (i + 1) & x.mask; x.slots[j].f != nil; j = (j + 1) & x.mask {
		home := x.slots[j].hash & x.mask
		if (j-home)&x.mask >= (j-i)&x.mask {
			x.slots[i] = x.slots[j]
			i = j
		}
	}
	x.slots[i] = flowSlot{}
	x.n--
}

// len reports how many flows are indexed.
func (x *flowIndex) len() int { return x.n }

// equal compares keys field by field: the compiler turns == on the 38-byte struct into a
// call to memequal, this into a few inlined word compares.
func (k *flowKey) equal(o *flowKey) bool {
	return k.loAddr == o.loAddr && k.hiAddr == o.hiAddr && k.loPort == o.loPort && k.hiPort == o.hiPort && k.proto == o.proto
}
