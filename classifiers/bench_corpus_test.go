package classifiers

import (
	"archive/zip"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ward-dlp/ward/classifiers/extract"
)

// The corpus benchmarks run over files that classifiers/bench.sh generates (deterministic,
// in a temporary directory) so ripgrep can be timed on exactly the same bytes.
//
//	WARD_BENCH_WRITE=DIR go test ./classifiers -run TestWriteBenchCorpus   writes the corpus
//	WARD_BENCH_DIR=DIR go test ./classifiers -run X -bench Corpus -cpu 1   times Ward on it

const benchCorpusBytes = 32 << 20

func TestWriteBenchCorpus(t *testing.T) {
	dir := os.Getenv("WARD_BENCH_WRITE")
	if dir == "" {
		t.Skip("WARD_BENCH_WRITE not set")
	}
	write := func(name string, b []byte) {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("clinical-clean.txt", prose(benchCorpusBytes))
	write("phi-dense.csv", phiDense(benchCorpusBytes))
	write("notes.docx", docxOf(t, prose(8<<20)))
	// The text inside the DOCX, for ripgrep (which cannot read DOCX).
	parts, err := extract.File("notes.docx", mustRead(t, filepath.Join(dir, "notes.docx")), extract.Limits{})
	if err != nil || len(parts) != 1 {
		t.Fatalf("docx: %v %d", err, len(parts))
	}
	write("notes-docx-text.txt", parts[0].Text)
}

func mustRead(t testing.TB, p string) []byte {
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// docxOf wraps text in a minimal WordprocessingML package, one paragraph per line.
func docxOf(t testing.TB, text []byte) []byte {
	var doc strings.Builder
	doc.WriteString(`<?xml version="1.0" encoding="UTF-8" standalone="yes"?><w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"><w:body>`)
	for _, line := range bytes.Split(text, []byte("\n")) {
		doc.WriteString("<w:p><w:r><w:t xml:space=\"preserve\">")
		doc.Write(bytes.ReplaceAll(bytes.ReplaceAll(line, []byte("&"), []byte("&amp;")), []byte("<"), []byte("&lt;")))
		doc.WriteString("</w:t></w:r></w:p>")
	}
	doc.WriteString("</w:body></w:document>")
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for name, body := range map[string]string{"[Content_Types].xml": `<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"/>`, "word/document.xml": doc.String()} {
		w, err := zw.Create(name)
		if err != nil {
			t.Fatal(err)
		}
		w.Write([]byte(body))
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func BenchmarkCorpus(b *testing.B) {
	dir := os.Getenv("WARD_BENCH_DIR")
	if dir == "" {
		b.Skip("WARD_BENCH_DIR not set (see classifiers/bench.sh)")
	}
	e := newDefault(b)
	for _, name := range []string{"clinical-clean.txt", "phi-dense.csv"} {
		content := mustRead(b, filepath.Join(dir, name))
		b.Run(name, func(b *testing.B) {
			b.SetBytes(int64(len(content)))
			for b.Loop() {
				e.Classify(content)
			}
		})
	}
	docx := mustRead(b, filepath.Join(dir, "notes.docx"))
	text := mustRead(b, filepath.Join(dir, "notes-docx-text.txt"))
	b.Run("notes.docx", func(b *testing.B) {
		// MB/s of extracted text, extraction included, so it compares with ripgrep over
		// the same text.
		b.SetBytes(int64(len(text)))
		for b.Loop() {
			parts, err := extract.File("notes.docx", docx, extract.Limits{})
			if err != nil {
				b.Fatal(err)
			}
			for _, p := range parts {
				e.Classify(p.Text)
			}
		}
	})
	fmt.Fprint(os.Stderr)
}
