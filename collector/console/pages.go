package console

import (
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"math"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/ward-dlp/ward/classifiers/catalog"
	"github.com/ward-dlp/ward/collector/report"
	"github.com/ward-dlp/ward/collector/store"
)

//go:embed assets/templates/*.html assets/static/*
var assets embed.FS

//go:embed openapi.yaml
var openapiSpec []byte

func parseTemplates() (*template.Template, error) {
	funcs := template.FuncMap{
		"bytes": report.HumanBytes,
		"time": func(t time.Time) string {
			if t.IsZero() {
				return "—"
			}
			return t.UTC().Format("2006-01-02 15:04:05")
		},
		"join": strings.Join,
		"can":  func(p *principal, perm string) bool { return p != nil && Allowed(p.role, Perm(perm)) },
	}
	t, err := template.New("").Funcs(funcs).ParseFS(assets, "assets/templates/*.html")
	if err != nil {
		return nil, fmt.Errorf("console: templates: %w", err)
	}
	return t, nil
}

// render executes the page template name inside the layout.
func (s *Server) render(w http.ResponseWriter, r *http.Request, code int, name string, data map[string]any) {
	p := principalFrom(r.Context())
	if data == nil {
		data = map[string]any{}
	}
	if p != nil && p.session.Stage == stageFull {
		data["Me"] = p
		data["CSRF"] = p.session.CSRF
	}
	data["Page"] = name
	data["Version"] = s.version
	var b strings.Builder
	if err := s.pages.ExecuteTemplate(&b, name, data); err != nil {
		s.log.Error("render", "page", name, "err", err)
		http.Error(w, "rendering failed", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(code)
	_, _ = w.Write([]byte(b.String()))
}

func (s *Server) static(w http.ResponseWriter, r *http.Request) {
	sub, _ := fs.Sub(assets, "assets")
	w.Header().Set("Cache-Control", "max-age=3600")
	http.FileServerFS(sub).ServeHTTP(w, r)
}

func (s *Server) openapi(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/yaml")
	_, _ = w.Write(openapiSpec)
}

// home sends each role to its first page.
func (s *Server) home(w http.ResponseWriter, r *http.Request) {
	p, ok := s.loadSession(r)
	if !ok || p.session.Stage != stageFull {
		http.Redirect(w, r, "/login", http.StatusSeeOther)
		return
	}
	for _, c := range []struct {
		perm Perm
		path string
	}{{PermEventsRead, "/events"}, {PermShadowITRead, "/shadow-it"}, {PermFleetRead, "/fleet"}} {
		if Allowed(p.role, c.perm) {
			http.Redirect(w, r, c.path, http.StatusSeeOther)
			return
		}
	}
	http.Redirect(w, r, "/audit", http.StatusSeeOther)
}

func (s *Server) eventsPage(w http.ResponseWriter, r *http.Request) {
	dq, err := s.parseEventQuery(r)
	if err != nil {
		s.deny(w, r, http.StatusBadRequest, err.Error())
		return
	}
	res, err := s.listEvents(r, dq)
	if err != nil {
		s.deny(w, r, http.StatusInternalServerError, "listing events failed")
		return
	}
	hosts, _ := s.st.FactValues(r.Context(), "host", 200)
	apps, _ := s.st.FactValues(r.Context(), "app", 200)
	cats, _ := s.st.FactValues(r.Context(), "category", 200)
	rules, _ := s.st.FactValues(r.Context(), "rule", 200)
	var newest int64
	if len(res.Events) > 0 {
		newest = res.Events[0].RowID
	}
	q := r.URL.Query()
	q.Del("before")
	s.render(w, r, http.StatusOK, "events", map[string]any{"Title": "Events", "Events": res.Events, "Next": res.Next,
		"Q": r.URL.Query(), "Query": q.Encode(), "Hosts": hosts, "Apps": apps, "Categories": cats, "Rules": rules, "Newest": newest,
		"Severities": []string{"info", "low", "medium", "high", "critical"}, "Actions": []string{"record", "alert", "block", "kill"},
		"Statuses": []string{"new", "investigating", "closed"}})
}

func (s *Server) eventPage(w http.ResponseWriter, r *http.Request) {
	d, ok := s.viewEvidence(w, r)
	if !ok {
		return
	}
	s.render(w, r, http.StatusOK, "event", map[string]any{"Title": fmt.Sprintf("Event %d", d.RowID), "E": d,
		"Next": transitions[d.Triage.Status], "Reasons": closeReasons,
		"DecisionRows": detailRows(d.Decision, decisionOrder), "FlowRows": detailRows(d.Flow, flowOrder)})
}

// sanctioningView tells an admin whether their decisions reach agents: the collector's
// sanctioning key and, per policy group, whether the group's newest bundle delegates to it.
type sanctioningView struct {
	Key    string
	Groups []groupDelegation
	Error  string
}

type groupDelegation struct {
	Group     string
	Version   uint64
	Delegated bool
}

func (s *Server) sanctioningView(r *http.Request) *sanctioningView {
	if s.sanctioner == nil {
		return nil
	}
	v := &sanctioningView{Key: s.sanctioner.VerifierKey()}
	bundles, err := s.st.PolicyBundles(r.Context())
	if err != nil {
		v.Error = "reading policy bundles failed"
		return v
	}
	latest := map[string]uint64{}
	for _, b := range bundles {
		latest[b.TargetGroup] = max(latest[b.TargetGroup], b.Version)
	}
	for g, ver := range latest {
		ok, err := s.sanctioner.Delegated(r.Context(), g)
		if err != nil {
			v.Error = err.Error()
		}
		v.Groups = append(v.Groups, groupDelegation{Group: g, Version: ver, Delegated: ok})
	}
	sort.Slice(v.Groups, func(i, j int) bool { return v.Groups[i].Group < v.Groups[j].Group })
	return v
}

// detailRow is one labelled value of an event's decision or flow.
type detailRow struct{ K, V string }

var (
	decisionOrder = []string{"rule", "outcome", "action", "action_taken", "severity", "policy", "policy_version", "enforcement",
		"monitor", "monitor_rules", "consent_id", "exception_id", "compliance"}
	flowOrder = []string{"transport", "direction", "local", "remote", "name", "name_source", "sni", "app", "category", "protocol",
		"tls_version", "ja4", "bytes_sent", "bytes_received", "state", "denied", "rule", "action_taken", "start", "end"}
)

// detailRows lists the set values of m in a fixed, readable order: empty strings, false,
// zero counts and empty lists are left out, so an analyst reads what happened rather than
// every field the event could have.
func detailRows(m map[string]any, order []string) []detailRow {
	var out []detailRow
	for _, k := range order {
		v, ok := m[k]
		if !ok {
			continue
		}
		var s string
		switch x := v.(type) {
		case string:
			s = x
		case bool:
			if x {
				s = "yes"
			}
		case []string:
			s = strings.Join(x, ", ")
		case uint64:
			if x != 0 {
				s = strconv.FormatUint(x, 10)
				if strings.HasPrefix(k, "bytes_") {
					s = report.HumanBytes(int64(x))
				}
			}
		default:
			s = fmt.Sprint(x)
		}
		if s == "" || strings.HasSuffix(s, "_UNSPECIFIED") {
			continue
		}
		out = append(out, detailRow{K: strings.ReplaceAll(k, "_", " "), V: s})
	}
	return out
}

func (s *Server) shadowPage(w http.ResponseWriter, r *http.Request) {
	d, err := s.loadShadow(r)
	if err != nil {
		s.deny(w, r, http.StatusBadRequest, err.Error())
		return
	}
	var deleg *sanctioningView
	if p := principalFrom(r.Context()); p != nil && Allowed(p.role, PermAppsSanction) {
		deleg = s.sanctioningView(r)
	}
	s.render(w, r, http.StatusOK, "shadow", map[string]any{"Title": "Shadow IT", "D": d, "Sum": d.Summary(), "Delegation": deleg,
		"TopChart": template.HTML(barChartSVG(d.TopByUpload(10))), "RiskChart": template.HTML(riskChartSVG(d.Apps)),
		"Trend": template.HTML(trendSVG(d.Daily, d.From, d.To)), "From": d.From.Format(time.DateOnly), "To": d.To.Format(time.DateOnly),
		"Back":     url.Values{"from": {d.From.Format(time.DateOnly)}, "to": {d.To.Format(time.DateOnly)}}.Encode(),
		"Statuses": []string{string(catalog.Sanctioned), string(catalog.Monitored), string(catalog.Unsanctioned)}})
}

func (s *Server) appPage(w http.ResponseWriter, r *http.Request) {
	d, err := s.appDetail(r)
	if errors.Is(err, store.ErrNoEvent) {
		s.notFound(w, r)
		return
	}
	if err != nil {
		s.deny(w, r, http.StatusBadRequest, err.Error())
		return
	}
	from, to, _ := s.period(r)
	s.render(w, r, http.StatusOK, "app", map[string]any{"Title": d.App.Name, "D": d, "Trend": template.HTML(trendSVG(d.Daily, from, to))})
}

func (s *Server) fleetPage(w http.ResponseWriter, r *http.Request) {
	f, err := s.fleet(r)
	if err != nil {
		s.deny(w, r, http.StatusInternalServerError, "reading the fleet failed")
		return
	}
	silent := 0
	for _, a := range f {
		if a.Silent {
			silent++
		}
	}
	data := map[string]any{"Title": "Fleet", "Agents": f, "Silent": silent, "Enrol": s.enr != nil}
	if p := principalFrom(r.Context()); p != nil && Allowed(p.role, PermTokensManage) {
		toks, err := s.st.EnrollTokens(r.Context(), s.now(), maxListedTokens)
		if err != nil {
			s.deny(w, r, http.StatusInternalServerError, "reading enrolment tokens failed")
			return
		}
		data["Tokens"] = toks
	}
	s.render(w, r, http.StatusOK, "fleet", data)
}

func (s *Server) auditPage(w http.ResponseWriter, r *http.Request) {
	a, err := s.auditLog(r)
	if err != nil {
		s.deny(w, r, http.StatusBadRequest, err.Error())
		return
	}
	s.render(w, r, http.StatusOK, "audit", map[string]any{"Title": "Audit log", "A": a})
}

func (s *Server) reportsPage(w http.ResponseWriter, r *http.Request) {
	to := s.now().UTC().Truncate(24 * time.Hour).Add(24 * time.Hour)
	s.render(w, r, http.StatusOK, "reports", map[string]any{"Title": "Reports", "From": to.AddDate(0, -1, 0).Format(time.DateOnly),
		"To": to.Format(time.DateOnly)})
}

func (s *Server) usersPage(w http.ResponseWriter, r *http.Request) {
	us, err := s.users(r)
	if err != nil {
		s.deny(w, r, http.StatusInternalServerError, "listing users failed")
		return
	}
	s.render(w, r, http.StatusOK, "users", map[string]any{"Title": "Users", "Users": us})
}

// Charts: server-rendered SVG with presentation attributes only (no style attributes, which
// the CSP's style-src 'self' would block), escaped text, fixed sizes.

func statusFill(status string) string {
	switch status {
	case "unsanctioned":
		return "#c43c32"
	case "sanctioned":
		return "#2e8c50"
	}
	return "#5a6e96"
}

func esc(s string) string { return template.HTMLEscapeString(s) }

func barChartSVG(rows []report.AppRow) string {
	if len(rows) == 0 {
		return `<p class="muted">No named application traffic in this period.</p>`
	}
	const w, rowH, labelW, valW = 720, 22, 180, 90
	h := len(rows)*rowH + 10
	var maxV int64 = 1
	for _, r := range rows {
		maxV = max(maxV, r.BytesUp)
	}
	var b strings.Builder
	fmt.Fprintf(&b, `<svg class="chart" role="img" aria-label="Top uploads by application" viewBox="0 0 %d %d" width="%d" height="%d" xmlns="http://www.w3.org/2000/svg">`, w, h, w, h)
	for i, r := range rows {
		y := i*rowH + 5
		bw := float64(w-labelW-valW) * float64(r.BytesUp) / float64(maxV)
		fmt.Fprintf(&b, `<text x="0" y="%d" font-size="12" fill="#222">%s</text>`, y+15, esc(r.AppName))
		fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%.1f" height="14" fill="%s"><title>%s: %s up (%s)</title></rect>`, labelW, y+3, math.Max(bw, 1), statusFill(r.Status), esc(r.AppName), report.HumanBytes(r.BytesUp), esc(r.Status))
		fmt.Fprintf(&b, `<text x="%d" y="%d" font-size="12" fill="#222" text-anchor="end">%s</text>`, w, y+15, report.HumanBytes(r.BytesUp))
	}
	b.WriteString(`</svg>`)
	return b.String()
}

func riskChartSVG(rows []report.AppRow) string {
	bands := []struct {
		name   string
		lo, hi int
		fill   string
	}{{"low (0-24)", 0, 24, "#2e8c50"}, {"medium (25-49)", 25, 49, "#dc8c1e"}, {"high (50+)", 50, 1000, "#c43c32"}}
	counts := make([]int, len(bands))
	for _, r := range rows {
		for i, bd := range bands {
			if r.RiskScore >= bd.lo && r.RiskScore <= bd.hi {
				counts[i]++
			}
		}
	}
	maxC := 1
	for _, c := range counts {
		maxC = max(maxC, c)
	}
	const w, h = 360, 150
	var b strings.Builder
	fmt.Fprintf(&b, `<svg class="chart" role="img" aria-label="Applications by risk" viewBox="0 0 %d %d" width="%d" height="%d" xmlns="http://www.w3.org/2000/svg">`, w, h, w, h)
	for i, bd := range bands {
		bh := float64(h-40) * float64(counts[i]) / float64(maxC)
		x := 20 + i*110
		fmt.Fprintf(&b, `<rect x="%d" y="%.1f" width="80" height="%.1f" fill="%s"><title>%s: %d</title></rect>`, x, float64(h-25)-bh, math.Max(bh, 1), bd.fill, bd.name, counts[i])
		fmt.Fprintf(&b, `<text x="%d" y="%d" font-size="11" text-anchor="middle" fill="#222">%s</text>`, x+40, h-10, bd.name)
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" font-size="12" text-anchor="middle" fill="#222">%d</text>`, x+40, float64(h-30)-bh, counts[i])
	}
	b.WriteString(`</svg>`)
	return b.String()
}

// trendSVG draws bytes up per day as a line with one point per day of the period.
func trendSVG(daily []store.DailyUsage, from, to time.Time) string {
	perDay := map[string]int64{}
	for _, d := range daily {
		perDay[d.Day] += d.BytesUp
	}
	var days []string
	for t := from.UTC().Truncate(24 * time.Hour); t.Before(to) && len(days) < 400; t = t.Add(24 * time.Hour) {
		days = append(days, t.Format(time.DateOnly))
	}
	if len(days) == 0 {
		return ""
	}
	var maxV int64
	for _, d := range days {
		maxV = max(maxV, perDay[d])
	}
	if maxV == 0 {
		return fmt.Sprintf(`<p class="muted">No uploads between %s and %s.</p>`, days[0], days[len(days)-1])
	}
	const w, h, pad = 720, 160, 30
	var b strings.Builder
	fmt.Fprintf(&b, `<svg class="chart" role="img" aria-label="Bytes uploaded per day" viewBox="0 0 %d %d" width="%d" height="%d" xmlns="http://www.w3.org/2000/svg">`, w, h, w, h)
	fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#999"/>`, pad, h-pad, w-5, h-pad)
	var pts []string
	step := float64(w-pad-5) / math.Max(1, float64(len(days)-1))
	for i, d := range days {
		x := float64(pad) + step*float64(i)
		y := float64(h-pad) - float64(h-2*pad)*float64(perDay[d])/float64(maxV)
		pts = append(pts, fmt.Sprintf("%.1f,%.1f", x, y))
		if perDay[d] > 0 {
			fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="3" fill="#2a4d8f"><title>%s: %s up</title></circle>`, x, y, d, report.HumanBytes(perDay[d]))
		}
	}
	fmt.Fprintf(&b, `<polyline points="%s" fill="none" stroke="#2a4d8f" stroke-width="2"/>`, strings.Join(pts, " "))
	fmt.Fprintf(&b, `<text x="%d" y="%d" font-size="11" fill="#444">%s</text>`, pad, h-10, days[0])
	fmt.Fprintf(&b, `<text x="%d" y="%d" font-size="11" fill="#444" text-anchor="end">%s</text>`, w-5, h-10, days[len(days)-1])
	fmt.Fprintf(&b, `<text x="%d" y="14" font-size="11" fill="#444">max %s/day</text>`, pad, report.HumanBytes(maxV))
	b.WriteString(`</svg>`)
	return b.String()
}
