package traffic

import (
	"os"
	"testing"
)

// BenchmarkAnalyzeImage runs the whole offline pipeline (reader, decoding, flow table,
// parsers, naming, detections, JSON encoding of every record) over the capture named by
// WARD_BENCH_PCAP, held in memory, once per iteration. It exists for stable profiles:
//
//	go run ./classifiers/traffic/internal/gencap -o /tmp/bench.pcapng -packets 1000000
//	WARD_BENCH_PCAP=/tmp/bench.pcapng go test ./classifiers/traffic -run '^$' \
//	    -bench AnalyzeImage -benchtime 5x -cpuprofile cpu.out
//
// Without the variable it uses the small mixed capture of the reader tests. The figures
// that count are bench.sh's (the real binary against tshark on the same file).
func BenchmarkAnalyzeImage(b *testing.B) {
	img := mixedCapture(b)
	if p := os.Getenv("WARD_BENCH_PCAP"); p != "" {
		var err error
		if img, err = os.ReadFile(p); err != nil {
			b.Fatal(err)
		}
	}
	var out []byte
	pkts := 0
	b.SetBytes(int64(len(img)))
	b.ReportAllocs()
	for b.Loop() {
		a, _ := newTestAnalyzer(b, "", func(c *Config) {
			c.MaxFlows = 1 << 20
			c.OnRecord = func(r FlowRecord) { out = r.AppendJSON(out[:0], `"type":"flow",`) }
			c.OnDetection = nil
		})
		n, err := readImage(img, a)
		if err != nil {
			b.Fatal(err)
		}
		a.Flush()
		pkts += n
	}
	b.ReportMetric(float64(pkts)/b.Elapsed().Seconds(), "packets/s")
}
