package extract

import (
	"bytes"
	"encoding/xml"
	"errors"
	"io"
	"strings"
	"testing"
)

// xmlTextStd is the encoding/xml tokenizer version xmlText replaced; it is the reference
// for well-formed parts, on which both must agree.
func xmlTextStd(data []byte) ([]byte, error) {
	dec := xml.NewDecoder(bytes.NewReader(data))
	dec.Strict = false
	var out bytes.Buffer
	for {
		tok, err := dec.RawToken()
		if errors.Is(err, io.EOF) {
			return out.Bytes(), nil
		}
		if err != nil {
			return out.Bytes(), err
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
}

var officeParts = []string{
	// WordprocessingML with runs, tabs, breaks, entities and a comment.
	`<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"><w:body><!-- generated -->
<w:p><w:pPr><w:jc w:val="left"/></w:pPr><w:r><w:rPr><w:b/></w:rPr><w:t>SSN:</w:t></w:r><w:r><w:t xml:space="preserve"> 219-45-8765 &amp; DOB&#160;04/12/1985</w:t></w:r></w:p>
<w:p><w:r><w:t>Dx F11.20</w:t><w:tab/><w:t>MAT &lt;buprenorphine&gt; &#x2014; &quot;OTP&quot; &apos;x&apos;</w:t><w:br/><w:t>next line</w:t></w:r></w:p>
<w:tbl><w:tr><w:tc><w:p><w:r><w:t>MRN</w:t></w:r></w:p></w:tc><w:tc><w:p><w:r><w:t>RB-0048812</w:t></w:r></w:p></w:tc></w:tr></w:tbl>
</w:body></w:document>`,
	// SpreadsheetML shared strings and a sheet.
	`<sst xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" count="3"><si><t>last</t></si><si><r><rPr><b/></rPr><t>Sample</t></r><r><t xml:space="preserve"> Jordan</t></r></si><si><t><![CDATA[a < b & c]]></t></si></sst>`,
	`<worksheet><sheetData><row r="1"><c r="A1" t="s"><v>0</v></c><c r="B1"><v>219458765</v></c></row><row r="2"><c r="A2" t="inlineStr"><is><t>Phone: (503) 555-2142</t></is></c></row></sheetData></worksheet>`,
	// PresentationML and ODF with attribute values containing '>' and '/'.
	`<p:sld xmlns:p="p" xmlns:a="a"><p:cSld><p:spTree><p:sp><p:txBody><a:p><a:r><a:rPr lang="en-US" dirty="0"/><a:t>Redisclosure prohibited</a:t></a:r></a:p></p:txBody></p:sp></p:spTree></p:cSld></p:sld>`,
	`<office:document-content xmlns:office="o" xmlns:text="t"><office:body><office:text><text:h text:outline-level="1">Notice</text:h><text:p text:style-name="P1" note="a>b/c">42 CFR part 2<text:span text:style-name="T1"> prohibits</text:span> unauthorized disclosure<text:line-break/>of these records.</text:p></office:text></office:body></office:document-content>`,
}

func TestXMLTextMatchesEncodingXML(t *testing.T) {
	for i, p := range officeParts {
		want, err := xmlTextStd([]byte(p))
		if err != nil {
			t.Fatalf("part %d is not well-formed: %v", i, err)
		}
		got := xmlText([]byte(p))
		if !bytes.Equal(got, want) {
			t.Errorf("part %d:\n got %q\nwant %q", i, got, want)
		}
	}
	// The benchmark DOCX body.
	d := docx(t, strings.Repeat("Patient seen &amp; BP 128/82; plan &lt;continue&gt;. ", 200))
	ps, err := File("n.docx", d, Limits{})
	if err != nil || len(ps) != 1 || !strings.Contains(string(ps[0].Text), "SSN: Patient seen & BP 128/82; plan <continue>.") {
		t.Fatalf("docx: %v %q", err, texts(ps))
	}
}

// TestXMLTextHostile: malformed parts end quietly; entities are never expanded.
func TestXMLTextHostile(t *testing.T) {
	for in, want := range map[string]string{
		`<!DOCTYPE x [<!ENTITY e "EXPANDED">]><p>&e;</p>`: "&e;\n",
		`<p>unterminated <b attr="x>y`:                    "unterminated ",
		`<p>a &bogus b &#xZZ; c &#1114112; d</p>`:         "a &bogus b &#xZZ; c &#1114112; d\n",
		`<![CDATA[open`:      "open",
		`<!-- open`:          "",
		"<p>\xff\xfe ok</p>": "\xff\xfe ok\n",
	} {
		if got := string(xmlText([]byte(in))); got != want {
			t.Errorf("%q: got %q, want %q", in, got, want)
		}
	}
}

func FuzzXMLText(f *testing.F) {
	for _, p := range officeParts {
		f.Add([]byte(p))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		got := xmlText(data)
		if len(got) > len(data)*2+16 {
			t.Fatalf("%d bytes of text from %d", len(got), len(data))
		}
		// On well-formed input without character references beyond what encoding/xml
		// decodes, both implementations agree.
		if want, err := xmlTextStd(data); err == nil && !bytes.ContainsAny(data, "\r&") && !bytes.Contains(data, []byte("<!")) {
			if !bytes.Equal(got, want) {
				t.Fatalf("got %q, want %q", got, want)
			}
		}
	})
}
