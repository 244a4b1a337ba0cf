package console

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/hex"
	"errors"
	"fmt"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
	"github.com/ledongthuc/pdf"

	"github.com/ward-dlp/ward/collector/console/account"
	"github.com/ward-dlp/ward/collector/enroll"
	"github.com/ward-dlp/ward/collector/report/reporttest"
	"github.com/ward-dlp/ward/collector/store"
)

// chromiumPath finds Debian's chromium. In CI (CI set) a missing browser fails the test;
// elsewhere it skips with a message saying how to get it.
func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, name := range []string{os.Getenv("WARD_CHROMIUM"), "chromium", "chromium-browser", "/usr/bin/chromium"} {
		if name == "" {
			continue
		}
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("chromium is not installed, and this is CI: run scripts/deps.sh test (it installs Debian's chromium)")
	}
	t.Skip("chromium is not installed (apt-get install chromium, or scripts/deps.sh test); the browser tests need it")
	return ""
}

// artefactDir is where screenshots and downloads are kept: $WARD_ARTIFACTS, else a new
// directory in the temporary directory that outlives the test so a person can look at it.
func artefactDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("WARD_ARTIFACTS")
	if dir != "" {
		dir = filepath.Join(dir, "console-browser")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	} else {
		var err error
		if dir, err = os.MkdirTemp("", "ward-console-browser-"); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("browser test artefacts (screenshots, downloads): %s", dir)
	return dir
}

// cspProbe records Content-Security-Policy violations in the page. It runs through the
// DevTools protocol before any page script, so the console's CSP does not apply to it.
const cspProbe = `window.__wardCSP = []; document.addEventListener('securitypolicyviolation',
  (e) => window.__wardCSP.push(e.violatedDirective + ' ' + e.blockedURI));`

// web drives one headless Chromium tab against the console.
type web struct {
	t   *testing.T
	e   *env
	ctx context.Context
	dir string

	mu       sync.Mutex
	requests []string // every URL the browser asked for
}

func newWeb(t *testing.T, e *env) *web {
	t.Helper()
	path := chromiumPath(t)
	opts := append(slices.Clone(chromedp.DefaultExecAllocatorOptions[:]),
		chromedp.ExecPath(path),
		// The console's certificate comes from the test's own CA, which this throwaway
		// profile does not trust; every check below is about the console, not the PKI.
		chromedp.IgnoreCertErrors,
		chromedp.WindowSize(1360, 900),
		chromedp.UserDataDir(t.TempDir()),
	)
	if os.Geteuid() == 0 {
		// Chromium's sandbox refuses to run as root (docs/console.md says so).
		opts = append(opts, chromedp.NoSandbox)
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	w := &web{t: t, e: e, ctx: ctx, dir: artefactDir(t)}
	// The first call starts the browser; it must not carry a timeout (the browser would
	// live only as long as it).
	if _, err := chromedp.Call(ctx, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{Source: cspProbe}); err != nil {
		t.Fatalf("start chromium %s: %v", path, err)
	}
	reqs := chromedp.Events(ctx, network.RequestWillBeSent)
	go func() {
		for ev, err := range reqs {
			if err != nil {
				return
			}
			w.mu.Lock()
			w.requests = append(w.requests, ev.Request.URL)
			w.mu.Unlock()
		}
	}()
	if _, err := chromedp.CallBrowser(ctx, browser.SetDownloadBehavior, browser.SetDownloadBehaviorParams{
		Behavior: browser.SetDownloadBehaviorBehaviorAllowAndName, DownloadPath: w.dir, EventsEnabled: new(true)}); err != nil {
		t.Fatalf("download behaviour: %v", err)
	}
	return w
}

func (w *web) step() (context.Context, context.CancelFunc) {
	return context.WithTimeout(w.ctx, 30*time.Second)
}

// do runs steps with a time limit.
func (w *web) do(what string, steps ...chromedp.Action[chromedp.Void]) {
	w.t.Helper()
	ctx, cancel := w.step()
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		w.t.Fatalf("%s: %v", what, err)
	}
}

// load runs steps that navigate and returns the HTTP status of the document that loaded.
func (w *web) load(what string, steps ...chromedp.Action[chromedp.Void]) int64 {
	w.t.Helper()
	ctx, cancel := w.step()
	defer cancel()
	res, err := chromedp.RunResponse(ctx, steps...)
	if err != nil {
		w.t.Fatalf("%s: %v", what, err)
	}
	w.checkCSP(what)
	return res.Status
}

func (w *web) open(path string) int64 {
	w.t.Helper()
	return w.load("open "+path, chromedp.Navigate(w.e.url+path))
}

func (w *web) text(sel string) string {
	w.t.Helper()
	ctx, cancel := w.step()
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel), chromedp.NodeVisible))
	if err != nil {
		w.t.Fatalf("text of %s: %v", sel, err)
	}
	return strings.TrimSpace(s)
}

func (w *web) html() string {
	w.t.Helper()
	ctx, cancel := w.step()
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.OuterHTML(chromedp.CSS("html")))
	if err != nil {
		w.t.Fatalf("page HTML: %v", err)
	}
	return s
}

// attrs returns an attribute of every element matching sel (none is fine).
func (w *web) attrs(sel, name string) []string {
	w.t.Helper()
	ctx, cancel := w.step()
	defer cancel()
	vals, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](fmt.Sprintf(
		`Array.from(document.querySelectorAll(%q)).map((n) => n.getAttribute(%q) ?? '')`, sel, name)))
	if err != nil {
		w.t.Fatalf("attributes %s of %s: %v", name, sel, err)
	}
	return vals
}

func (w *web) checkCSP(what string) {
	w.t.Helper()
	ctx, cancel := w.step()
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](`window.__wardCSP ?? []`))
	if err != nil {
		w.t.Fatalf("%s: reading CSP violations: %v", what, err)
	}
	if len(v) > 0 {
		w.t.Errorf("%s: Content-Security-Policy violations: %v", what, v)
	}
}

// screenshot saves the whole page as NAME.png and checks that it is a real image.
func (w *web) screenshot(name string) {
	w.t.Helper()
	ctx, cancel := w.step()
	defer cancel()
	b, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		w.t.Fatalf("screenshot %s: %v", name, err)
	}
	img, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		w.t.Fatalf("screenshot %s is not a PNG: %v", name, err)
	}
	if r := img.Bounds(); r.Dx() < 800 || r.Dy() < 300 {
		w.t.Errorf("screenshot %s is only %dx%d", name, r.Dx(), r.Dy())
	}
	if err := os.WriteFile(filepath.Join(w.dir, name+".png"), b, 0o644); err != nil {
		w.t.Fatal(err)
	}
}

// download clicks sel and returns the file the browser saved, kept as name.
func (w *web) download(sel, name string) []byte {
	w.t.Helper()
	ctx, cancel := w.step()
	defer cancel()
	progress := chromedp.BrowserEvents(ctx, browser.DownloadProgress)
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(sel), chromedp.NodeVisible)); err != nil {
		w.t.Fatalf("click %s: %v", sel, err)
	}
	for ev, err := range progress {
		if err != nil {
			w.t.Fatalf("download from %s: %v", sel, err)
		}
		switch ev.State {
		case browser.DownloadProgressStateCompleted:
			saved := filepath.Join(w.dir, name)
			if err := os.Rename(filepath.Join(w.dir, ev.GUID), saved); err != nil {
				w.t.Fatalf("downloaded file: %v", err)
			}
			b, err := os.ReadFile(saved)
			if err != nil {
				w.t.Fatalf("downloaded file: %v", err)
			}
			return b
		case browser.DownloadProgressStateCanceled:
			w.t.Fatalf("download from %s was cancelled", sel)
		}
	}
	w.t.Fatalf("download from %s: no completion", sel)
	return nil
}

// signIn signs name in through the forms: first sign-in enrols the authenticator (the
// code computed from the secret the page shows) and sets a new password; later ones
// answer the TOTP prompt.
func (w *web) signIn(name string) {
	w.t.Helper()
	e := w.e
	w.open("/login")
	st := w.load("password step", chromedp.SendKeys(chromedp.ID("username"), name),
		chromedp.SendKeys(chromedp.ID("password"), e.passwds[name]), chromedp.Click(chromedp.ID("signin")))
	if st != 200 {
		w.t.Fatalf("password step for %s: HTTP %d", name, st)
	}
	if e.secrets[name] == "" {
		secret := w.text("#totp-secret")
		if len(secret) < 16 {
			w.t.Fatalf("enrolment page shows no TOTP key for %s: %q", name, secret)
		}
		if ok := w.attrs("#qr", "src"); len(ok) != 1 {
			w.t.Fatal("enrolment page has no QR code")
		}
		e.secrets[name] = secret
		newPw := e.passwds[name] + "-browser"
		w.load("enrol", chromedp.SendKeys(chromedp.ID("new_password"), newPw), chromedp.SendKeys(chromedp.ID("new_password2"), newPw),
			chromedp.SendKeys(chromedp.ID("code"), e.code(name)), chromedp.Click(chromedp.ID("enrol")))
		if n := len(w.attrs("#codes li", "class")); n != 10 {
			w.t.Fatalf("enrolment of %s showed %d recovery codes, want 10", name, n)
		}
		e.passwds[name] = newPw
		e.clock.add(30 * time.Second) // the enrolment code's step is spent
		w.load("continue", chromedp.Click(chromedp.ID("continue")))
	} else {
		st := w.load("totp", chromedp.SendKeys(chromedp.ID("code"), e.code(name)), chromedp.Click(chromedp.ID("verify")))
		if st != 200 {
			w.t.Fatalf("TOTP step for %s: HTTP %d", name, st)
		}
		e.clock.add(30 * time.Second)
	}
	if who := w.text("#whoami"); !strings.HasPrefix(who, name+" (") {
		w.t.Fatalf("signed in as %q, want %s", who, name)
	}
}

func (w *web) signOut() {
	w.t.Helper()
	w.load("sign out", chromedp.Click(chromedp.CSS("form.who button")))
	if !strings.Contains(w.html(), `id="signin"`) {
		w.t.Fatal("sign-out did not return to the sign-in page")
	}
}

func rowIDs(w *web) []int64 {
	var out []int64
	for _, v := range w.attrs("#events tbody tr[data-rowid]", "data-rowid") {
		n, _ := strconv.ParseInt(v, 10, 64)
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// TestBrowserConsole drives the console in headless Chromium over HTTPS on 127.0.0.1, with
// a real SQLite store seeded by reporttest and the real audit log: TOTP sign-in (and a wrong
// code refused), a server-side refusal of an admin page to an auditor, event filters and
// detail, sanctioning an app, both reports downloaded and read, and a screenshot of every
// view.
func TestBrowserConsole(t *testing.T) {
	e := newEnv(t)
	e.addUser("analyst1", account.RoleAnalyst)
	e.addUser("admin1", account.RoleAdmin)
	e.addUser("auditor1", account.RoleAuditor)
	w := newWeb(t, e)
	s := e.seeded

	// Analyst: first sign-in enrols TOTP; then a second sign-in with a wrong code is
	// refused by the server and the right one accepted.
	w.signIn("analyst1")
	w.signOut()
	w.open("/login")
	w.load("password", chromedp.SendKeys(chromedp.ID("username"), "analyst1"),
		chromedp.SendKeys(chromedp.ID("password"), e.passwds["analyst1"]), chromedp.Click(chromedp.ID("signin")))
	wrong := "000000"
	if e.code("analyst1") == wrong {
		wrong = "111111"
	}
	if st := w.load("wrong code", chromedp.SendKeys(chromedp.ID("code"), wrong), chromedp.Click(chromedp.ID("verify"))); st != 401 {
		t.Fatalf("wrong TOTP code: HTTP %d, want 401", st)
	}
	if msg := w.text("#error"); !strings.Contains(msg, "wrong code") {
		t.Fatalf("wrong code message %q", msg)
	}
	if strings.Contains(w.html(), `id="whoami"`) {
		t.Fatal("a wrong code signed the user in")
	}
	if st := w.open("/events"); st != 200 || !strings.Contains(w.html(), `id="signin"`) {
		t.Fatalf("events without the second factor: HTTP %d and not the sign-in page", st)
	}
	w.open("/login")
	w.load("password", chromedp.SendKeys(chromedp.ID("username"), "analyst1"),
		chromedp.SendKeys(chromedp.ID("password"), e.passwds["analyst1"]), chromedp.Click(chromedp.ID("signin")))
	if st := w.load("right code", chromedp.SendKeys(chromedp.ID("code"), e.code("analyst1")), chromedp.Click(chromedp.ID("verify"))); st != 200 {
		t.Fatalf("right TOTP code: HTTP %d", st)
	}
	e.clock.add(30 * time.Second)
	if who := w.text("#whoami"); who != "analyst1 (soc-analyst)" {
		t.Fatalf("whoami %q", who)
	}

	// Events: all detections, then filters narrow the list (server-side).
	w.open("/events")
	all := rowIDs(w)
	for _, id := range []int64{s.Part2Blocked, s.Part2Consented, s.PHIAlert} {
		if !slices.Contains(all, id) {
			t.Fatalf("events list %v lacks finding %d", all, id)
		}
	}
	w.screenshot("events")
	w.load("filter severity", chromedp.SetValue(chromedp.ID("f-severity"), "high"), chromedp.Click(chromedp.ID("apply")))
	if got := rowIDs(w); !slices.Equal(got, []int64{s.Part2Blocked}) {
		t.Errorf("severity >= high: rows %v, want [%d]", got, s.Part2Blocked)
	}
	w.open("/events")
	w.load("filter class and host", chromedp.SetValue(chromedp.ID("f-class"), "phi"), chromedp.SetValue(chromedp.ID("f-host"), reporttest.HostB),
		chromedp.Click(chromedp.ID("apply")))
	if got := rowIDs(w); !slices.Equal(got, []int64{s.PHIAlert}) {
		t.Errorf("class phi on %s: rows %v, want [%d]", reporttest.HostB, got, s.PHIAlert)
	}
	if loc := w.attrs("#f-host option[selected]", "value"); len(loc) != 1 {
		t.Errorf("the host filter is not kept on the filtered page")
	}
	w.open("/events")
	w.load("filter user", chromedp.SendKeys(chromedp.ID("f-user"), "therapist2"), chromedp.Click(chromedp.ID("apply")))
	if got := rowIDs(w); !slices.Contains(got, s.PHIAlert) || slices.Contains(got, s.Part2Blocked) {
		t.Errorf("user therapist2: rows %v", got)
	}

	// Event detail through the link in the list.
	w.open("/events?data_class=part2&severity=high")
	w.load("open detail", chromedp.Click(chromedp.CSS(fmt.Sprintf(`tr[data-rowid="%d"] a`, s.Part2Blocked))))
	if d := w.text("#ev-decision"); !strings.Contains(d, "part2-unsanctioned-destination") || !strings.Contains(d, "blocked") || strings.Contains(d, "UNSPECIFIED") {
		t.Errorf("decision %q", d)
	}
	if p := w.text("#ev-path"); p != "/home/nurse1/Dropbox/export.xml" {
		t.Errorf("detail path %q", p)
	}
	if a := w.text("#ancestry"); !strings.Contains(a, "/usr/bin/bash") {
		t.Errorf("ancestry %q lacks the parent shell", a)
	}
	detail := w.html()
	if !strings.Contains(detail, reporttest.MaskedMRN) || strings.Contains(detail, reporttest.RawMRN) {
		t.Error("event detail must show the masked sample and never the raw identifier")
	}
	w.screenshot("event-detail")
	w.open("/fleet")
	w.screenshot("fleet-analyst")
	w.signOut()

	// Admin: Shadow IT, sanction Dropbox, Fleet with enrolment.
	w.signIn("admin1")
	period := "?from=" + reporttest.Day.AddDate(0, 0, -1).Format(time.DateOnly) + "&to=" + reporttest.Day.AddDate(0, 0, 1).Format(time.DateOnly)
	w.open("/shadow-it" + period)
	if st := w.text("#app-dropbox td.status"); st != "monitored" {
		t.Fatalf("dropbox starts %q, want monitored", st)
	}
	w.load("sanction dropbox", chromedp.SetValue(chromedp.CSS("#app-dropbox select[name=status]"), "sanctioned"),
		chromedp.Click(chromedp.CSS("#app-dropbox button")))
	if st := w.text("#app-dropbox td.status"); st != "sanctioned" {
		t.Fatalf("dropbox after the change: %q", st)
	}
	dec, err := e.st.AppSanctions(context.Background())
	if err != nil || dec["dropbox"].Status != "sanctioned" || dec["dropbox"].ChangedBy != "admin1" {
		t.Fatalf("stored decision %+v %v", dec["dropbox"], err)
	}
	w.screenshot("shadow-it")
	w.load("app detail", chromedp.Click(chromedp.CSS(`#app-zoom a`)))
	if h := w.text("h1"); !strings.HasPrefix(h, "Zoom") {
		t.Errorf("app page heading %q", h)
	}
	if p := w.text("#principals"); !strings.Contains(p, "therapist2") || !strings.Contains(p, reporttest.HostB) {
		t.Errorf("app page for the period lists %q, want therapist2 on %s", p, reporttest.HostB)
	}
	w.screenshot("shadow-it-app")
	w.open("/fleet")
	if n := len(w.attrs("#agents tbody tr", "class")); n != 2 {
		t.Errorf("fleet shows %d agents, want 2", n)
	}
	// Enrolment tokens: create one (shown once), see it listed by id only, revoke it.
	w.load("new token", chromedp.Click(chromedp.ID("new-token")))
	secret := w.text("#token")
	if !strings.HasPrefix(secret, enroll.TokenPrefix) {
		t.Fatalf("token page shows %q", secret)
	}
	tokID := hex.EncodeToString(enroll.HashToken(secret))[:16]
	w.open("/fleet")
	if html := w.html(); strings.Contains(html, secret) || strings.Contains(html, strings.TrimPrefix(secret, enroll.TokenPrefix)) {
		t.Fatal("the fleet page shows an enrolment token's secret")
	}
	if row := w.text("#token-" + tokID); !strings.Contains(row, "active") || !strings.Contains(row, "\t1\t") {
		t.Errorf("new token row %q: want active with 1 use left", row)
	}
	if used := w.text("#tokens"); strings.Count(used, "used by") != 2 {
		t.Errorf("the seeded agents' tokens are not listed as used: %q", used)
	}
	w.screenshot("fleet")
	w.load("revoke token", chromedp.Click(chromedp.CSS("#token-"+tokID+" button.revoke")))
	if ids := w.attrs("#token-"+tokID, "id"); len(ids) != 0 {
		t.Error("revoked token still listed")
	}
	err = e.st.EnrollAgent(context.Background(), enroll.HashToken(secret), time.Now(), store.Agent{ID: "0190f000-0000-7000-8000-0000000000ff"}, func() error { return nil })
	if !errors.Is(err, store.ErrTokenUnknown) {
		t.Errorf("enrolling with a revoked token: %v", err)
	}
	w.signOut()

	// Auditor: the server refuses an admin page; reports are downloaded and read.
	w.signIn("auditor1")
	for _, path := range []string{"/users", "/fleet"} {
		if st := w.open(path); st != 403 {
			t.Errorf("auditor GET %s: HTTP %d, want 403 from the server", path, st)
		}
		if msg := w.text("#error"); !strings.Contains(msg, "compliance-auditor") {
			t.Errorf("auditor GET %s: message %q", path, msg)
		}
	}
	w.open("/reports")
	from, to := reporttest.Day.Format(time.DateOnly), reporttest.Day.AddDate(0, 0, 1).Format(time.DateOnly)
	w.do("report period", chromedp.SetValue(chromedp.CSS("#report-shadow input[name=from]"), from), chromedp.SetValue(chromedp.CSS("#report-shadow input[name=to]"), to),
		chromedp.SetValue(chromedp.CSS("#report-shadow select[name=format]"), "csv"),
		chromedp.SetValue(chromedp.CSS("#report-part2 input[name=from]"), from), chromedp.SetValue(chromedp.CSS("#report-part2 input[name=to]"), to),
		chromedp.SetValue(chromedp.CSS("#report-part2 select[name=format]"), "pdf"))
	w.screenshot("reports")
	csvData := w.download("#dl-shadow", "shadow-it.csv")
	recs, err := csv.NewReader(bytes.NewReader(csvData)).ReadAll()
	if err != nil {
		t.Fatalf("shadow-IT CSV: %v\n%s", err, csvData)
	}
	statusOf := map[string]string{}
	col := slices.Index(recs[0], "sanction_status")
	appCol := slices.Index(recs[0], "app_id")
	if col < 0 || appCol < 0 {
		t.Fatalf("shadow-IT CSV header %v", recs[0])
	}
	for _, r := range recs[1:] {
		statusOf[r[appCol]] = r[col]
	}
	if statusOf["dropbox"] != "sanctioned" || statusOf["zoom"] == "" || statusOf["chatgpt"] == "" {
		t.Errorf("shadow-IT CSV statuses %v: want dropbox sanctioned (the admin's change) and zoom, chatgpt listed", statusOf)
	}
	pdfData := w.download("#dl-part2", "part2-disclosures.pdf")
	if !bytes.HasPrefix(pdfData, []byte("%PDF-")) {
		t.Fatalf("Part 2 download is not a PDF: %.40q", pdfData)
	}
	text := pdfPlainText(t, pdfData)
	for _, want := range []string{reporttest.MaskedMRN, "consent-17", "part2-unsanctioned-destination"} {
		if !strings.Contains(text, want) {
			t.Errorf("Part 2 PDF lacks %q", want)
		}
	}
	if strings.Contains(text, reporttest.RawMRN) || bytes.Contains(csvData, []byte(reporttest.RawMRN)) {
		t.Error("a report carries the raw identifier")
	}
	w.open("/audit")
	if v := w.text("#verification"); !strings.HasPrefix(v, "verified") {
		t.Errorf("audit verification %q", v)
	}
	auditText := w.text("#audit")
	for _, want := range []string{"app.sanction", "report.export", "evidence.view", "console.denied", "enrollment_token.create", "enrollment_token.revoke"} {
		if !strings.Contains(auditText, want) {
			t.Errorf("audit log view lacks %s", want)
		}
	}
	w.screenshot("audit-log")
	w.open("/shadow-it" + period)
	if strings.Contains(w.html(), `class="sanction-`) {
		t.Error("the auditor is offered the sanction form")
	}
	w.signOut()

	// Nothing was loaded from anywhere but the console.
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.requests) < 20 {
		t.Errorf("only %d requests were seen; the request log is not working", len(w.requests))
	}
	for _, u := range w.requests {
		if !strings.HasPrefix(u, e.url+"/") && !strings.HasPrefix(u, "data:") {
			t.Errorf("the browser loaded %s, which is not the console", u)
		}
	}
}

// pdfPlainText extracts the text of every page.
func pdfPlainText(t *testing.T, data []byte) string {
	t.Helper()
	r, err := pdf.NewReader(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatalf("pdf: %v", err)
	}
	var sb strings.Builder
	for i := 1; i <= r.NumPage(); i++ {
		s, err := r.Page(i).GetPlainText(nil)
		if err != nil {
			t.Fatal(err)
		}
		sb.WriteString(s)
	}
	return sb.String()
}
