//go:build !amd64

package teddy

const haveSIMD = false

func bitmapsSIMD(m *Masks, p *byte, blocks int, cands, digits *uint64) {
	panic("teddy: no SIMD kernel on this architecture")
}
