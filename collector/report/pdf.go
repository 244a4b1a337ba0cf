package report

import (
	"bytes"
	"fmt"
	"time"

	"github.com/go-pdf/fpdf"
)

// pdfDoc wraps fpdf with the few layouts the reports use: a header with the period and the
// manifest's provenance, sections, key/value lists, horizontal bar charts and tables that
// repeat their header on each page. Core fonts only (cp1252), so nothing is loaded from
// disk or the network; text is translated from UTF-8.
type pdfDoc struct {
	f  *fpdf.Fpdf
	tr func(string) string
	w  float64 // usable width
}

const pdfMargin = 9.0

func newPDF(title string, m Manifest) *pdfDoc {
	f := fpdf.New("L", "mm", "A4", "")
	f.SetMargins(pdfMargin, pdfMargin, pdfMargin)
	f.SetAutoPageBreak(true, 12)
	// Fixed dates make the PDF a function of the report's content and generation time, so
	// regenerating with the same inputs gives the same bytes and hash.
	f.SetCreationDate(m.GeneratedAt)
	f.SetModificationDate(m.GeneratedAt)
	f.SetCatalogSort(true)
	f.SetTitle(title, true)
	f.SetCreator("Ward "+m.Collector, true)
	p := &pdfDoc{f: f, tr: f.UnicodeTranslatorFromDescriptor("")}
	pw, _ := f.GetPageSize()
	p.w = pw - 2*pdfMargin
	f.SetFooterFunc(func() {
		f.SetY(-9)
		f.SetFont("Helvetica", "", 7)
		f.SetTextColor(110, 110, 110)
		f.CellFormat(0, 4, p.tr(fmt.Sprintf("Ward %s report, %s to %s. Page %d of {nb}. Verify with manifest.json / SHA256SUMS.",
			m.Report, m.From.Format(time.RFC3339), m.To.Format(time.RFC3339), f.PageNo())), "", 0, "C", false, 0, "")
	})
	f.AliasNbPages("{nb}")
	f.AddPage()
	f.SetFont("Helvetica", "B", 16)
	f.SetTextColor(20, 40, 70)
	f.CellFormat(0, 9, p.tr(title), "", 1, "L", false, 0, "")
	f.SetFont("Helvetica", "", 9)
	f.SetTextColor(60, 60, 60)
	by := m.GeneratedBy
	if by == "" {
		by = "unknown"
	}
	f.CellFormat(0, 5, p.tr(fmt.Sprintf("Period: %s to %s (UTC, end exclusive)", m.From.Format("2006-01-02 15:04"), m.To.Format("2006-01-02 15:04"))), "", 1, "L", false, 0, "")
	f.CellFormat(0, 5, p.tr(fmt.Sprintf("Generated %s by %s; collector %s; app catalog %s", m.GeneratedAt.Format(time.RFC3339), by, m.Collector, m.Catalog)), "", 1, "L", false, 0, "")
	f.Ln(2)
	return p
}

func (p *pdfDoc) section(title string) {
	f := p.f
	f.Ln(2)
	f.SetFont("Helvetica", "B", 12)
	f.SetTextColor(20, 40, 70)
	f.CellFormat(0, 7, p.tr(title), "B", 1, "L", false, 0, "")
	f.Ln(1)
}

func (p *pdfDoc) para(text string) {
	f := p.f
	f.SetFont("Helvetica", "", 9)
	f.SetTextColor(30, 30, 30)
	f.MultiCell(0, 4.5, p.tr(text), "", "L", false)
	f.Ln(1)
}

func (p *pdfDoc) keyValues(kv [][2]string) {
	f := p.f
	for _, e := range kv {
		f.SetFont("Helvetica", "", 9)
		f.SetTextColor(80, 80, 80)
		f.CellFormat(70, 5, p.tr(e[0]), "", 0, "L", false, 0, "")
		f.SetFont("Helvetica", "B", 9)
		f.SetTextColor(20, 20, 20)
		f.CellFormat(0, 5, p.tr(e[1]), "", 1, "L", false, 0, "")
	}
}

type bar struct {
	label  string
	value  float64
	text   string
	status string
}

// statusColour colours bars by sanction status or disclosure outcome.
func statusColour(s string) (int, int, int) {
	switch s {
	case "unsanctioned", "blocked":
		return 196, 60, 50
	case "sanctioned", "consented":
		return 46, 140, 80
	case "alerted":
		return 220, 140, 30
	}
	return 90, 110, 150
}

func (p *pdfDoc) barChart(bars []bar) {
	f := p.f
	maxV := 0.0
	for _, b := range bars {
		maxV = max(maxV, b.value)
	}
	labelW, textW := 60.0, 30.0
	chartW := p.w - labelW - textW
	for _, b := range bars {
		f.SetFont("Helvetica", "", 8)
		f.SetTextColor(30, 30, 30)
		f.CellFormat(labelW, 5, p.fit(b.label, labelW), "", 0, "L", false, 0, "")
		x, y := f.GetXY()
		w := 0.0
		if maxV > 0 {
			w = chartW * b.value / maxV
		}
		r, g, bl := statusColour(b.status)
		f.SetFillColor(r, g, bl)
		if w > 0 {
			f.Rect(x, y+0.8, w, 3.4, "F")
		}
		f.SetXY(x+chartW, y)
		f.CellFormat(textW, 5, p.tr(b.text), "", 1, "R", false, 0, "")
	}
}

type column struct {
	title string
	width float64
}

func (p *pdfDoc) header(cols []column) {
	f := p.f
	f.SetFont("Helvetica", "B", 7.5)
	f.SetFillColor(225, 231, 240)
	f.SetTextColor(20, 20, 20)
	for _, c := range cols {
		f.CellFormat(c.width, 5.5, p.tr(c.title), "1", 0, "L", true, 0, "")
	}
	f.Ln(-1)
}

func (p *pdfDoc) table(cols []column, rows [][]string) {
	f := p.f
	p.header(cols)
	_, pageH := f.GetPageSize()
	_, _, _, bottom := f.GetMargins()
	for i, r := range rows {
		if f.GetY()+5 > pageH-bottom-6 {
			f.AddPage()
			p.header(cols)
		}
		f.SetFont("Helvetica", "", 7)
		f.SetTextColor(20, 20, 20)
		fill := i%2 == 1
		f.SetFillColor(246, 248, 251)
		for j, c := range cols {
			v := ""
			if j < len(r) {
				v = r[j]
			}
			f.CellFormat(c.width, 5, p.fit(v, c.width-1.5), "1", 0, "L", fill, 0, "")
		}
		f.Ln(-1)
	}
}

// fit translates s and shortens it with an ellipsis to fit width w in the current font.
func (p *pdfDoc) fit(s string, w float64) string {
	t := p.tr(s)
	if p.f.GetStringWidth(t) <= w {
		return t
	}
	ell := p.tr("…")
	r := []rune(s)
	for len(r) > 0 {
		r = r[:len(r)-1]
		t = p.tr(string(r)) + ell
		if p.f.GetStringWidth(t) <= w {
			return t
		}
	}
	return ""
}

func (p *pdfDoc) output() ([]byte, error) {
	var b bytes.Buffer
	if err := p.f.Output(&b); err != nil {
		return nil, fmt.Errorf("report: pdf: %w", err)
	}
	return b.Bytes(), nil
}
