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

	wardv1 "github.com/ward-dlp/ward/api/ward/v1"
	"github.com/ward-dlp/ward/collector/store"
)

// Part2Row is one finding of 42 CFR Part 2 data: a disclosure, attempted or made, and what
// policy did about it.
type Part2Row struct {
	RowID    int64     `json:"rowid"`
	EventID  string    `json:"event_id"`
	Time     time.Time `json:"time"`
	Host     string    `json:"host"`
	User     string    `json:"user"`
	Process  string    `json:"process"`
	PID      uint32    `json:"pid"`
	Target   string    `json:"target"`
	Rule     string    `json:"rule"`
	Action   string    `json:"action_taken"`
	Outcome  string    `json:"outcome"` // blocked | consented | alerted | recorded
	Consent  string    `json:"consent_id,omitempty"`
	Policy   string    `json:"policy"`
	Severity string    `json:"severity"`
	// Detectors lists detector:count:confidence.
	Detectors []string `json:"detectors"`
	// Masked are masked samples only; raw values never reach the collector.
	Masked     []string `json:"masked_samples"`
	Compliance []string `json:"compliance"`
	Triage     string   `json:"triage"`
	Reason     string   `json:"triage_reason,omitempty"`
}

// Part2Data is the Part 2 disclosure report of a period.
type Part2Data struct {
	From, To time.Time
	Rows     []Part2Row
}

// ActionName is the short name of an action ("block").
func ActionName(a wardv1.Action) string {
	if a == wardv1.Action_ACTION_UNSPECIFIED {
		return ""
	}
	return strings.ToLower(strings.TrimPrefix(a.String(), "ACTION_"))
}

// SeverityName is the short name of a severity ("high").
func SeverityName(s wardv1.Severity) string {
	if s == wardv1.Severity_SEVERITY_UNSPECIFIED {
		return ""
	}
	return strings.ToLower(strings.TrimPrefix(s.String(), "SEVERITY_"))
}

// Outcome classifies a decision for the disclosure report.
func Outcome(d *wardv1.Decision) string {
	taken := d.GetActionTaken()
	if taken == wardv1.Action_ACTION_UNSPECIFIED {
		taken = d.GetAction()
	}
	switch {
	case taken == wardv1.Action_ACTION_BLOCK || taken == wardv1.Action_ACTION_KILL:
		return "blocked"
	case d.GetConsentId() != "":
		return "consented"
	case taken == wardv1.Action_ACTION_ALERT:
		return "alerted"
	}
	return "recorded"
}

// LoadPart2 reads every Part 2 finding of [from, to), oldest first.
func LoadPart2(ctx context.Context, src Sources, from, to time.Time) (*Part2Data, error) {
	d := &Part2Data{From: from, To: to}
	q := store.DetectionQuery{From: from, To: to, DataClass: wardv1.DataClass_DATA_CLASS_PART2, Kind: store.KindFinding, Limit: 1000}
	for {
		page, err := src.Store.Detections(ctx, q)
		if err != nil {
			return nil, fmt.Errorf("report: %w", err)
		}
		for _, det := range page {
			row, err := part2Row(ctx, src.Store, det)
			if err != nil {
				return nil, err
			}
			d.Rows = append(d.Rows, row)
		}
		if len(page) < q.Limit {
			break
		}
		q.BeforeRowID = page[len(page)-1].RowID
	}
	sort.SliceStable(d.Rows, func(i, j int) bool { return d.Rows[i].Time.Before(d.Rows[j].Time) })
	return d, nil
}

func part2Row(ctx context.Context, st *store.Store, det store.Detection) (Part2Row, error) {
	row := Part2Row{RowID: det.RowID, Time: det.Time, Host: det.Host, Rule: det.Rule, Consent: det.Consent,
		Action: ActionName(det.Action), Severity: SeverityName(det.Severity), Triage: det.Status, Reason: det.StatusReason,
		Detectors: []string{}, Masked: []string{}, Compliance: []string{}}
	e, err := st.EventByRowID(ctx, det.RowID)
	if err != nil {
		return row, fmt.Errorf("report: event %d: %w", det.RowID, err)
	}
	ev, err := e.Event()
	if err != nil {
		// Evidence that cannot be decrypted (a missing key) is reported as such rather than
		// dropping the disclosure from the accounting.
		row.Target = "(evidence unavailable: " + err.Error() + ")"
		row.Outcome = "unknown"
		return row, nil
	}
	f := ev.GetFinding()
	row.EventID = ev.GetId()
	row.User = f.GetProcess().GetUser()
	row.Process = f.GetProcess().GetExe()
	row.PID = f.GetProcess().GetPid()
	row.Target = f.GetFile().GetPath()
	row.Outcome = Outcome(f.GetDecision())
	row.Policy = strings.TrimSpace(f.GetDecision().GetPolicyName() + " " + f.GetDecision().GetPolicyVersion())
	row.Compliance = append(row.Compliance, f.GetDecision().GetComplianceTags()...)
	for _, m := range f.GetMatches() {
		row.Detectors = append(row.Detectors, fmt.Sprintf("%s:%d:%d", m.GetDetector(), m.GetCount(), m.GetConfidence()))
		row.Masked = append(row.Masked, m.GetMaskedSamples()...)
	}
	return row, nil
}

// CSV is one row per finding.
func (d *Part2Data) CSV() ([]byte, error) {
	var b bytes.Buffer
	w := csv.NewWriter(&b)
	_ = w.Write([]string{"time", "event_id", "host", "user", "process", "pid", "target", "rule", "action_taken", "outcome",
		"consent_id", "policy", "severity", "detectors", "masked_samples", "compliance", "triage", "triage_reason"})
	for _, r := range d.Rows {
		_ = w.Write([]string{formatTime(r.Time), r.EventID, csvSafe(r.Host), csvSafe(r.User), csvSafe(r.Process),
			strconv.FormatUint(uint64(r.PID), 10), csvSafe(r.Target), csvSafe(r.Rule), r.Action, r.Outcome, csvSafe(r.Consent),
			csvSafe(r.Policy), r.Severity, strings.Join(r.Detectors, ";"), csvSafe(strings.Join(r.Masked, ";")),
			strings.Join(r.Compliance, ";"), r.Triage, csvSafe(r.Reason)})
	}
	w.Flush()
	if err := w.Error(); err != nil {
		return nil, fmt.Errorf("report: csv: %w", err)
	}
	return b.Bytes(), nil
}

// Counts totals findings by outcome.
func (d *Part2Data) Counts() map[string]int {
	c := map[string]int{}
	for _, r := range d.Rows {
		c[r.Outcome]++
	}
	return c
}

// PDF renders the report.
func (d *Part2Data) PDF(m Manifest) ([]byte, error) {
	p := newPDF("42 CFR Part 2 disclosure report", m)
	c := d.Counts()
	p.section("Summary")
	p.para("Every finding of 42 CFR Part 2 substance-use-disorder records in the period: where the data went, what " +
		"policy did, and whether an active patient consent (42 CFR 2.31) covered the disclosure. Samples are masked; " +
		"Ward never stores matched values.")
	p.keyValues([][2]string{
		{"Findings", strconv.Itoa(len(d.Rows))},
		{"Blocked", strconv.Itoa(c["blocked"])},
		{"Consented disclosures", strconv.Itoa(c["consented"])},
		{"Alerted (no consent)", strconv.Itoa(c["alerted"])},
		{"Recorded only", strconv.Itoa(c["recorded"])},
	})
	if len(d.Rows) > 0 {
		p.section("By outcome")
		var bars []bar
		for _, o := range []string{"blocked", "consented", "alerted", "recorded"} {
			bars = append(bars, bar{label: o, value: float64(c[o]), text: strconv.Itoa(c[o]), status: o})
		}
		p.barChart(bars)
	}
	p.section("Findings")
	cols := []column{{"Time (UTC)", 30}, {"Host", 26}, {"User", 22}, {"Process", 34}, {"Target", 62}, {"Rule", 40},
		{"Outcome", 20}, {"Consent", 24}, {"Masked samples", 20}}
	var rows [][]string
	for _, r := range d.Rows {
		rows = append(rows, []string{r.Time.UTC().Format("2006-01-02 15:04:05"), r.Host, r.User, r.Process, r.Target, r.Rule,
			r.Outcome, r.Consent, strings.Join(r.Masked, " ")})
	}
	p.table(cols, rows)
	if len(rows) == 0 {
		p.para("No Part 2 findings in this period.")
	}
	return p.output()
}
