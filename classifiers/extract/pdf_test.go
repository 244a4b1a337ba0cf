package extract

import (
	"bytes"
	"compress/zlib"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

// pdfBuilder writes a minimal but valid PDF 1.4 file by hand: numbered objects, a
// cross-reference table with real offsets, and a trailer. Tests generate every PDF they
// use, so there are no binary fixtures that cannot be regenerated.
type pdfBuilder struct {
	objs []string // object bodies, object number = index+1
}

func (b *pdfBuilder) add(body string) int {
	b.objs = append(b.objs, body)
	return len(b.objs)
}

func (b *pdfBuilder) set(n int, body string) { b.objs[n-1] = body }

// stream returns a stream object body, Flate-compressed when flate is set.
func stream(content []byte, flate bool, extra string) string {
	if flate {
		var z bytes.Buffer
		w := zlib.NewWriter(&z)
		w.Write(content)
		w.Close()
		return fmt.Sprintf("<< /Length %d /Filter /FlateDecode %s >>\nstream\n%s\nendstream", z.Len(), extra, z.Bytes())
	}
	return fmt.Sprintf("<< /Length %d %s >>\nstream\n%s\nendstream", len(content), extra, content)
}

func (b *pdfBuilder) bytes(root int) []byte {
	var out bytes.Buffer
	out.WriteString("%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
	offs := make([]int, len(b.objs))
	for i, body := range b.objs {
		offs[i] = out.Len()
		fmt.Fprintf(&out, "%d 0 obj\n%s\nendobj\n", i+1, body)
	}
	xref := out.Len()
	fmt.Fprintf(&out, "xref\n0 %d\n0000000000 65535 f \n", len(b.objs)+1)
	for _, o := range offs {
		fmt.Fprintf(&out, "%010d 00000 n \n", o)
	}
	fmt.Fprintf(&out, "trailer\n<< /Size %d /Root %d 0 R >>\nstartxref\n%d\n%%%%EOF\n", len(b.objs)+1, root, xref)
	return out.Bytes()
}

// pdfString escapes s as a PDF literal string.
func pdfString(s string) string {
	return "(" + strings.NewReplacer(`\`, `\\`, "(", `\(`, ")", `\)`).Replace(s) + ")"
}

// textPage is a content stream showing lines top-down, the way word processors write
// them (one Tj per line, Td moves between lines).
func textPage(lines ...string) []byte {
	var c strings.Builder
	c.WriteString("BT\n/F1 11 Tf\n72 720 Td\n")
	for i, l := range lines {
		if i > 0 {
			c.WriteString("0 -14 Td\n")
		}
		c.WriteString(pdfString(l) + " Tj\n")
	}
	c.WriteString("ET\n")
	return []byte(c.String())
}

const helvetica = "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>"

// samplePDF builds a three-page document: plain text, a Flate-compressed page with TJ
// kerning and a hex string, and a page that inherits its resources from the page tree.
func samplePDF() []byte {
	var b pdfBuilder
	catalog := b.add("")
	pages := b.add("")
	font := b.add(helvetica)
	c1 := b.add(stream(textPage("Intake summary", "Patient: Jordan Sample", "SSN: 219-45-8765"), false, ""))
	kern := "BT /F1 11 Tf 72 700 Td [(D) 80 (ate of bir) -20 (th:) -400 (04/12/1985)] TJ 0 -14 Td <4478204631312E3230> Tj ET\n"
	c2 := b.add(stream([]byte(kern), true, ""))
	c3 := b.add(stream(textPage("This record which has been disclosed to you is protected by", "federal confidentiality rules (42 CFR part 2)."), true, ""))
	res := fmt.Sprintf("/Resources << /Font << /F1 %d 0 R >> >>", font)
	p1 := b.add(fmt.Sprintf("<< /Type /Page /Parent %d 0 R /MediaBox [0 0 612 792] %s /Contents %d 0 R >>", pages, res, c1))
	p2 := b.add(fmt.Sprintf("<< /Type /Page /Parent %d 0 R /MediaBox [0 0 612 792] %s /Contents [%d 0 R] >>", pages, res, c2))
	p3 := b.add(fmt.Sprintf("<< /Type /Page /Parent %d 0 R /MediaBox [0 0 612 792] /Contents %d 0 R >>", pages, c3))
	b.set(catalog, fmt.Sprintf("<< /Type /Catalog /Pages %d 0 R >>", pages))
	b.set(pages, fmt.Sprintf("<< /Type /Pages /Kids [%d 0 R %d 0 R %d 0 R] /Count 3 %s >>", p1, p2, p3, res))
	return b.bytes(catalog)
}

func TestPDFText(t *testing.T) {
	ps, err := File("summary.pdf", samplePDF(), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if len(ps) != 1 || ps[0].Path != "summary.pdf!pdf" {
		t.Fatalf("parts %+v", ps)
	}
	got := string(ps[0].Text)
	for _, want := range []string{"Patient: Jordan Sample\nSSN: 219-45-8765", "Date of birth: 04/12/1985", "Dx F11.20",
		"protected by\nfederal confidentiality rules (42 CFR part 2)."} {
		if !strings.Contains(got, want) {
			t.Errorf("text lacks %q:\n%s", want, got)
		}
	}
	if strings.Count(got, "\f") != 2 {
		t.Errorf("want a form feed between pages:\n%q", got)
	}
}

// TestPDFHostile: malformed and malicious PDFs are errors (or partial text), never a
// crash, a hang or an unbounded allocation.
func TestPDFHostile(t *testing.T) {
	build := func(f func(b *pdfBuilder) int) []byte {
		var b pdfBuilder
		return b.bytes(f(&b))
	}
	onePage := func(b *pdfBuilder, contents string, pagesExtra string) int {
		cat := b.add("")
		pages := b.add("")
		font := b.add(helvetica)
		c := b.add(contents)
		p := b.add(fmt.Sprintf("<< /Type /Page /Parent %d 0 R /Resources << /Font << /F1 %d 0 R >> >> /Contents %d 0 R >>", pages, font, c))
		b.set(cat, fmt.Sprintf("<< /Type /Catalog /Pages %d 0 R >>", pages))
		b.set(pages, fmt.Sprintf("<< /Type /Pages /Kids [%d 0 R %s] /Count 1 >>", p, pagesExtra))
		return cat
	}
	bomb := bytes.Repeat([]byte("(AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA) Tj\n"), 2<<20) // 84 MiB, compresses ~1000:1
	cases := map[string]struct {
		data []byte
		want error // nil: any error
	}{
		"cyclic page tree": {build(func(b *pdfBuilder) int { return onePage(b, stream(textPage("x"), false, ""), "2 0 R") }), nil},
		"predictor columns": {build(func(b *pdfBuilder) int {
			return onePage(b, stream(textPage("x"), true, "/DecodeParms << /Predictor 12 /Columns 1000000000000 >>"), "")
		}), nil},
		"unknown filter":     {build(func(b *pdfBuilder) int { return onePage(b, stream(textPage("x"), false, "/Filter /JBIG2Decode"), "") }), nil},
		"decompression bomb": {build(func(b *pdfBuilder) int { return onePage(b, stream(bomb, true, ""), "") }), ErrPDFLimit},
		"nested arrays": {build(func(b *pdfBuilder) int {
			return onePage(b, stream([]byte(strings.Repeat("[", 100000)+" TJ"), false, ""), "")
		}), nil},
		"unterminated string": {build(func(b *pdfBuilder) int { return onePage(b, stream([]byte("BT (abc"), false, ""), "") }), nil},
		"truncated":           {samplePDF()[:300], nil},
		"garbage":             {append([]byte("%PDF-1.7\n"), bytes.Repeat([]byte{0xde, 0xad}, 5000)...), nil},
		"no root":             {[]byte("%PDF-1.4\nxref\n0 1\n0000000000 65535 f \ntrailer\n<< /Size 1 >>\nstartxref\n9\n%%EOF\n"), nil},
	}
	for name, c := range cases {
		start := time.Now()
		ps, err := File(name+".pdf", c.data, Limits{MaxBytes: 8 << 20})
		if time.Since(start) > 10*time.Second {
			t.Errorf("%s: took %v", name, time.Since(start))
		}
		t.Logf("%s: %v", name, err)
		total := 0
		for _, p := range ps {
			total += len(p.Text)
		}
		if total > 8<<20 {
			t.Errorf("%s: %d bytes extracted past the budget", name, total)
		}
		switch {
		case c.want != nil && !errors.Is(err, c.want):
			t.Errorf("%s: error %v, want %v", name, err, c.want)
		case name == "cyclic page tree" || name == "nested arrays" || name == "unterminated string":
			// Bounded walks: the text that exists is extracted; an error is allowed.
		case err == nil:
			t.Errorf("%s: no error", name)
		}
	}
	// Page limit: the first pages' text is kept and the limit is reported.
	ps, err := File("long.pdf", samplePDF(), Limits{MaxPDFPages: 1})
	if !errors.Is(err, ErrPDFLimit) || len(ps) != 1 || !strings.Contains(string(ps[0].Text), "SSN: 219-45-8765") || strings.Contains(string(ps[0].Text), "CFR") {
		t.Errorf("page limit: %v %q", err, texts(ps))
	}
	// A PDF inside a zip is extracted too.
	ps, err = File("export.zip", zipOf(t, map[string][]byte{"scans/summary.pdf": samplePDF()}), Limits{})
	if err != nil || len(ps) != 1 || ps[0].Path != "export.zip!scans/summary.pdf!pdf" {
		t.Errorf("pdf in zip: %v %+v", err, ps)
	}
}

// FuzzPDF: any bytes after a PDF header, no panic, no hang, output within budget.
func FuzzPDF(f *testing.F) {
	f.Add(samplePDF())
	f.Add(samplePDF()[:400])
	f.Add([]byte("%PDF-1.4\n1 0 obj << /Type /Pages /Kids [1 0 R] /Count 1 >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF"))
	f.Add([]byte("BT /F1 1 Tf [(a) -300 <41> [[(x)]]] TJ (\\101\\n) ' ET BI /W 1 ID \x00\x01 EI (z) Tj"))
	f.Fuzz(func(t *testing.T, data []byte) {
		if !bytes.HasPrefix(data, []byte("%PDF-")) {
			// Exercise the content interpreter directly on non-PDF input.
			var out bytes.Buffer
			w := &pdfWalker{b: pdfBudget{pages: 10, bytes: 1 << 20, stream: 1 << 20, deadline: time.Now().Add(5 * time.Second)}, out: &out}
			(&pdfInterp{w: w, font: func(string) *pdfFont { return nil }}).run(data)
			if out.Len() > 1<<20+len(data)*4+1024 {
				t.Fatalf("%d bytes of text from %d", out.Len(), len(data))
			}
			return
		}
		start := time.Now()
		ps, _ := File("f.pdf", data, Limits{MaxBytes: 1 << 20, PDFTimeout: 5 * time.Second})
		if d := time.Since(start); d > 8*time.Second {
			t.Fatalf("took %v", d)
		}
		total := 0
		for _, p := range ps {
			total += len(p.Text)
		}
		if total > 2<<20 {
			t.Fatalf("%d bytes extracted", total)
		}
	})
}
