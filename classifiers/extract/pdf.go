package extract

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/ledongthuc/pdf"
)

// PDF text extraction.
//
// github.com/ledongthuc/pdf (BSD-3-Clause, pure Go, no dependencies, maintained fork of
// rsc.io/pdf) parses the file structure (xref tables and streams, object streams,
// encryption with an empty user password) and decodes fonts (standard encodings,
// Differences, ToUnicode CMaps). Ward does not use its page and text walkers, which loop
// forever on cyclic page trees and build unbounded strings; instead it walks the page tree
// itself with depth and visit bounds, checks stream filters before decoding (a PNG
// predictor with a huge /Columns would allocate it up front), reads each decompressed
// content stream through a byte limit, and interprets the text operators with its own
// bounded tokenizer. Library panics (its parse-error mechanism) are recovered, and a
// deadline is checked as the content is read.

// ErrPDFLimit is returned when a PDF exceeds its page, byte or time budget; the text
// extracted before the limit is still returned.
var ErrPDFLimit = errors.New("extract: PDF exceeds extraction limits")

const (
	maxPDFTreeDepth = 32
	maxPDFOperands  = 64
)

// pdfFont is the library's font (its Encoder decodes shown strings).
type pdfFont = pdf.Font

type pdfBudget struct {
	pages    int
	bytes    int64 // text output budget
	stream   int64 // decompressed bytes per content stream
	deadline time.Time
}

// pdfText returns the text of a PDF, page by page (a form feed between pages).
func pdfText(data []byte, b pdfBudget) (text []byte, err error) {
	var out bytes.Buffer
	defer func() {
		if r := recover(); r != nil {
			text = out.Bytes()
			err = fmt.Errorf("extract: malformed PDF: %v", r)
		}
	}()
	rd, err := pdf.NewReader(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		return nil, fmt.Errorf("extract: PDF: %w", err)
	}
	root := rd.Trailer().Key("Root").Key("Pages")
	w := &pdfWalker{b: b, out: &out}
	err = w.pages(root, 0, pdf.Value{})
	return out.Bytes(), err
}

type pdfWalker struct {
	b      pdfBudget
	out    *bytes.Buffer
	buf    bytes.Buffer // decompressed content stream, reused
	nPages int
	visits int
	ops    int
}

func (w *pdfWalker) over() error {
	if time.Now().After(w.b.deadline) {
		return fmt.Errorf("%w: time limit", ErrPDFLimit)
	}
	if int64(w.out.Len()) > w.b.bytes {
		return fmt.Errorf("%w: more than %d bytes of text", ErrPDFLimit, w.b.bytes)
	}
	return nil
}

// pages walks the page tree depth-first; res is the nearest inherited /Resources.
func (w *pdfWalker) pages(node pdf.Value, depth int, res pdf.Value) error {
	if depth > maxPDFTreeDepth {
		return fmt.Errorf("extract: malformed PDF: page tree deeper than %d", maxPDFTreeDepth)
	}
	w.visits++
	if w.visits > 4*w.b.pages+64 {
		return fmt.Errorf("%w: page tree has more than %d nodes (cyclic?)", ErrPDFLimit, 4*w.b.pages+64)
	}
	if r := node.Key("Resources"); r.Kind() == pdf.Dict {
		res = r
	}
	switch node.Key("Type").Name() {
	case "Pages":
		kids := node.Key("Kids")
		for i := 0; i < kids.Len(); i++ {
			if err := w.pages(kids.Index(i), depth+1, res); err != nil {
				return err
			}
		}
		return nil
	case "Page":
		if w.nPages >= w.b.pages {
			return fmt.Errorf("%w: more than %d pages", ErrPDFLimit, w.b.pages)
		}
		w.nPages++
		if w.nPages > 1 {
			w.out.WriteString("\f\n")
		}
		return w.page(node, res)
	}
	return nil
}

func (w *pdfWalker) page(p pdf.Value, res pdf.Value) error {
	fonts := map[string]*pdf.Font{}
	fontDict := res.Key("Font")
	font := func(name string) *pdf.Font {
		if f, ok := fonts[name]; ok {
			return f
		}
		var f *pdf.Font
		if fd := fontDict.Key(name); fd.Kind() == pdf.Dict {
			f = &pdf.Font{V: fd}
		}
		fonts[name] = f
		return f
	}
	c := p.Key("Contents")
	var streams []pdf.Value
	switch c.Kind() {
	case pdf.Stream:
		streams = append(streams, c)
	case pdf.Array:
		for i := 0; i < c.Len() && i < 1024; i++ {
			streams = append(streams, c.Index(i))
		}
	}
	st := &pdfInterp{w: w, font: font}
	for _, s := range streams {
		content, err := w.read(s)
		if err != nil {
			return err
		}
		if err := st.run(content); err != nil {
			return err
		}
	}
	w.out.WriteByte('\n')
	return nil
}

// read decompresses one content stream within the per-stream limit.
func (w *pdfWalker) read(s pdf.Value) ([]byte, error) {
	if s.Kind() != pdf.Stream {
		return nil, nil
	}
	if err := checkFilters(s); err != nil {
		return nil, err
	}
	r := s.Reader()
	defer r.Close()
	w.buf.Reset()
	_, err := w.buf.ReadFrom(io.LimitReader(r, w.b.stream+1))
	data := w.buf.Bytes() // valid until the next read; run consumes it first
	if err != nil {
		// A damaged stream still yields what decoded before the damage.
		if len(data) == 0 {
			return nil, fmt.Errorf("extract: PDF content stream: %w", err)
		}
	}
	if int64(len(data)) > w.b.stream {
		return nil, fmt.Errorf("%w: content stream expands past %d bytes", ErrPDFLimit, w.b.stream)
	}
	return data, w.over()
}

// checkFilters accepts only the filters the library decodes, with sane parameters.
func checkFilters(s pdf.Value) error {
	f, p := s.Key("Filter"), s.Key("DecodeParms")
	check := func(name string, parm pdf.Value) error {
		switch name {
		case "FlateDecode":
			if parm.Kind() == pdf.Dict {
				if pr := parm.Key("Predictor"); pr.Kind() != pdf.Null && pr.Int64() != 12 {
					return fmt.Errorf("extract: PDF: unsupported predictor %d", pr.Int64())
				}
				if c := parm.Key("Columns").Int64(); c < 0 || c > 1<<16 {
					return fmt.Errorf("extract: PDF: predictor columns %d out of range", c)
				}
			}
			return nil
		case "ASCII85Decode":
			if parm.Kind() != pdf.Null {
				return errors.New("extract: PDF: unexpected ASCII85Decode parameters")
			}
			return nil
		}
		return fmt.Errorf("extract: PDF: unsupported content filter %q", name)
	}
	switch f.Kind() {
	case pdf.Null:
		return nil
	case pdf.Name:
		return check(f.Name(), p)
	case pdf.Array:
		if f.Len() > 4 {
			return errors.New("extract: PDF: more than four chained filters")
		}
		for i := 0; i < f.Len(); i++ {
			if err := check(f.Index(i).Name(), p.Index(i)); err != nil {
				return err
			}
		}
		return nil
	}
	return errors.New("extract: PDF: malformed /Filter")
}

// pdfInterp interprets the text operators of content streams: Tf selects a font, Tj ' " TJ
// show strings (decoded with the font's encoding), and text positioning becomes spaces
// and newlines so that words and lines stay apart for the detectors.
type pdfInterp struct {
	w    *pdfWalker
	font func(string) *pdfFont
	enc  pdf.TextEncoding
	// latin is set when the current font is a simple font with a standard Latin encoding
	// and no ToUnicode map: its printable ASCII codes are the ASCII characters, so such
	// strings (nearly all text in exported documents) skip the library's rune decoding.
	latin bool
	ops   []pdfOperand
}

// latinFont reports whether f's printable ASCII codes map to themselves.
func latinFont(f *pdfFont) bool {
	if f.V.Key("ToUnicode").Kind() != pdf.Null || f.V.Key("Subtype").Name() == "Type0" {
		return false
	}
	switch f.V.Key("Encoding").Name() {
	case "WinAnsiEncoding", "MacRomanEncoding", "StandardEncoding":
		return true
	}
	return false
}

type pdfOperand struct {
	kind byte // 's' string, 'n' number, '/' name, '[' array of strings and numbers
	s    string
	n    float64
	arr  []pdfOperand
}

func (t *pdfInterp) run(c []byte) error {
	for i := 0; i < len(c); {
		t.w.ops++
		if t.w.ops&1023 == 0 {
			if err := t.w.over(); err != nil {
				return err
			}
		}
		var op pdfOperand
		var word string
		var ok bool
		i, op, word, ok = pdfToken(c, i, 0)
		if !ok {
			continue
		}
		if word == "" {
			if len(t.ops) >= maxPDFOperands {
				t.ops = t.ops[1:]
			}
			t.ops = append(t.ops, op)
			continue
		}
		switch word {
		case "BI": // inline image: skip its data up to "EI"
			i = skipInlineImage(c, i)
		case "Tf":
			if len(t.ops) >= 2 && t.ops[len(t.ops)-2].kind == '/' {
				t.enc, t.latin = nil, false
				if f := t.font(t.ops[len(t.ops)-2].s); f != nil {
					t.enc, t.latin = f.Encoder(), latinFont(f)
				}
			}
		case "Tj":
			t.show(t.last('s'))
		case "'", "\"":
			t.w.out.WriteByte('\n')
			t.show(t.last('s'))
		case "TJ":
			if a := t.last('['); a != nil {
				for _, e := range a.arr {
					if e.kind == 's' {
						t.show(&e)
					} else if e.n < -250 {
						t.w.out.WriteByte(' ')
					}
				}
			}
		case "T*", "BT", "ET", "Tm":
			t.w.out.WriteByte('\n')
		case "Td", "TD":
			if len(t.ops) >= 1 && t.ops[len(t.ops)-1].kind == 'n' && t.ops[len(t.ops)-1].n != 0 {
				t.w.out.WriteByte('\n')
			} else {
				t.w.out.WriteByte(' ')
			}
		}
		t.ops = t.ops[:0]
	}
	return t.w.over()
}

func (t *pdfInterp) last(kind byte) *pdfOperand {
	if len(t.ops) == 0 || t.ops[len(t.ops)-1].kind != kind {
		return nil
	}
	return &t.ops[len(t.ops)-1]
}

func (t *pdfInterp) show(o *pdfOperand) {
	if o == nil {
		return
	}
	if t.latin && printableASCII(o.s) {
		t.w.out.WriteString(o.s)
		return
	}
	if t.enc != nil {
		t.w.out.WriteString(t.enc.Decode(o.s))
		return
	}
	// No font information: PDFDocEncoding is Latin-1 for the printable range.
	for i := 0; i < len(o.s); i++ {
		c := o.s[i]
		if c >= 0x20 || c == '\t' || c == '\n' {
			t.w.out.WriteRune(rune(c))
		}
	}
}

func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

func isPDFSpace(c byte) bool {
	return c == ' ' || c == '\n' || c == '\r' || c == '\t' || c == '\f' || c == 0
}

func isPDFDelim(c byte) bool {
	switch c {
	case '(', ')', '<', '>', '[', ']', '{', '}', '/', '%':
		return true
	}
	return false
}

// pdfToken reads the next token at i: an operand (word == "") or an operator (word set).
// ok is false for bytes that are skipped (whitespace, comments, dictionaries' brackets).
func pdfToken(c []byte, i int, depth int) (next int, op pdfOperand, word string, ok bool) {
	for i < len(c) && isPDFSpace(c[i]) {
		i++
	}
	if i >= len(c) {
		return i, op, "", false
	}
	switch ch := c[i]; {
	case ch == '%':
		for i < len(c) && c[i] != '\n' && c[i] != '\r' {
			i++
		}
		return i, op, "", false
	case ch == '(':
		s, j := pdfLiteral(c, i+1)
		return j, pdfOperand{kind: 's', s: s}, "", true
	case ch == '<' && i+1 < len(c) && c[i+1] == '<', ch == '>' && i+1 < len(c) && c[i+1] == '>':
		return i + 2, op, "", false
	case ch == '<':
		s, j := pdfHex(c, i+1)
		return j, pdfOperand{kind: 's', s: s}, "", true
	case ch == '[':
		arr := pdfOperand{kind: '['}
		j := i + 1
		for j < len(c) {
			for j < len(c) && isPDFSpace(c[j]) {
				j++
			}
			if j < len(c) && c[j] == ']' {
				j++
				break
			}
			if depth >= 8 {
				j++
				continue
			}
			var e pdfOperand
			var w string
			var eok bool
			j, e, w, eok = pdfToken(c, j, depth+1)
			if eok && w == "" && (e.kind == 's' || e.kind == 'n') && len(arr.arr) < 4096 {
				arr.arr = append(arr.arr, e)
			}
		}
		return j, arr, "", true
	case ch == ']' || ch == ')' || ch == '>' || ch == '{' || ch == '}':
		return i + 1, op, "", false
	case ch == '/':
		j := i + 1
		for j < len(c) && !isPDFSpace(c[j]) && !isPDFDelim(c[j]) {
			j++
		}
		return j, pdfOperand{kind: '/', s: string(c[i+1 : j])}, "", true
	}
	j := i
	for j < len(c) && !isPDFSpace(c[j]) && !isPDFDelim(c[j]) {
		j++
	}
	tok := c[i:j]
	if j > i && (tok[0] >= '0' && tok[0] <= '9' || tok[0] == '-' || tok[0] == '+' || tok[0] == '.') {
		if f, err := strconv.ParseFloat(string(tok), 64); err == nil {
			return j, pdfOperand{kind: 'n', n: f}, "", true
		}
	}
	return j, op, string(tok), true
}

// pdfLiteral reads a literal string after its '(' (nested parentheses, escapes).
func pdfLiteral(c []byte, i int) (string, int) {
	var b []byte
	depth := 1
	for i < len(c) {
		ch := c[i]
		i++
		switch ch {
		case '(':
			depth++
		case ')':
			depth--
			if depth == 0 {
				return string(b), i
			}
		case '\\':
			if i >= len(c) {
				return string(b), i
			}
			e := c[i]
			i++
			switch e {
			case 'n':
				ch = '\n'
			case 'r':
				ch = '\r'
			case 't':
				ch = '\t'
			case 'b':
				ch = '\b'
			case 'f':
				ch = '\f'
			case '\r':
				if i < len(c) && c[i] == '\n' {
					i++
				}
				continue
			case '\n':
				continue
			default:
				if '0' <= e && e <= '7' {
					v := int(e - '0')
					for k := 0; k < 2 && i < len(c) && '0' <= c[i] && c[i] <= '7'; k++ {
						v = v*8 + int(c[i]-'0')
						i++
					}
					ch = byte(v)
				} else {
					ch = e
				}
			}
		}
		b = append(b, ch)
	}
	return string(b), i
}

// pdfHex reads a hex string after its '<'.
func pdfHex(c []byte, i int) (string, int) {
	var b []byte
	var hi byte
	half := false
	for i < len(c) && c[i] != '>' {
		v, ok := unhex(c[i])
		i++
		if !ok {
			continue
		}
		if half {
			b = append(b, hi<<4|v)
		} else {
			hi = v
		}
		half = !half
	}
	if half {
		b = append(b, hi<<4)
	}
	return string(b), min(len(c), i+1)
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// skipInlineImage returns the offset after the "EI" that ends inline image data.
func skipInlineImage(c []byte, i int) int {
	for j := i; j+2 <= len(c); j++ {
		if c[j] == 'E' && c[j+1] == 'I' && j > 0 && isPDFSpace(c[j-1]) && (j+2 == len(c) || isPDFSpace(c[j+2])) {
			return j + 2
		}
	}
	return len(c)
}

// validUTF8Text replaces invalid UTF-8 so detectors and JSON output see clean text.
func validUTF8Text(b []byte) []byte {
	if utf8.Valid(b) {
		return b
	}
	return bytes.ToValidUTF8(b, []byte("\uFFFD"))
}
