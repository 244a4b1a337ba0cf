package teddy

import "golang.org/x/sys/cpu"

// haveSIMD selects the AVX2 kernel; GODEBUG=cpu.avx2=off turns it off.
var haveSIMD = cpu.X86.HasAVX2

// bitmapsSIMD is the AVX2 kernel: for blocks*64 positions from p it writes one candidate
// and one digit word per 64 bytes. It reads Width-1 bytes past the last block.
//
//go:noescape
func bitmapsSIMD(m *Masks, p *byte, blocks int, cands, digits *uint64)
