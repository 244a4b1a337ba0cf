// Package extract turns files into the text Ward classifies: Office Open XML (DOCX, XLSX,
// PPTX) and OpenDocument text, PDF text, zip and gzip archives, UTF-16 text, and MIME
// bodies in base64 or quoted-printable. Archives are read with depth, entry and size limits, and an
// archive that expands past them (a zip bomb) is an error for that file, not an outage.
package extract

import (
	"archive/zip"
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"mime/quotedprintable"
	"path"
	"strconv"
	"strings"
	"time"
	"unicode/utf16"
	"unicode/utf8"
)

// Limits bound the work one file may cause.
type Limits struct {
	// MaxDepth is how many containers may nest (zip in gzip in zip...). Default 4.
	MaxDepth int
	// MaxBytes bounds the total extracted bytes of one file. Default 256 MiB.
	MaxBytes int64
	// MaxEntries bounds archive members visited per file. Default 10 000.
	MaxEntries int
	// MaxRatio is the largest expansion ratio accepted for a compressed member over 1 MiB.
	// Default 200.
	MaxRatio int64
	// MaxPDFPages bounds the pages read from one PDF. Default 5000.
	MaxPDFPages int
	// PDFTimeout bounds the time spent extracting one PDF. Default 20s.
	PDFTimeout time.Duration
}

func (l *Limits) defaults() {
	if l.MaxDepth == 0 {
		l.MaxDepth = 4
	}
	if l.MaxBytes == 0 {
		l.MaxBytes = 256 << 20
	}
	if l.MaxEntries == 0 {
		l.MaxEntries = 10000
	}
	if l.MaxRatio == 0 {
		l.MaxRatio = 200
	}
	if l.MaxPDFPages == 0 {
		l.MaxPDFPages = 5000
	}
	if l.PDFTimeout == 0 {
		l.PDFTimeout = 20 * time.Second
	}
}

// Part is one piece of text and where it came from ("a.zip!notes/b.docx!word/document.xml").
type Part struct {
	Path string
	Text []byte
}

// ErrBomb is returned when a file expands past the limits.
var ErrBomb = errors.New("extract: archive expands past limits (possible zip bomb)")

// extractor carries the per-file budget.
type extractor struct {
	lim     Limits
	used    int64
	entries int
	parts   []Part
}

// File extracts the text parts of one file's content. name is used for paths and to
// recognise formats whose magic is shared (zip-based documents).
func File(name string, data []byte, lim Limits) ([]Part, error) {
	lim.defaults()
	x := &extractor{lim: lim}
	if err := x.walk(name, data, 0); err != nil {
		return x.parts, err
	}
	return x.parts, nil
}

func (x *extractor) charge(n int64) error {
	x.used += n
	if x.used > x.lim.MaxBytes {
		return ErrBomb
	}
	return nil
}

func (x *extractor) emit(p string, text []byte) {
	if len(text) > 0 {
		x.parts = append(x.parts, Part{Path: p, Text: text})
	}
}

func (x *extractor) walk(name string, data []byte, depth int) error {
	switch {
	case bytes.HasPrefix(data, []byte("PK\x03\x04")) || bytes.HasPrefix(data, []byte("PK\x05\x06")):
		if depth >= x.lim.MaxDepth {
			return fmt.Errorf("extract: %s: containers nested deeper than %d", name, x.lim.MaxDepth)
		}
		return x.zip(name, data, depth)
	case bytes.HasPrefix(data, []byte{0x1f, 0x8b}):
		if depth >= x.lim.MaxDepth {
			return fmt.Errorf("extract: %s: containers nested deeper than %d", name, x.lim.MaxDepth)
		}
		zr, err := gzip.NewReader(bytes.NewReader(data))
		if err != nil {
			return fmt.Errorf("extract: %s: gzip: %w", name, err)
		}
		out, err := x.readAll(zr, int64(len(data)))
		if err != nil {
			return fmt.Errorf("extract: %s: gzip: %w", name, err)
		}
		return x.walk(strings.TrimSuffix(name, ".gz")+"!gunzip", out, depth+1)
	case bytes.HasPrefix(data, []byte("%PDF-")):
		return x.pdf(name, data)
	}
	if t, ok := utf16Text(data); ok {
		x.emit(name+"!utf16", t)
		return nil
	}
	x.emit(name, data)
	return x.mimeBodies(name, data, depth)
}

// readAll reads a decompressor within the byte budget and the ratio limit.
func (x *extractor) readAll(r io.Reader, compressed int64) ([]byte, error) {
	remaining := x.lim.MaxBytes - x.used
	out, err := io.ReadAll(io.LimitReader(r, remaining+1))
	if err != nil {
		return nil, err
	}
	if err := x.charge(int64(len(out))); err != nil {
		return nil, err
	}
	if int64(len(out)) > 1<<20 && int64(len(out)) > x.lim.MaxRatio*max(compressed, 1) {
		return nil, ErrBomb
	}
	return out, nil
}

// officeText lists the members of OOXML and ODF packages that hold document text.
func officeText(name string) bool {
	switch {
	case name == "word/document.xml", strings.HasPrefix(name, "word/header"), strings.HasPrefix(name, "word/footer"),
		name == "word/footnotes.xml", name == "word/comments.xml":
		return true
	case name == "xl/sharedStrings.xml", strings.HasPrefix(name, "xl/worksheets/sheet"):
		return true
	case strings.HasPrefix(name, "ppt/slides/slide"), strings.HasPrefix(name, "ppt/notesSlides/"):
		return true
	case name == "content.xml", name == "styles.xml":
		return true
	}
	return false
}

func (x *extractor) zip(name string, data []byte, depth int) error {
	zr, err := zip.NewReader(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		return fmt.Errorf("extract: %s: zip: %w", name, err)
	}
	office := false
	for _, f := range zr.File {
		if f.Name == "[Content_Types].xml" || f.Name == "mimetype" {
			office = true
		}
	}
	for _, f := range zr.File {
		if f.FileInfo().IsDir() {
			continue
		}
		x.entries++
		if x.entries > x.lim.MaxEntries {
			return fmt.Errorf("extract: %s: more than %d archive members: %w", name, x.lim.MaxEntries, ErrBomb)
		}
		if office && !officeText(f.Name) {
			continue
		}
		if f.UncompressedSize64 > uint64(x.lim.MaxBytes) {
			return fmt.Errorf("extract: %s!%s: %w", name, f.Name, ErrBomb)
		}
		rc, err := f.Open()
		if err != nil {
			return fmt.Errorf("extract: %s!%s: %w", name, f.Name, err)
		}
		out, err := x.readAll(rc, int64(f.CompressedSize64))
		rc.Close()
		if err != nil {
			return fmt.Errorf("extract: %s!%s: %w", name, f.Name, err)
		}
		p := name + "!" + f.Name
		if office || path.Ext(f.Name) == ".xml" && bytes.Contains(out[:min(len(out), 512)], []byte("schemas.openxmlformats.org")) {
			x.emit(p, xmlText(out))
			continue
		}
		if err := x.walk(p, out, depth+1); err != nil {
			return err
		}
	}
	return nil
}

// xmlText returns the character data of an Office/OpenDocument XML part, with a newline
// after paragraphs, rows and line breaks and a space after cells, tabs and runs, so words of
// adjacent elements stay apart. It is a single pass over the bytes (no tokens, no
// allocation per element): comments, processing instructions and DOCTYPE declarations are
// skipped, CDATA is copied, the five predefined entities and numeric character references
// are decoded, and other entities are kept as written (nothing is ever expanded or fetched).
// Malformed markup ends at the end of the data, never in an error.
func xmlText(data []byte) []byte {
	out := make([]byte, 0, len(data)/4)
	for i := 0; i < len(data); {
		c := data[i]
		switch c {
		case '<':
			i = xmlMarkup(data, i, &out)
		case '&':
			var n int
			out, n = xmlEntity(out, data[i:])
			i += n
		default:
			j := i + 1
			for j < len(data) && data[j] != '<' && data[j] != '&' {
				j++
			}
			out = append(out, data[i:j]...)
			i = j
		}
	}
	return out
}

// xmlMarkup handles the markup starting at data[i] == '<' and returns the offset after it.
func xmlMarkup(data []byte, i int, out *[]byte) int {
	rest := data[i:]
	skipTo := func(end string) int {
		if k := bytes.Index(rest, []byte(end)); k >= 0 {
			return i + k + len(end)
		}
		return len(data)
	}
	switch {
	case bytes.HasPrefix(rest, []byte("<!--")):
		return skipTo("-->")
	case bytes.HasPrefix(rest, []byte("<![CDATA[")):
		end := bytes.Index(rest, []byte("]]>"))
		if end < 0 {
			*out = append(*out, rest[9:]...)
			return len(data)
		}
		*out = append(*out, rest[9:end]...)
		return i + end + 3
	case bytes.HasPrefix(rest, []byte("<?")):
		return skipTo("?>")
	case bytes.HasPrefix(rest, []byte("<!")):
		// A DOCTYPE with an internal subset ends at "]>", after its declarations.
		if gt, br := bytes.IndexByte(rest, '>'), bytes.IndexByte(rest, '['); br >= 0 && br < gt {
			return skipTo("]>")
		}
		return skipTo(">")
	}
	// A start, end or empty-element tag: read the name, then skip attributes (quoted
	// values may contain '>').
	closing := len(rest) > 1 && rest[1] == '/'
	j := 1
	if closing {
		j = 2
	}
	ns := j
	for j < len(rest) && !isXMLSpace(rest[j]) && rest[j] != '>' && rest[j] != '/' {
		j++
	}
	name := rest[ns:j]
	if k := bytes.IndexByte(name, ':'); k > 0 && k < len(name)-1 {
		name = name[k+1:] // w:t -> t; a name like ":c" or "c:" has no prefix
	}
	var quote byte
	for ; j < len(rest); j++ {
		b := rest[j]
		if quote != 0 {
			if b == quote {
				quote = 0
			}
			continue
		}
		if b == '"' || b == '\'' {
			quote = b
			continue
		}
		if b == '>' {
			break
		}
	}
	if j >= len(rest) {
		return len(data)
	}
	if closing || rest[j-1] == '/' {
		switch string(name) {
		case "p", "tr", "row", "br", "h":
			*out = append(*out, '\n')
		case "tc", "c", "tab", "t", "v", "span":
			*out = append(*out, ' ')
		}
	}
	return i + j + 1
}

func isXMLSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

// xmlEntity decodes the reference at the start of b ("&amp;", "&#233;", "&#x2019;") and
// returns the bytes consumed; anything else is copied as one '&'.
func xmlEntity(out, b []byte) ([]byte, int) {
	end := bytes.IndexByte(b[:min(len(b), 12)], ';')
	if end < 2 {
		return append(out, '&'), 1
	}
	ref := b[1:end]
	switch string(ref) {
	case "lt":
		return append(out, '<'), end + 1
	case "gt":
		return append(out, '>'), end + 1
	case "amp":
		return append(out, '&'), end + 1
	case "apos":
		return append(out, '\''), end + 1
	case "quot":
		return append(out, '"'), end + 1
	}
	if ref[0] == '#' {
		var v uint64
		var err error
		if len(ref) > 1 && (ref[1] == 'x' || ref[1] == 'X') {
			v, err = strconv.ParseUint(string(ref[2:]), 16, 32)
		} else {
			v, err = strconv.ParseUint(string(ref[1:]), 10, 32)
		}
		if err == nil && utf8.ValidRune(rune(v)) {
			return utf8.AppendRune(out, rune(v)), end + 1
		}
	}
	return append(out, b[:end+1]...), end + 1
}

// utf16Text decodes UTF-16 with a BOM, or without one when at least 40% of the first
// kilobyte's odd (LE) or even (BE) bytes are zero, which ASCII-range UTF-16 always shows.
func utf16Text(data []byte) ([]byte, bool) {
	le, ok := false, false
	switch {
	case bytes.HasPrefix(data, []byte{0xff, 0xfe}):
		le, ok, data = true, true, data[2:]
	case bytes.HasPrefix(data, []byte{0xfe, 0xff}):
		ok, data = true, data[2:]
	default:
		n := min(len(data), 1024) &^ 1
		if n < 16 {
			return nil, false
		}
		var odd, even int
		for i := 0; i < n; i += 2 {
			if data[i] == 0 {
				even++
			}
			if data[i+1] == 0 {
				odd++
			}
		}
		switch {
		case odd*5 >= n && even*20 < n:
			le, ok = true, true
		case even*5 >= n && odd*20 < n:
			ok = true
		}
	}
	if !ok {
		return nil, false
	}
	u := make([]uint16, len(data)/2)
	for i := range u {
		if le {
			u[i] = uint16(data[2*i]) | uint16(data[2*i+1])<<8
		} else {
			u[i] = uint16(data[2*i])<<8 | uint16(data[2*i+1])
		}
	}
	out := make([]byte, 0, len(u))
	for _, r := range utf16.Decode(u) {
		out = utf8.AppendRune(out, r)
	}
	return out, true
}

// mimeBodies decodes the base64 and quoted-printable bodies of MIME parts (e-mail, .eml,
// multipart uploads) and walks what they hold.
func (x *extractor) mimeBodies(name string, data []byte, depth int) error {
	if depth >= x.lim.MaxDepth || !bytes.Contains(data, []byte("Content-Transfer-Encoding")) {
		return nil
	}
	lower := bytes.ToLower(data)
	n := 0
	for off := 0; ; {
		i := bytes.Index(lower[off:], []byte("content-transfer-encoding:"))
		if i < 0 {
			return nil
		}
		i += off
		eol := bytes.IndexByte(lower[i:], '\n')
		if eol < 0 {
			return nil
		}
		enc := strings.TrimSpace(string(lower[i+len("content-transfer-encoding:") : i+eol]))
		// The body starts after the blank line ending the part's headers.
		hdrEnd := bytes.Index(data[i:], []byte("\n\n"))
		crlf := bytes.Index(data[i:], []byte("\r\n\r\n"))
		switch {
		case crlf >= 0 && (hdrEnd < 0 || crlf < hdrEnd):
			hdrEnd = crlf + 4
		case hdrEnd >= 0:
			hdrEnd += 2
		default:
			return nil
		}
		body := data[i+hdrEnd:]
		if end := bytes.Index(body, []byte("\n--")); end >= 0 {
			body = body[:end]
		}
		off = i + hdrEnd
		n++
		p := fmt.Sprintf("%s!mime-part-%d", name, n)
		var dec []byte
		var err error
		switch enc {
		case "base64":
			dec, err = x.readAll(base64.NewDecoder(base64.StdEncoding, newlineStripper(body)), int64(len(body)))
		case "quoted-printable":
			dec, err = x.readAll(quotedprintable.NewReader(bytes.NewReader(body)), int64(len(body)))
		default:
			continue
		}
		if err != nil && !errors.Is(err, ErrBomb) {
			continue // a damaged body is skipped; its raw form was classified already
		}
		if err != nil {
			return fmt.Errorf("extract: %s: %w", p, err)
		}
		if err := x.walk(p, dec, depth+1); err != nil {
			return err
		}
	}
}

// newlineStripper drops CR and LF so base64 lines decode as one stream.
func newlineStripper(b []byte) io.Reader {
	var out bytes.Buffer
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		out.Write(bytes.TrimSpace(sc.Bytes()))
	}
	return &out
}

// pdf extracts a PDF's text within the file's remaining byte budget and the PDF limits.
// Text extracted before an error or a limit is still emitted.
func (x *extractor) pdf(name string, data []byte) error {
	left := x.lim.MaxBytes - x.used
	text, err := pdfText(data, pdfBudget{
		pages:    x.lim.MaxPDFPages,
		bytes:    left,
		stream:   min(left, 64<<20),
		deadline: time.Now().Add(x.lim.PDFTimeout),
	})
	if cerr := x.charge(int64(len(text))); cerr != nil && err == nil {
		err = cerr
	}
	x.emit(name+"!pdf", validUTF8Text(text))
	if err != nil {
		return fmt.Errorf("extract: %s: %w", name, err)
	}
	return nil
}
