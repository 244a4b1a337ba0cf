package report

import (
	"bytes"
	"context"
	"encoding/csv"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/ward-dlp/ward/classifiers/catalog"
	"github.com/ward-dlp/ward/collector/store"
)

// DefaultStatus is the status of a catalogued app nobody has decided about: monitored, so
// nothing is called unsanctioned without a decision by the clinic (catalog.DefaultPolicy).
const DefaultStatus = catalog.Monitored

// AppRow is one application in the shadow-IT report and view.
type AppRow struct {
	store.AppUsage
	Vendor      string   `json:"vendor"`
	Status      string   `json:"status"`
	StatusBy    string   `json:"status_changed_by,omitempty"`
	RiskScore   int      `json:"risk_score"`
	RiskFactors []string `json:"risk_factors"`
	BAA         string   `json:"baa"`
	// New is true when the app's first flow ever falls inside the period.
	New bool `json:"new"`
}

// ShadowITData is the shadow-IT picture of a period.
type ShadowITData struct {
	From         time.Time          `json:"from"`
	To           time.Time          `json:"to"`
	Apps         []AppRow           `json:"apps"`
	Daily        []store.DailyUsage `json:"daily"`
	UnnamedFlows int64              `json:"unnamed_flows"`
	UnnamedUp    int64              `json:"unnamed_bytes_up"`
}

// LoadShadowIT aggregates the period's named flows with the catalog and the clinic's
// sanction decisions.
func LoadShadowIT(ctx context.Context, src Sources, from, to time.Time) (*ShadowITData, error) {
	cat := src.Catalog
	if cat == nil {
		c, err := catalog.Builtin()
		if err != nil {
			return nil, err
		}
		cat = c
	}
	usage, err := src.Store.AppUsageInPeriod(ctx, from, to)
	if err != nil {
		return nil, fmt.Errorf("report: %w", err)
	}
	decisions, err := src.Store.AppSanctions(ctx)
	if err != nil {
		return nil, fmt.Errorf("report: %w", err)
	}
	daily, err := src.Store.AppDailyUsage(ctx, "", from, to)
	if err != nil {
		return nil, fmt.Errorf("report: %w", err)
	}
	d := &ShadowITData{From: from, To: to, Daily: daily}
	if d.UnnamedFlows, d.UnnamedUp, err = src.Store.UnnamedFlows(ctx, from, to); err != nil {
		return nil, fmt.Errorf("report: %w", err)
	}
	for _, u := range usage {
		row := AppRow{AppUsage: u, Status: string(DefaultStatus), BAA: "unknown", RiskFactors: []string{}}
		if a := cat.ByID(u.App); a != nil {
			row.Vendor, row.RiskScore, row.RiskFactors, row.BAA = a.Vendor, a.Risk.Score, a.Risk.Factors, a.BAA.Offered
			if row.AppName == "" {
				row.AppName = a.Name
			}
			if row.Category == "" {
				row.Category = string(a.Category)
			}
		}
		if s, ok := decisions[u.App]; ok {
			row.Status, row.StatusBy = s.Status, s.ChangedBy
		}
		row.New = !u.FirstSeenEver.Before(from)
		d.Apps = append(d.Apps, row)
	}
	return d, nil
}

func formatTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

// csvSafe defuses spreadsheet formula injection: a cell that a spreadsheet would evaluate
// (starting with = + - @ or a control character) gets a leading apostrophe. App names and
// user names come from the network and hosts, so they are not trusted.
func csvSafe(s string) string {
	if s != "" && strings.ContainsRune("=+-@\t\r", rune(s[0])) {
		return "'" + s
	}
	return s
}

// CSV is one row per app.
func (d *ShadowITData) CSV() ([]byte, error) {
	var b bytes.Buffer
	w := csv.NewWriter(&b)
	_ = w.Write([]string{"app_id", "app_name", "vendor", "category", "sanction_status", "risk_score", "risk_factors", "baa",
		"first_seen", "last_seen", "new_in_period", "users", "devices", "flows", "blocked_flows", "bytes_up", "bytes_down"})
	for _, a := range d.Apps {
		_ = w.Write([]string{csvSafe(a.App), csvSafe(a.AppName), csvSafe(a.Vendor), csvSafe(a.Category), a.Status,
			strconv.Itoa(a.RiskScore), strings.Join(a.RiskFactors, ";"), a.BAA, formatTime(a.FirstSeen), formatTime(a.LastSeen),
			strconv.FormatBool(a.New), strconv.FormatInt(a.Users, 10), strconv.FormatInt(a.Hosts, 10),
			strconv.FormatInt(a.Flows, 10), strconv.FormatInt(a.Blocked, 10), strconv.FormatInt(a.BytesUp, 10),
			strconv.FormatInt(a.BytesDown, 10)})
	}
	w.Flush()
	if err := w.Error(); err != nil {
		return nil, fmt.Errorf("report: csv: %w", err)
	}
	return b.Bytes(), nil
}

// Summary counts apps by status and risk band.
type Summary struct {
	Apps, Unsanctioned, Sanctioned, Monitored, HighRisk, New int
	BytesUp                                                  int64
	UnsanctionedUp                                           int64
}

// Summary totals the rows.
func (d *ShadowITData) Summary() Summary {
	var s Summary
	for _, a := range d.Apps {
		s.Apps++
		s.BytesUp += a.BytesUp
		switch catalog.Status(a.Status) {
		case catalog.Sanctioned:
			s.Sanctioned++
		case catalog.Unsanctioned:
			s.Unsanctioned++
			s.UnsanctionedUp += a.BytesUp
		default:
			s.Monitored++
		}
		if a.RiskScore >= 50 {
			s.HighRisk++
		}
		if a.New {
			s.New++
		}
	}
	return s
}

// HumanBytes prints a byte count with binary units.
func HumanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// TopByUpload returns up to n apps with the most bytes up.
func (d *ShadowITData) TopByUpload(n int) []AppRow {
	rows := append([]AppRow(nil), d.Apps...)
	sort.SliceStable(rows, func(i, j int) bool { return rows[i].BytesUp > rows[j].BytesUp })
	if len(rows) > n {
		rows = rows[:n]
	}
	return rows
}

// PDF renders the report.
func (d *ShadowITData) PDF(m Manifest) ([]byte, error) {
	p := newPDF("Shadow-IT discovery report", m)
	s := d.Summary()
	p.section("Summary")
	p.keyValues([][2]string{
		{"Applications seen", strconv.Itoa(s.Apps)},
		{"Sanctioned / monitored / unsanctioned", fmt.Sprintf("%d / %d / %d", s.Sanctioned, s.Monitored, s.Unsanctioned)},
		{"High risk (score >= 50)", strconv.Itoa(s.HighRisk)},
		{"New in this period", strconv.Itoa(s.New)},
		{"Uploaded to named apps", HumanBytes(s.BytesUp)},
		{"Uploaded to unsanctioned apps", HumanBytes(s.UnsanctionedUp)},
		{"Flows no catalog app named", fmt.Sprintf("%d (%s up)", d.UnnamedFlows, HumanBytes(d.UnnamedUp))},
	})
	top := d.TopByUpload(10)
	if len(top) > 0 {
		p.section("Top uploads by application")
		bars := make([]bar, 0, len(top))
		for _, a := range top {
			bars = append(bars, bar{label: a.AppName, value: float64(a.BytesUp), text: HumanBytes(a.BytesUp), status: a.Status})
		}
		p.barChart(bars)
	}
	p.section("Applications")
	cols := []column{{"Application", 42}, {"Category", 30}, {"Status", 24}, {"Risk", 12}, {"BAA", 16}, {"Users", 14},
		{"Devices", 16}, {"Flows", 16}, {"Up", 22}, {"Down", 22}, {"First seen", 32}, {"Last seen", 32}}
	var rows [][]string
	for _, a := range d.Apps {
		name := a.AppName
		if a.New {
			name += " (new)"
		}
		rows = append(rows, []string{name, a.Category, a.Status, strconv.Itoa(a.RiskScore), a.BAA,
			strconv.FormatInt(a.Users, 10), strconv.FormatInt(a.Hosts, 10), strconv.FormatInt(a.Flows, 10),
			HumanBytes(a.BytesUp), HumanBytes(a.BytesDown), a.FirstSeen.UTC().Format("2006-01-02 15:04"),
			a.LastSeen.UTC().Format("2006-01-02 15:04")})
	}
	p.table(cols, rows)
	if len(rows) == 0 {
		p.para("No named application traffic in this period.")
	}
	return p.output()
}
