// Package extract turns files into the text Ward classifies: Office Open XML (DOCX, XLSX,
// PPTX) and OpenDocument text, zip and gzip archives, UTF-16 text, and MIME bodies in
// base64 or quoted-printable. Archives are read with depth, entry and size limits, and an
// archive that expands past them (a zip bomb) is an error for that file, not an outage.
package extract

import (
	"archive/zip"
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"mime/quotedprintable"
	"path"
	"strings"
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
		return fmt.Errorf("extract: %s: PDF text extraction is not supported yet", name)
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

// xmlText keeps the character data of an XML part, with a line break after paragraphs,
// rows and cells so words of adjacent runs do not fuse ("SSN" "219-45-8765").
func xmlText(data []byte) []byte {
	dec := xml.NewDecoder(bytes.NewReader(data))
	dec.Strict = false
	var out bytes.Buffer
	for {
		tok, err := dec.RawToken()
		if err != nil {
			break
		}
		switch t := tok.(type) {
		case xml.CharData:
			out.Write(t)
		case xml.EndElement:
			switch t.Name.Local {
			case "p", "tr", "row", "br", "h":
				out.WriteByte('\n')
			case "tc", "c", "tab", "t", "v", "span":
				out.WriteByte(' ')
			}
		}
	}
	return out.Bytes()
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
