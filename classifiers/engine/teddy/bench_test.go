package teddy

import (
	"bytes"
	"strings"
	"testing"
)

func benchLits() []Literal {
	var ls []Literal
	for _, s := range []string{"mrn", "medical record", "med rec", "record #", "record no", "chart #", "chart no",
		"patient id", "pt id", "patient #", "patient no", "client id"} {
		ls = append(ls, Literal{Text: s, Fold: true})
	}
	return ls
}

var roster = []byte(strings.Repeat("Sample123,Jordan,03/14/1967,123-45-6789,(503) 555-1234,M123456789,SSN verified at intake\n", 2000))

// BenchmarkFindWindow is one keyword question over a 56-byte window, as MRN asks per
// digit run.
func BenchmarkFindWindow(b *testing.B) {
	m, _ := New(benchLits(), Options{})
	i := 0
	for b.Loop() {
		m.Find(roster, i, i+56)
		i = (i + 97) % (len(roster) - 200)
	}
}

// BenchmarkBitmaps is the whole-buffer pass alone.
func BenchmarkBitmaps(b *testing.B) {
	m, _ := New(benchLits(), Options{})
	cw, dw := make([]uint64, 64), make([]uint64, 64)
	b.SetBytes(int64(len(roster)))
	for b.Loop() {
		for base := 0; base < len(roster); base += 4096 {
			m.Bitmaps(roster, base, cw, dw)
		}
	}
}

// BenchmarkFindWindowGo is BenchmarkFindWindow with the Go kernel.
func BenchmarkFindWindowGo(b *testing.B) {
	m, _ := New(benchLits(), Options{NoSIMD: true})
	i := 0
	for b.Loop() {
		m.Find(roster, i, i+56)
		i = (i + 97) % (len(roster) - 200)
	}
}

// BenchmarkBitmapsGo is BenchmarkBitmaps with the Go kernel.
func BenchmarkBitmapsGo(b *testing.B) {
	m, _ := New(benchLits(), Options{NoSIMD: true})
	cw, dw := make([]uint64, 64), make([]uint64, 64)
	b.SetBytes(int64(len(roster)))
	for b.Loop() {
		for base := 0; base < len(roster); base += 4096 {
			m.Bitmaps(roster, base, cw, dw)
		}
	}
}

// BenchmarkIndexByteBaseline is the runtime's vector IndexByte over the same bytes, as a
// yardstick for the kernel under the same load.
func BenchmarkIndexByteBaseline(b *testing.B) {
	b.SetBytes(int64(len(roster)))
	for b.Loop() {
		if bytes.IndexByte(roster, 0xfe) >= 0 {
			b.Fatal("found")
		}
	}
}

// BenchmarkOneBlock is the fixed cost of one kernel call (a short keyword window).
func BenchmarkOneBlock(b *testing.B) {
	if !haveSIMD {
		b.Skip("no SIMD kernel")
	}
	m, _ := New(benchLits(), Options{})
	var cw, dw [1]uint64
	for b.Loop() {
		bitmapsSIMD(&m.masks, &roster[0], 1, &cw[0], &dw[0])
	}
}

// BenchmarkSixteenBlocks is a kilobyte in one kernel call.
func BenchmarkSixteenBlocks(b *testing.B) {
	if !haveSIMD {
		b.Skip("no SIMD kernel")
	}
	m, _ := New(benchLits(), Options{})
	var cw, dw [16]uint64
	for b.Loop() {
		bitmapsSIMD(&m.masks, &roster[0], 16, &cw[0], &dw[0])
	}
}
