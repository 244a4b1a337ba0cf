package traffic

// prefetch asks the CPU to bring the two cache lines at p into cache, without waiting for
// them. The capture reader issues it for the next block while the current packet is
// analysed: the first read of every block header was 13% of analyze's time, a cache miss
// on a mapped file too large for any cache. Go has no prefetch intrinsic.
//
//go:noescape
func prefetch(p *byte)
