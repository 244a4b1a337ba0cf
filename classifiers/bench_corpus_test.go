package classifiers

import (
	"archive/zip"
	"bytes"
	"compress/zlib"
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
	write("notes.pdf", pdfOf(prose(4<<20)))
	parts, err = extract.File("notes.pdf", mustRead(t, filepath.Join(dir, "notes.pdf")), extract.Limits{})
	if err != nil || len(parts) != 1 {
		t.Fatalf("pdf: %v %d", err, len(parts))
	}
	write("notes-pdf-text.txt", parts[0].Text)
}

// pdfOf writes text as a PDF the way word processors export it: pages of 50 lines, one
// Tj per line with Td moves, Flate-compressed content streams, a shared Helvetica font
// (WinAnsiEncoding), and a cross-reference table with real offsets.
func pdfOf(text []byte) []byte {
	var lines []string
	for _, para := range strings.Split(string(text), "\n") {
		for len(para) > 90 {
			cut := strings.LastIndexByte(para[:90], ' ')
			if cut <= 0 {
				cut = 90
			}
			lines = append(lines, para[:cut])
			para = strings.TrimLeft(para[cut:], " ")
		}
		lines = append(lines, para)
	}
	esc := strings.NewReplacer(`\`, `\\`, "(", `\(`, ")", `\)`)
	var objs []string // object n is objs[n-1]
	add := func(o string) int { objs = append(objs, o); return len(objs) }
	catalog := add("")
	pages := add("")
	font := add("<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>")
	var kids []string
	for i := 0; i < len(lines); i += 50 {
		var c strings.Builder
		c.WriteString("BT /F1 10 Tf 12 TL 54 740 Td\n")
		for _, l := range lines[i:min(len(lines), i+50)] {
			c.WriteString("(" + esc.Replace(l) + ") Tj T*\n")
		}
		c.WriteString("ET\n")
		var z bytes.Buffer
		zw := zlib.NewWriter(&z)
		zw.Write([]byte(c.String()))
		zw.Close()
		content := add(fmt.Sprintf("<< /Length %d /Filter /FlateDecode >>\nstream\n%s\nendstream", z.Len(), z.Bytes()))
		page := add(fmt.Sprintf("<< /Type /Page /Parent %d 0 R /MediaBox [0 0 612 792] /Contents %d 0 R >>", pages, content))
		kids = append(kids, fmt.Sprintf("%d 0 R", page))
	}
	objs[catalog-1] = fmt.Sprintf("<< /Type /Catalog /Pages %d 0 R >>", pages)
	objs[pages-1] = fmt.Sprintf("<< /Type /Pages /Kids [%s] /Count %d /Resources << /Font << /F1 %d 0 R >> >> >>", strings.Join(kids, " "), len(kids), font)
	var out bytes.Buffer
	out.WriteString("%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
	offs := make([]int, len(objs))
	for i, o := range objs {
		offs[i] = out.Len()
		fmt.Fprintf(&out, "%d 0 obj\n%s\nendobj\n", i+1, o)
	}
	xref := out.Len()
	fmt.Fprintf(&out, "xref\n0 %d\n0000000000 65535 f \n", len(objs)+1)
	for _, o := range offs {
		fmt.Fprintf(&out, "%010d 00000 n \n", o)
	}
	fmt.Fprintf(&out, "trailer\n<< /Size %d /Root %d 0 R >>\nstartxref\n%d\n%%%%EOF\n", len(objs)+1, catalog, xref)
	return out.Bytes()
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
			cpuLoop(b, len(content), func() { e.Classify(content) })
		})
	}
	docx := mustRead(b, filepath.Join(dir, "notes.docx"))
	text := mustRead(b, filepath.Join(dir, "notes-docx-text.txt"))
	b.Run("notes.docx", func(b *testing.B) {
		// MB/s of extracted text, extraction included, so it compares with ripgrep over
		// the same text.
		cpuLoop(b, len(text), func() {
			parts, err := extract.File("notes.docx", docx, extract.Limits{})
			if err != nil {
				b.Fatal(err)
			}
			for _, p := range parts {
				e.Classify(p.Text)
			}
		})
	})
	pdf := mustRead(b, filepath.Join(dir, "notes.pdf"))
	pdfText := mustRead(b, filepath.Join(dir, "notes-pdf-text.txt"))
	b.Run("notes.pdf", func(b *testing.B) {
		// As for DOCX: MB/s of extracted text, PDF parsing and decompression included.
		cpuLoop(b, len(pdfText), func() {
			parts, err := extract.File("notes.pdf", pdf, extract.Limits{})
			if err != nil {
				b.Fatal(err)
			}
			for _, p := range parts {
				e.Classify(p.Text)
			}
		})
	})
}
