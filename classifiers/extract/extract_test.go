package extract

import (
	"archive/zip"
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"unicode/utf16"
)

func zipOf(t testing.TB, files map[string][]byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for name, data := range files {
		w, err := zw.Create(name)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(data)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func docx(t testing.TB, text string) []byte {
	return zipOf(t, map[string][]byte{
		"[Content_Types].xml": []byte(`<Types/>`),
		"word/document.xml": []byte(`<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"><w:body><w:p><w:r><w:t>SSN:</w:t></w:r><w:r><w:t>` +
			text + `</w:t></w:r></w:p></w:body></w:document>`),
		"word/media/image1.png": bytes.Repeat([]byte{0}, 1000),
	})
}

func texts(ps []Part) string {
	var b strings.Builder
	for _, p := range ps {
		b.WriteString(p.Path + "=" + string(p.Text) + "\n")
	}
	return b.String()
}

func TestFormats(t *testing.T) {
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(docx(t, "219-45-8765"))
	zw.Close()
	u16 := utf16.Encode([]rune("Patient SSN 219-45-8765"))
	le := []byte{0xff, 0xfe}
	for _, r := range u16 {
		le = append(le, byte(r), byte(r>>8))
	}
	mime := "Subject: x\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\n" +
		base64.StdEncoding.EncodeToString([]byte("SSN 219-45-8765 in an attachment")) + "\r\n--b--\r\n" +
		"Content-Transfer-Encoding: quoted-printable\r\n\r\nSSN=3A 219-45-=\r\n8765\r\n"
	cases := []struct {
		name string
		data []byte
		want string
	}{
		{"a.docx", docx(t, "219-45-8765"), "a.docx!word/document.xml=SSN: 219-45-8765 \n\n"},
		{"a.docx.gz", gz.Bytes(), "a.docx!gunzip!word/document.xml=SSN: 219-45-8765 \n\n"},
		{"a.txt", le, "a.txt!utf16=Patient SSN 219-45-8765\n"},
		{"nested.zip", zipOf(t, map[string][]byte{"inner/b.docx": docx(t, "529-63-1184")}), "nested.zip!inner/b.docx!word/document.xml=SSN: 529-63-1184 \n\n"},
	}
	for _, c := range cases {
		ps, err := File(c.name, c.data, Limits{})
		if err != nil || texts(ps) != c.want {
			t.Errorf("%s: %v\n%s\nwant\n%s", c.name, err, texts(ps), c.want)
		}
	}
	ps, err := File("m.eml", []byte(mime), Limits{})
	got := texts(ps)
	if err != nil || !strings.Contains(got, "mime-part-1=SSN 219-45-8765 in an attachment") || !strings.Contains(got, "mime-part-2=SSN: 219-45-8765") {
		t.Errorf("mime: %v\n%s", err, got)
	}
}

func TestBombsAreErrors(t *testing.T) {
	// 64 MiB of zeros compresses to ~64 KiB: over the ratio limit.
	big := zipOf(t, map[string][]byte{"zeros.txt": make([]byte, 64<<20)})
	if _, err := File("bomb.zip", big, Limits{}); !errors.Is(err, ErrBomb) {
		t.Fatalf("ratio bomb: %v", err)
	}
	if _, err := File("bomb.zip", big, Limits{MaxBytes: 1 << 20}); !errors.Is(err, ErrBomb) {
		t.Fatalf("size bomb: %v", err)
	}
	// Nesting deeper than the limit.
	data := []byte("SSN 219-45-8765")
	for i := 0; i < 6; i++ {
		data = zipOf(t, map[string][]byte{"x.zip": data})
	}
	if _, err := File("deep.zip", data, Limits{}); err == nil || !strings.Contains(err.Error(), "nested deeper") {
		t.Fatalf("deep: %v", err)
	}
	many := map[string][]byte{}
	for i := 0; i < 50; i++ {
		many[strings.Repeat("a", i+1)] = []byte("x")
	}
	if _, err := File("many.zip", zipOf(t, many), Limits{MaxEntries: 10}); !errors.Is(err, ErrBomb) {
		t.Fatalf("entries: %v", err)
	}
}

// FuzzFile checks that no input crashes extraction or escapes the byte budget.
func FuzzFile(f *testing.F) {
	f.Add(docx(f, "219-45-8765"))
	f.Add([]byte("Content-Transfer-Encoding: base64\n\nU1NO\n"))
	f.Add([]byte{0xff, 0xfe, 'a', 0})
	f.Add([]byte{0x1f, 0x8b, 8, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		ps, _ := File("f", data, Limits{MaxBytes: 1 << 20})
		total := 0
		for _, p := range ps {
			total += len(p.Text)
		}
		if total > 3<<20+len(data)*3 {
			t.Fatalf("extracted %d bytes from %d", total, len(data))
		}
	})
}
