package console

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/types/known/timestamppb"

	wardv1 "github.com/ward-dlp/ward/api/ward/v1"
	"github.com/ward-dlp/ward/classifiers/catalog"
	"github.com/ward-dlp/ward/collector/audit"
	"github.com/ward-dlp/ward/collector/report"
	"github.com/ward-dlp/ward/collector/store"
)

func (s *Server) buildRoutes() []Route {
	return []Route{
		{Pattern: "GET /login", handler: s.loginPage},
		{Pattern: "POST /login", handler: s.loginSubmit},
		{Pattern: "GET /static/", handler: s.static},
		{Pattern: "GET " + oidcStartPath, handler: s.oidcStart},
		{Pattern: "GET " + oidcCallbackPath, handler: s.oidcCallback},
		{Pattern: "GET /login/totp", Stage: stageMFA, handler: s.totpPage},
		{Pattern: "POST /login/totp", Stage: stageMFA, handler: s.totpSubmit},
		{Pattern: "GET /account/enrol", Stage: stageEnrol, handler: s.enrolPage},
		{Pattern: "GET /account/enrol/qr.png", Stage: stageEnrol, handler: s.enrolQR},
		{Pattern: "POST /account/enrol", Stage: stageEnrol, handler: s.enrolSubmit},
		{Pattern: "POST /logout", Perm: PermAny, handler: s.logout},

		{Pattern: "GET /events", Perm: PermEventsRead, handler: s.eventsPage},
		{Pattern: "GET /events/{id}", Perm: PermEvidenceView, handler: s.eventPage},
		{Pattern: "GET /shadow-it", Perm: PermShadowITRead, handler: s.shadowPage},
		{Pattern: "GET /shadow-it/{app}", Perm: PermShadowITRead, handler: s.appPage},
		{Pattern: "GET /fleet", Perm: PermFleetRead, handler: s.fleetPage},
		{Pattern: "GET /audit", Perm: PermAuditRead, handler: s.auditPage},
		{Pattern: "GET /reports", Perm: PermReportsExport, handler: s.reportsPage},
		{Pattern: "GET /users", Perm: PermUsersManage, handler: s.usersPage},

		{Pattern: "GET /api/openapi.yaml", Perm: PermAny, handler: s.openapi},
		{Pattern: "GET /api/v1/me", Perm: PermAny, handler: s.apiMe},
		{Pattern: "GET /api/v1/events", Perm: PermEventsRead, handler: s.apiEvents},
		{Pattern: "GET /api/v1/events/{id}", Perm: PermEvidenceView, handler: s.apiEvent},
		{Pattern: "POST /api/v1/events/{id}/triage", Perm: PermEventsTriage, handler: s.apiTriage},
		{Pattern: "POST /api/v1/events/{id}/notes", Perm: PermEventsTriage, handler: s.apiNote},
		{Pattern: "GET /api/v1/shadow-it", Perm: PermShadowITRead, handler: s.apiShadowIT},
		{Pattern: "GET /api/v1/shadow-it/apps/{app}", Perm: PermShadowITRead, handler: s.apiApp},
		{Pattern: "POST /api/v1/shadow-it/apps/{app}/sanction", Perm: PermAppsSanction, handler: s.apiSanction},
		{Pattern: "GET /api/v1/fleet", Perm: PermFleetRead, handler: s.apiFleet},
		{Pattern: "POST /api/v1/enrollment-tokens", Perm: PermTokensCreate, handler: s.apiToken},
		{Pattern: "GET /api/v1/enrollment-tokens", Perm: PermTokensManage, handler: s.apiTokens},
		{Pattern: "POST /api/v1/enrollment-tokens/{id}/revoke", Perm: PermTokensManage, handler: s.apiRevokeToken},
		{Pattern: "GET /api/v1/users", Perm: PermUsersManage, handler: s.apiUsers},
		{Pattern: "GET /api/v1/audit", Perm: PermAuditRead, handler: s.apiAudit},
		{Pattern: "GET /api/v1/reports/{kind}", Perm: PermReportsExport, handler: s.apiReport},
	}
}

// ErrorResponse is the body of every JSON error.
type ErrorResponse struct {
	Error string `json:"error"`
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, ErrorResponse{Error: msg})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// isForm reports a request from an HTML form (answered with a redirect, not JSON).
func isForm(r *http.Request) bool {
	ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	return ct == "application/x-www-form-urlencoded" || ct == "multipart/form-data"
}

// decodeBody reads a JSON body or form fields into dst (a struct with json tags of strings).
func decodeBody(w http.ResponseWriter, r *http.Request, dst map[string]*string) error {
	if isForm(r) {
		r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
		if err := r.ParseForm(); err != nil {
			return err
		}
		for k, p := range dst {
			*p = r.PostFormValue(k)
		}
		return nil
	}
	var m map[string]string
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10))
	if err := dec.Decode(&m); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("body: want a JSON object of strings: %w", err)
	}
	for k := range m {
		if _, ok := dst[k]; !ok {
			return fmt.Errorf("body: unknown field %q", k)
		}
	}
	for k, p := range dst {
		*p = m[k]
	}
	return nil
}

// EventItem is one event in the list.
type EventItem struct {
	RowID     int64     `json:"rowid"`
	Time      time.Time `json:"time"`
	Kind      string    `json:"kind"`
	Severity  string    `json:"severity"`
	DataClass string    `json:"data_class"`
	Host      string    `json:"host"`
	User      string    `json:"user"`
	Process   string    `json:"process"`
	Target    string    `json:"target"`
	App       string    `json:"app,omitempty"`
	AppName   string    `json:"app_name,omitempty"`
	Category  string    `json:"category,omitempty"`
	Action    string    `json:"action"`
	Rule      string    `json:"rule"`
	Consent   string    `json:"consent,omitempty"`
	Status    string    `json:"status"`
}

// EventsResponse is a page of events, newest first.
type EventsResponse struct {
	Events []EventItem `json:"events"`
	// Next is the before cursor of the next (older) page; 0 when there is none.
	Next int64 `json:"next"`
}

func dataClassName(c wardv1.DataClass) string {
	switch c {
	case wardv1.DataClass_DATA_CLASS_PART2:
		return "part2"
	case wardv1.DataClass_DATA_CLASS_PHI:
		return "phi"
	}
	return ""
}

func parseEnum[T ~int32](s string, values map[string]int32, prefix string) (T, error) {
	if s == "" {
		return 0, nil
	}
	if v, ok := values[prefix+strings.ToUpper(strings.ReplaceAll(s, "-", "_"))]; ok && v != 0 {
		return T(v), nil
	}
	return 0, fmt.Errorf("%q is not a known value", s)
}

func parseTimeParam(q map[string][]string, name string) (time.Time, error) {
	v := ""
	if vs := q[name]; len(vs) > 0 {
		v = vs[0]
	}
	if v == "" {
		return time.Time{}, nil
	}
	t, err := report.ParseTime(v)
	if err != nil {
		return time.Time{}, fmt.Errorf("%s: %w", name, err)
	}
	return t, nil
}

// parseEventQuery reads the list filters from the query string.
func (s *Server) parseEventQuery(r *http.Request) (store.DetectionQuery, error) {
	q := r.URL.Query()
	var dq store.DetectionQuery
	var err error
	if dq.From, err = parseTimeParam(q, "from"); err != nil {
		return dq, err
	}
	if dq.To, err = parseTimeParam(q, "to"); err != nil {
		return dq, err
	}
	if dq.MinSeverity, err = parseEnum[wardv1.Severity](q.Get("severity"), wardv1.Severity_value, "SEVERITY_"); err != nil {
		return dq, fmt.Errorf("severity: %w", err)
	}
	if dq.DataClass, err = parseEnum[wardv1.DataClass](q.Get("data_class"), wardv1.DataClass_value, "DATA_CLASS_"); err != nil {
		return dq, fmt.Errorf("data_class: %w", err)
	}
	if dq.Action, err = parseEnum[wardv1.Action](q.Get("action"), wardv1.Action_value, "ACTION_"); err != nil {
		return dq, fmt.Errorf("action: %w", err)
	}
	dq.Host, dq.App, dq.Category, dq.Rule = q.Get("host"), q.Get("app"), q.Get("category"), q.Get("rule")
	if u := q.Get("user"); u != "" {
		dq.UserKey = store.UserKey(s.factsKey, u)
	}
	switch st := q.Get("status"); st {
	case "", store.TriageNew, store.TriageInvestigating, store.TriageClosed:
		dq.Status = st
	default:
		return dq, fmt.Errorf("status: want new, investigating or closed, got %q", st)
	}
	switch k := q.Get("kind"); k {
	case "", store.KindFinding, store.KindFlow:
		dq.Kind = k
	default:
		return dq, fmt.Errorf("kind: want finding or flow, got %q", k)
	}
	for _, c := range []struct {
		name string
		dst  *int64
	}{{"before", &dq.BeforeRowID}, {"after", &dq.AfterRowID}} {
		if v := q.Get(c.name); v != "" {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n < 0 {
				return dq, fmt.Errorf("%s: want a rowid, got %q", c.name, v)
			}
			*c.dst = n
		}
	}
	dq.Limit = 50
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 500 {
			return dq, fmt.Errorf("limit: want 1..500, got %q", v)
		}
		dq.Limit = n
	}
	return dq, nil
}

// listEvents runs a query and reads each row's user, process and target from its
// (decrypted) event.
func (s *Server) listEvents(r *http.Request, dq store.DetectionQuery) (EventsResponse, error) {
	ctx := r.Context()
	if _, err := s.st.IndexFacts(ctx, s.factsKey); err != nil {
		s.log.Warn("index facts", "err", err)
	}
	rows, err := s.st.Detections(ctx, dq)
	if err != nil {
		return EventsResponse{}, err
	}
	out := EventsResponse{Events: make([]EventItem, 0, len(rows))}
	for _, d := range rows {
		it := EventItem{RowID: d.RowID, Time: d.Time, Kind: d.Kind, Severity: report.SeverityName(d.Severity),
			DataClass: dataClassName(d.DataClass), Host: d.Host, App: d.App, AppName: d.AppName, Category: d.Category,
			Action: report.ActionName(d.Action), Rule: d.Rule, Consent: d.Consent, Status: d.Status}
		if e, err := s.st.EventByRowID(ctx, d.RowID); err == nil {
			if ev, err := e.Event(); err == nil {
				switch {
				case ev.GetFinding() != nil:
					it.User, it.Process = ev.GetFinding().GetProcess().GetUser(), ev.GetFinding().GetProcess().GetExe()
					it.Target = ev.GetFinding().GetFile().GetPath()
				case ev.GetFlow() != nil:
					fl := ev.GetFlow()
					it.User, it.Process = fl.GetProcess().GetUser(), fl.GetProcess().GetExe()
					it.Target = fl.GetName()
					if it.Target == "" {
						it.Target = fl.GetRemoteAddress()
					}
				}
			} else {
				it.Target = "(evidence unavailable)"
			}
		}
		out.Events = append(out.Events, it)
	}
	if len(rows) == dq.Limit && dq.AfterRowID == 0 {
		out.Next = rows[len(rows)-1].RowID
	}
	return out, nil
}

func (s *Server) apiMe(w http.ResponseWriter, r *http.Request) {
	p := principalFrom(r.Context())
	perms := []Perm{}
	for _, pm := range grants[p.role] {
		perms = append(perms, pm)
	}
	writeJSON(w, http.StatusOK, map[string]any{"username": p.user.Username, "role": p.role, "permissions": perms,
		"session_expires_at": p.session.ExpiresAt, "idle_timeout_seconds": int(s.cfg.IdleTimeout.Seconds())})
}

func (s *Server) apiEvents(w http.ResponseWriter, r *http.Request) {
	dq, err := s.parseEventQuery(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	out, err := s.listEvents(r, dq)
	if err != nil {
		s.log.Error("list events", "err", err)
		writeError(w, http.StatusInternalServerError, "listing events failed")
		return
	}
	writeJSON(w, http.StatusOK, out)
}

// ProcessView is a process in an event's detail.
type ProcessView struct {
	PID       uint32    `json:"pid"`
	PPID      uint32    `json:"ppid"`
	User      string    `json:"user"`
	UID       uint32    `json:"uid"`
	Exe       string    `json:"exe"`
	Args      []string  `json:"args"`
	StartTime time.Time `json:"start_time,omitzero"`
	// RowID is the exec event the ancestor was read from (0 for the event's own process).
	RowID int64 `json:"rowid,omitempty"`
}

// MatchView is one detector's match, masked.
type MatchView struct {
	Detector   string   `json:"detector"`
	DataClass  string   `json:"data_class"`
	Confidence uint32   `json:"confidence"`
	Count      uint32   `json:"count"`
	Masked     []string `json:"masked_samples"`
	Offsets    []uint64 `json:"offsets"`
	Evidence   string   `json:"evidence,omitempty"`
}

// EventDetail is everything the console shows about one event.
type EventDetail struct {
	EventItem
	EventID  string             `json:"event_id"`
	AgentID  string             `json:"agent_id"`
	Process  *ProcessView       `json:"process_detail,omitempty"`
	Ancestry []ProcessView      `json:"ancestry"`
	File     map[string]any     `json:"file,omitempty"`
	Flow     map[string]any     `json:"flow,omitempty"`
	Matches  []MatchView        `json:"matches"`
	Decision map[string]any     `json:"decision,omitempty"`
	Triage   store.Triage       `json:"triage"`
	Notes    []store.TriageNote `json:"notes"`
	Evidence string             `json:"evidence_error,omitempty"`
}

func procView(p *wardv1.Process) ProcessView {
	v := ProcessView{PID: p.GetPid(), PPID: p.GetPpid(), User: p.GetUser(), UID: p.GetUid(), Exe: p.GetExe(), Args: p.GetArgs()}
	if p.GetStartTime() != nil {
		v.StartTime = p.GetStartTime().AsTime()
	}
	if v.Args == nil {
		v.Args = []string{}
	}
	return v
}

// eventDetail loads one event with its ancestry, triage and notes.
func (s *Server) eventDetail(r *http.Request, rowid int64) (EventDetail, error) {
	ctx := r.Context()
	if _, err := s.st.IndexFacts(ctx, s.factsKey); err != nil {
		s.log.Warn("index facts", "err", err)
	}
	d, err := s.st.Detection(ctx, rowid)
	if err != nil {
		return EventDetail{}, err
	}
	out := EventDetail{EventItem: EventItem{RowID: d.RowID, Time: d.Time, Kind: d.Kind, Severity: report.SeverityName(d.Severity),
		DataClass: dataClassName(d.DataClass), Host: d.Host, App: d.App, AppName: d.AppName, Category: d.Category,
		Action: report.ActionName(d.Action), Rule: d.Rule, Consent: d.Consent, Status: d.Status}, AgentID: d.AgentID,
		Ancestry: []ProcessView{}, Matches: []MatchView{}}
	if out.Triage, err = s.st.EventTriage(ctx, rowid); err != nil {
		return out, err
	}
	if out.Notes, err = s.st.TriageNotes(ctx, rowid); err != nil {
		return out, err
	}
	e, err := s.st.EventByRowID(ctx, rowid)
	if err != nil {
		return out, err
	}
	ev, err := e.Event()
	if err != nil {
		out.Evidence = err.Error()
		return out, nil
	}
	out.EventID = ev.GetId()
	var proc *wardv1.Process
	switch {
	case ev.GetFinding() != nil:
		f := ev.GetFinding()
		proc = f.GetProcess()
		out.File = map[string]any{"path": f.GetFile().GetPath(), "size": f.GetFile().GetSize(), "device": f.GetFile().GetDevice(),
			"inode": f.GetFile().GetInode(), "content_source": f.GetFile().GetContentSource().String()}
		out.Target = f.GetFile().GetPath()
		for _, m := range f.GetMatches() {
			mv := MatchView{Detector: m.GetDetector(), DataClass: dataClassName(m.GetDataClass()), Confidence: m.GetConfidence(),
				Count: m.GetCount(), Masked: m.GetMaskedSamples(), Offsets: m.GetOffsets(), Evidence: m.GetEvidence()}
			if mv.Masked == nil {
				mv.Masked = []string{}
			}
			if mv.Offsets == nil {
				mv.Offsets = []uint64{}
			}
			out.Matches = append(out.Matches, mv)
		}
		dec := f.GetDecision()
		out.Decision = map[string]any{"rule": dec.GetRuleId(), "action": report.ActionName(dec.GetAction()),
			"action_taken": report.ActionName(dec.GetActionTaken()), "severity": report.SeverityName(dec.GetSeverity()),
			"monitor": dec.GetMonitor(), "enforcement": dec.GetEnforcement(), "consent_id": dec.GetConsentId(),
			"exception_id": dec.GetExceptionId(), "compliance": dec.GetComplianceTags(), "policy": dec.GetPolicyName(),
			"policy_version": dec.GetPolicyVersion(), "monitor_rules": dec.GetMonitorRuleIds(), "outcome": report.Outcome(dec)}
	case ev.GetFlow() != nil:
		fl := ev.GetFlow()
		proc = fl.GetProcess()
		out.Target = fl.GetName()
		out.Flow = map[string]any{"transport": fl.GetTransport(), "local": fmt.Sprintf("%s:%d", fl.GetLocalAddress(), fl.GetLocalPort()),
			"remote": fmt.Sprintf("%s:%d", fl.GetRemoteAddress(), fl.GetRemotePort()), "direction": fl.GetDirection().String(),
			"bytes_sent": fl.GetBytesSent(), "bytes_received": fl.GetBytesReceived(), "state": fl.GetState().String(),
			"name": fl.GetName(), "name_source": fl.GetNameSource(), "app": fl.GetAppName(), "category": fl.GetAppCategory(),
			"protocol": fl.GetAppProtocol(), "sni": fl.GetSni(), "ja4": fl.GetJa4(), "tls_version": fl.GetTlsVersion(),
			"denied": fl.GetDenied(), "rule": fl.GetRuleId(), "start": tsString(fl.GetStartTime()), "end": tsString(fl.GetEndTime())}
		out.Decision = map[string]any{"rule": fl.GetRuleId(), "action_taken": report.ActionName(fl.GetAction())}
	}
	if proc != nil {
		pv := procView(proc)
		out.Process = &pv
		out.EventItem.User = proc.GetUser()
		// Ancestry: the exec events of the parent chain, newest exec of each ppid before the
		// child's event. Bounded, and stops at a pid seen twice (pid reuse).
		seen := map[uint32]bool{proc.GetPid(): true}
		ppid, at := proc.GetPpid(), d.Time
		for range 12 {
			if ppid <= 1 || seen[ppid] {
				break
			}
			seen[ppid] = true
			pe, err := s.st.ProcessExec(ctx, d.AgentID, ppid, at)
			if err != nil {
				break
			}
			pev, err := pe.Event()
			if err != nil || pev.GetProcess() == nil {
				break
			}
			anc := procView(pev.GetProcess().GetProcess())
			anc.RowID = pe.RowID
			out.Ancestry = append(out.Ancestry, anc)
			ppid, at = anc.PPID, pe.Time
		}
	}
	return out, nil
}

func tsString(t *timestamppb.Timestamp) string {
	if t == nil {
		return ""
	}
	return t.AsTime().UTC().Format(time.RFC3339Nano)
}

func pathID(r *http.Request) (int64, error) {
	n, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("event id: want a positive rowid, got %q", r.PathValue("id"))
	}
	return n, nil
}

// viewEvidence loads an event's detail and audits the view; nothing is shown when the view
// could not be audited.
func (s *Server) viewEvidence(w http.ResponseWriter, r *http.Request) (EventDetail, bool) {
	id, err := pathID(r)
	if err != nil {
		s.deny(w, r, http.StatusBadRequest, err.Error())
		return EventDetail{}, false
	}
	d, err := s.eventDetail(r, id)
	if errors.Is(err, store.ErrNoEvent) {
		s.deny(w, r, http.StatusNotFound, "no such event")
		return EventDetail{}, false
	}
	if err != nil {
		s.log.Error("event detail", "err", err)
		s.deny(w, r, http.StatusInternalServerError, "reading the event failed")
		return EventDetail{}, false
	}
	p := principalFrom(r.Context())
	if err := s.record(r.Context(), p, audit.ActionEvidenceView, fmt.Sprintf("event:%d", id), audit.OutcomeSuccess,
		map[string]string{"event_id": d.EventID, "agent_id": d.AgentID, "kind": d.Kind}); err != nil {
		s.deny(w, r, http.StatusServiceUnavailable, "the audit log is unavailable, so evidence cannot be shown")
		return EventDetail{}, false
	}
	return d, true
}

func (s *Server) apiEvent(w http.ResponseWriter, r *http.Request) {
	if d, ok := s.viewEvidence(w, r); ok {
		writeJSON(w, http.StatusOK, d)
	}
}

// closeReasons are the reasons an event can be closed with.
var closeReasons = []string{"true-positive", "false-positive", "benign", "consented-disclosure", "duplicate", "policy-exception"}

// transitions are the allowed triage moves: forward, and reopening a closed event.
var transitions = map[string][]string{
	store.TriageNew:           {store.TriageInvestigating, store.TriageClosed},
	store.TriageInvestigating: {store.TriageClosed},
	store.TriageClosed:        {store.TriageInvestigating},
}

func (s *Server) apiTriage(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	p := principalFrom(ctx)
	id, err := pathID(r)
	if err != nil {
		s.deny(w, r, http.StatusBadRequest, err.Error())
		return
	}
	var status, reason, note, from string
	if err := decodeBody(w, r, map[string]*string{"status": &status, "reason": &reason, "note": &note, "from": &from}); err != nil {
		s.deny(w, r, http.StatusBadRequest, err.Error())
		return
	}
	if _, err := s.st.Detection(ctx, id); err != nil {
		s.deny(w, r, http.StatusNotFound, "no such event")
		return
	}
	cur, err := s.st.EventTriage(ctx, id)
	if err != nil {
		s.deny(w, r, http.StatusInternalServerError, "reading triage failed")
		return
	}
	if from == "" {
		from = cur.Status
	}
	ok := false
	for _, t := range transitions[from] {
		ok = ok || t == status
	}
	switch {
	case !ok:
		s.deny(w, r, http.StatusBadRequest, fmt.Sprintf("cannot move an event from %q to %q", from, status))
		return
	case status == store.TriageClosed && !containsStr(closeReasons, reason):
		s.deny(w, r, http.StatusBadRequest, "closing needs a reason: "+strings.Join(closeReasons, ", "))
		return
	case status != store.TriageClosed && reason != "":
		s.deny(w, r, http.StatusBadRequest, "a reason is only for closing")
		return
	case len(note) > 4000:
		s.deny(w, r, http.StatusBadRequest, "note: at most 4000 characters")
		return
	}
	t := store.Triage{Status: status, Reason: reason, UpdatedAt: s.now(), UpdatedBy: p.user.Username}
	if err := s.st.SetTriage(ctx, id, from, t, strings.TrimSpace(note)); err != nil {
		if errors.Is(err, store.ErrTriageConflict) {
			s.deny(w, r, http.StatusConflict, err.Error())
			return
		}
		s.log.Error("set triage", "err", err)
		s.deny(w, r, http.StatusInternalServerError, "saving triage failed")
		return
	}
	_ = s.record(ctx, p, "event.triage", fmt.Sprintf("event:%d", id), audit.OutcomeSuccess,
		map[string]string{"from": from, "to": status, "reason": reason})
	if isForm(r) {
		http.Redirect(w, r, fmt.Sprintf("/events/%d", id), http.StatusSeeOther)
		return
	}
	writeJSON(w, http.StatusOK, t)
}

func containsStr(list []string, v string) bool {
	for _, x := range list {
		if x == v {
			return true
		}
	}
	return false
}

func (s *Server) apiNote(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	p := principalFrom(ctx)
	id, err := pathID(r)
	if err != nil {
		s.deny(w, r, http.StatusBadRequest, err.Error())
		return
	}
	var body string
	if err := decodeBody(w, r, map[string]*string{"body": &body}); err != nil {
		s.deny(w, r, http.StatusBadRequest, err.Error())
		return
	}
	body = strings.TrimSpace(body)
	if body == "" || len(body) > 4000 {
		s.deny(w, r, http.StatusBadRequest, "note: 1 to 4000 characters")
		return
	}
	if _, err := s.st.Detection(ctx, id); err != nil {
		s.deny(w, r, http.StatusNotFound, "no such event")
		return
	}
	if err := s.st.AddTriageNote(ctx, id, p.user.Username, body, s.now()); err != nil {
		s.deny(w, r, http.StatusInternalServerError, "saving the note failed")
		return
	}
	_ = s.record(ctx, p, "event.note", fmt.Sprintf("event:%d", id), audit.OutcomeSuccess, nil)
	if isForm(r) {
		http.Redirect(w, r, fmt.Sprintf("/events/%d", id), http.StatusSeeOther)
		return
	}
	writeJSON(w, http.StatusCreated, map[string]string{"status": "ok"})
}

// period reads from/to (default: the last 30 days up to now).
func (s *Server) period(r *http.Request) (time.Time, time.Time, error) {
	q := r.URL.Query()
	from, err := parseTimeParam(q, "from")
	if err != nil {
		return from, from, err
	}
	to, err := parseTimeParam(q, "to")
	if err != nil {
		return from, to, err
	}
	if to.IsZero() {
		to = s.now().UTC()
	}
	if from.IsZero() {
		from = to.Add(-30 * 24 * time.Hour)
	}
	if !to.After(from) {
		return from, to, errors.New("to must be after from")
	}
	if to.Sub(from) > report.MaxPeriod {
		return from, to, errors.New("period longer than a year")
	}
	return from, to, nil
}

func (s *Server) sources() report.Sources {
	return report.Sources{Store: s.st, Catalog: s.cat, FactsKey: s.factsKey, Version: s.version}
}

func (s *Server) loadShadow(r *http.Request) (*report.ShadowITData, error) {
	from, to, err := s.period(r)
	if err != nil {
		return nil, err
	}
	if _, err := s.st.IndexFacts(r.Context(), s.factsKey); err != nil {
		s.log.Warn("index facts", "err", err)
	}
	return report.LoadShadowIT(r.Context(), s.sources(), from, to)
}

func (s *Server) apiShadowIT(w http.ResponseWriter, r *http.Request) {
	d, err := s.loadShadow(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, d)
}

// AppDetail is one app's users, hosts and daily trend.
type AppDetail struct {
	App        *catalog.App         `json:"app"`
	Status     string               `json:"status"`
	Principals []store.AppPrincipal `json:"principals"`
	Daily      []store.DailyUsage   `json:"daily"`
}

func (s *Server) appDetail(r *http.Request) (AppDetail, error) {
	ctx := r.Context()
	id := r.PathValue("app")
	a := s.cat.ByID(id)
	if a == nil {
		return AppDetail{}, store.ErrNoEvent
	}
	from, to, err := s.period(r)
	if err != nil {
		return AppDetail{}, err
	}
	if _, err := s.st.IndexFacts(ctx, s.factsKey); err != nil {
		s.log.Warn("index facts", "err", err)
	}
	out := AppDetail{App: a, Status: string(report.DefaultStatus)}
	if dec, err := s.st.AppSanctions(ctx); err == nil {
		if d, ok := dec[id]; ok {
			out.Status = d.Status
		}
	}
	if out.Principals, err = s.st.AppPrincipals(ctx, id, from, to); err != nil {
		return out, err
	}
	for i := range out.Principals {
		if e, err := s.st.EventByRowID(ctx, out.Principals[i].SampleRowID); err == nil {
			if ev, err := e.Event(); err == nil {
				out.Principals[i].User = ev.GetFlow().GetProcess().GetUser()
			}
		}
	}
	out.Daily, err = s.st.AppDailyUsage(ctx, id, from, to)
	return out, err
}

func (s *Server) apiApp(w http.ResponseWriter, r *http.Request) {
	d, err := s.appDetail(r)
	if errors.Is(err, store.ErrNoEvent) {
		writeError(w, http.StatusNotFound, "no such app in the catalog")
		return
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, d)
}

// sanctioningFile renders the decisions as the organisation's sanctioning file
// (catalog.Policy), which ward-agent analyze --sanctioned and the policy author read.
func sanctioningFile(decisions map[string]store.AppSanction, catVersion string, now time.Time) ([]byte, error) {
	type appPol struct {
		Status string `yaml:"status"`
	}
	doc := struct {
		Version int               `yaml:"version"`
		Default string            `yaml:"default"`
		Apps    map[string]appPol `yaml:"apps"`
	}{Version: 1, Default: string(report.DefaultStatus), Apps: map[string]appPol{}}
	ids := make([]string, 0, len(decisions))
	for id := range decisions {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	var lines []string
	for _, id := range ids {
		d := decisions[id]
		doc.Apps[id] = appPol{Status: d.Status}
		lines = append(lines, fmt.Sprintf("#   %s: %s by %s at %s", id, d.Status, d.ChangedBy, d.ChangedAt.UTC().Format(time.RFC3339)))
	}
	b, err := yaml.Marshal(doc)
	if err != nil {
		return nil, err
	}
	head := fmt.Sprintf("# Ward organisation sanctioning file, written by the console at %s (catalog %s).\n"+
		"# Do not edit by hand: change an app's status in the console (Shadow IT), which records who did it.\n%s\n",
		now.UTC().Format(time.RFC3339), catVersion, strings.Join(lines, "\n"))
	return append([]byte(head), b...), nil
}

// writeFileAtomic writes data to path via a temporary file and rename, 0644 (the file is
// policy, not evidence; agents' tooling reads it).
func writeFileAtomic(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".sanctioned-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// WriteSanctioningFile (re)writes the sanctioning file from the stored decisions; the
// collector calls it at start so the file matches the database.
func (s *Server) WriteSanctioningFile(r *http.Request) error {
	dec, err := s.st.AppSanctions(r.Context())
	if err != nil {
		return err
	}
	b, err := sanctioningFile(dec, s.cat.Version, s.now())
	if err != nil {
		return err
	}
	return writeFileAtomic(s.sanctionedFile, b)
}

func (s *Server) apiSanction(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	p := principalFrom(ctx)
	id := r.PathValue("app")
	if s.cat.ByID(id) == nil {
		s.deny(w, r, http.StatusNotFound, "no such app in the catalog")
		return
	}
	var status string
	if err := decodeBody(w, r, map[string]*string{"status": &status}); err != nil {
		s.deny(w, r, http.StatusBadRequest, err.Error())
		return
	}
	switch catalog.Status(status) {
	case catalog.Sanctioned, catalog.Unsanctioned, catalog.Monitored:
	default:
		s.deny(w, r, http.StatusBadRequest, "status: want sanctioned, unsanctioned or monitored")
		return
	}
	s.sanctionMu.Lock()
	// Decision times are strictly increasing: the newest one is the sequence of the signed
	// overlay agents receive, which must grow with every change even if the clock steps back.
	changedAt := s.now()
	if all, err := s.st.AppSanctions(ctx); err == nil {
		for _, d := range all {
			if !changedAt.After(d.ChangedAt) {
				changedAt = d.ChangedAt.Add(time.Millisecond)
			}
		}
	}
	prev, err := s.st.SetAppSanction(ctx, store.AppSanction{AppID: id, Status: status, ChangedAt: changedAt, ChangedBy: p.user.Username},
		func(all map[string]store.AppSanction) error {
			b, err := sanctioningFile(all, s.cat.Version, s.now())
			if err != nil {
				return err
			}
			// The file is checked by the same parser agents' tooling uses before it replaces the
			// old one: a file the agents would refuse must not be published.
			if _, err := catalog.ParsePolicy(b, s.cat); err != nil {
				return fmt.Errorf("generated sanctioning file does not parse: %w", err)
			}
			return writeFileAtomic(s.sanctionedFile, b)
		})
	s.sanctionMu.Unlock()
	if err != nil {
		s.log.Error("set sanction", "err", err)
		_ = s.record(ctx, p, "app.sanction", "app:"+id, audit.OutcomeFailure, map[string]string{"to": status, "error": "write failed"})
		s.deny(w, r, http.StatusInternalServerError, "changing the sanction status failed")
		return
	}
	if prev == "" {
		prev = string(report.DefaultStatus)
	}
	_ = s.record(ctx, p, "app.sanction", "app:"+id, audit.OutcomeSuccess, map[string]string{"from": prev, "to": status, "file": s.sanctionedFile})
	if isForm(r) {
		http.Redirect(w, r, "/shadow-it"+backToPeriod(r.PostFormValue("back")), http.StatusSeeOther)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"app": id, "status": status, "previous": prev, "file": s.sanctionedFile})
}

// backToPeriod keeps only the period of the Shadow IT page a form came from, so the page
// the admin returns to shows the same days (and nothing else can be smuggled into the
// redirect).
func backToPeriod(back string) string {
	q, err := url.ParseQuery(back)
	if err != nil {
		return ""
	}
	keep := url.Values{}
	for _, k := range []string{"from", "to"} {
		if v := q.Get(k); v != "" {
			if _, err := parseTimeParam(q, k); err == nil {
				keep.Set(k, v)
			}
		}
	}
	if len(keep) == 0 {
		return ""
	}
	return "?" + keep.Encode()
}

// AgentView is one agent in the fleet view: the admin API's agent row plus health.
type AgentView struct {
	store.AgentStatus
	Silent   bool              `json:"silent"`
	Degraded []string          `json:"degraded_probes"`
	Drops    map[string]uint64 `json:"drops"`
	// AppliedPolicy is what the last Health event reported.
	AppliedPolicy string    `json:"applied_policy,omitempty"`
	HealthAt      time.Time `json:"health_at,omitzero"`
	SpoolEvicted  uint64    `json:"spool_findings_evicted"`
}

func (s *Server) fleet(r *http.Request) ([]AgentView, error) {
	ctx := r.Context()
	if _, err := s.st.IndexFacts(ctx, s.factsKey); err != nil {
		s.log.Warn("index facts", "err", err)
	}
	agents, err := s.st.AgentStatuses(ctx)
	if err != nil {
		return nil, err
	}
	health, err := s.st.AgentHealthRows(ctx)
	if err != nil {
		return nil, err
	}
	now := s.now()
	out := make([]AgentView, 0, len(agents))
	for _, a := range agents {
		v := AgentView{AgentStatus: a, Degraded: []string{}, Drops: map[string]uint64{}}
		v.Silent = !a.Revoked && (a.SilentSince != nil || a.LastSeen == nil || now.Sub(*a.LastSeen) > s.cfg.SilentAfter)
		if rowid, ok := health[a.ID]; ok {
			if e, err := s.st.EventByRowID(ctx, rowid); err == nil {
				if ev, err := e.Event(); err == nil {
					h := ev.GetHealth()
					v.HealthAt = e.Time
					for _, p := range h.GetProbes() {
						if !p.GetAttached() || p.GetError() != "" {
							v.Degraded = append(v.Degraded, strings.TrimSpace(p.GetName()+": "+p.GetError()))
						}
					}
					for k, n := range h.GetDrops() {
						if n > 0 {
							v.Drops[k] = n
						}
					}
					v.SpoolEvicted = h.GetSpoolFindingsEvicted()
					if ps := h.GetPolicy(); ps != nil {
						v.AppliedPolicy = fmt.Sprintf("%s v%d", ps.GetName(), ps.GetVersion())
					}
				}
			}
		}
		out = append(out, v)
	}
	return out, nil
}

func (s *Server) apiFleet(w http.ResponseWriter, r *http.Request) {
	f, err := s.fleet(r)
	if err != nil {
		s.log.Error("fleet", "err", err)
		writeError(w, http.StatusInternalServerError, "reading the fleet failed")
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"agents": f, "silent_after_seconds": int(s.cfg.SilentAfter.Seconds())})
}

func (s *Server) apiToken(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	p := principalFrom(ctx)
	if s.enr == nil {
		s.deny(w, r, http.StatusNotImplemented, "enrolment is not available on this console")
		return
	}
	var ttlStr string
	if err := decodeBody(w, r, map[string]*string{"ttl": &ttlStr}); err != nil {
		s.deny(w, r, http.StatusBadRequest, err.Error())
		return
	}
	var ttl time.Duration
	if ttlStr != "" {
		d, err := time.ParseDuration(ttlStr)
		if err != nil || d <= 0 {
			s.deny(w, r, http.StatusBadRequest, "ttl: want a positive duration like 1h")
			return
		}
		ttl = d
	}
	tok, exp, err := s.enr.CreateToken(ctx, ttl)
	if err != nil {
		_ = s.record(ctx, p, audit.ActionTokenCreate, "enrollment_token", audit.OutcomeFailure, map[string]string{"error": err.Error()})
		s.deny(w, r, http.StatusBadRequest, err.Error())
		return
	}
	_ = s.record(ctx, p, audit.ActionTokenCreate, "enrollment_token", audit.OutcomeSuccess, map[string]string{"expires_at": exp.UTC().Format(time.RFC3339)})
	if isForm(r) {
		s.render(w, r, http.StatusCreated, "token", map[string]any{"Title": "Enrolment token", "Token": tok, "ExpiresAt": exp.UTC()})
		return
	}
	writeJSON(w, http.StatusCreated, map[string]any{"token": tok, "expires_at": exp.UTC()})
}

// maxListedTokens bounds the fleet view's token list (newest first).
const maxListedTokens = 200

func (s *Server) apiTokens(w http.ResponseWriter, r *http.Request) {
	toks, err := s.st.EnrollTokens(r.Context(), s.now(), maxListedTokens)
	if err != nil {
		s.log.Error("list enrolment tokens", "err", err)
		writeError(w, http.StatusInternalServerError, "listing enrolment tokens failed")
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"tokens": toks})
}

func (s *Server) apiRevokeToken(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	p := principalFrom(ctx)
	id := r.PathValue("id")
	err := s.st.RevokeEnrollToken(ctx, id)
	switch {
	case errors.Is(err, store.ErrTokenNotFound):
		s.deny(w, r, http.StatusNotFound, "no such enrolment token")
		return
	case errors.Is(err, store.ErrTokenSpent):
		s.deny(w, r, http.StatusConflict, "this token already enrolled an agent; revoke the agent instead (wardctl agent revoke)")
		return
	case err != nil:
		s.log.Error("revoke enrolment token", "err", err)
		_ = s.record(ctx, p, "enrollment_token.revoke", "enrollment_token:"+boundName(id), audit.OutcomeFailure, nil)
		s.deny(w, r, http.StatusInternalServerError, "revoking the token failed")
		return
	}
	_ = s.record(ctx, p, "enrollment_token.revoke", "enrollment_token:"+id, audit.OutcomeSuccess, nil)
	if isForm(r) {
		http.Redirect(w, r, "/fleet", http.StatusSeeOther)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"id": id, "state": "revoked"})
}

// UserView is an account without its secrets.
type UserView struct {
	Username    string    `json:"username"`
	Role        string    `json:"role"`
	MFA         bool      `json:"mfa_enrolled"`
	SSO         bool      `json:"sso"`
	Disabled    bool      `json:"disabled"`
	Locked      bool      `json:"locked"`
	CreatedAt   time.Time `json:"created_at"`
	LastLoginAt time.Time `json:"last_login_at,omitzero"`
}

func (s *Server) users(r *http.Request) ([]UserView, error) {
	us, err := s.st.ConsoleUsers(r.Context())
	if err != nil {
		return nil, err
	}
	out := make([]UserView, 0, len(us))
	for _, u := range us {
		out = append(out, UserView{Username: u.Username, Role: u.Role, MFA: u.TOTPEnabled, SSO: u.OIDCSubject != "",
			Disabled: u.Disabled, Locked: s.now().Before(u.LockedUntil), CreatedAt: u.CreatedAt, LastLoginAt: u.LastLoginAt})
	}
	return out, nil
}

func (s *Server) apiUsers(w http.ResponseWriter, r *http.Request) {
	us, err := s.users(r)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "listing users failed")
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"users": us})
}

// AuditItem is one audit log entry as shown.
type AuditItem struct {
	Index int64 `json:"index"`
	audit.Entry
	Error string `json:"error,omitempty"`
}

// AuditResponse is a page of the audit log, newest first, with the log's verification.
type AuditResponse struct {
	Entries      []AuditItem `json:"entries"`
	Size         int64       `json:"size"`
	Verified     bool        `json:"verified"`
	Verification string      `json:"verification"`
	Next         int64       `json:"next"`
}

func (s *Server) auditLog(r *http.Request) (AuditResponse, error) {
	ctx := r.Context()
	size, err := s.st.AuditSize(ctx)
	if err != nil {
		return AuditResponse{}, err
	}
	before := size
	if v := r.URL.Query().Get("before"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return AuditResponse{}, fmt.Errorf("before: want an index, got %q", v)
		}
		before = min(n, size)
	}
	const page = 100
	after := max(before-page-1, -1)
	recs, err := s.st.AuditRecords(ctx, after, int(before-after-1))
	if err != nil {
		return AuditResponse{}, err
	}
	out := AuditResponse{Size: size, Entries: []AuditItem{}}
	for i := len(recs) - 1; i >= 0; i-- {
		e, err := audit.Decode(recs[i].Data)
		it := AuditItem{Index: recs[i].Index, Entry: e}
		if err != nil {
			it.Error = err.Error()
		}
		out.Entries = append(out.Entries, it)
	}
	if after >= 0 {
		out.Next = after + 1
	}
	switch {
	case s.verifier == nil:
		out.Verification = "not verified: this console has no verifier key for the audit log"
	default:
		rep, err := audit.VerifyStore(ctx, s.st, s.verifier, nil)
		if err != nil {
			out.Verification = "FAILED: " + err.Error()
		} else {
			out.Verified = true
			out.Verification = fmt.Sprintf("verified: %d entries, %d signed checkpoints (latest covers %d); %d entries after the latest checkpoint are checked against stored hashes only",
				rep.Entries, rep.Checkpoints, rep.Latest.Size, rep.Uncovered)
		}
	}
	return out, nil
}

func (s *Server) apiAudit(w http.ResponseWriter, r *http.Request) {
	a, err := s.auditLog(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, a)
}

// apiReport generates a report and serves it as a zip (default) or one of its files.
func (s *Server) apiReport(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	p := principalFrom(ctx)
	kind, err := report.ParseKind(r.PathValue("kind"))
	if err != nil {
		s.deny(w, r, http.StatusNotFound, err.Error())
		return
	}
	q := r.URL.Query()
	from, err := parseTimeParam(q, "from")
	if err == nil && from.IsZero() {
		err = errors.New("from is required")
	}
	to, err2 := parseTimeParam(q, "to")
	if err == nil && err2 != nil {
		err = err2
	}
	if err == nil && to.IsZero() {
		err = errors.New("to is required")
	}
	if err != nil {
		s.deny(w, r, http.StatusBadRequest, err.Error())
		return
	}
	format := q.Get("format")
	if format == "" {
		format = "zip"
	}
	if !containsStr([]string{"zip", "csv", "pdf", "manifest"}, format) {
		s.deny(w, r, http.StatusBadRequest, "format: want zip, csv, pdf or manifest")
		return
	}
	b, err := report.Generate(ctx, s.sources(), report.Request{Kind: kind, From: from, To: to, GeneratedBy: "console:" + p.user.Username})
	if err != nil {
		s.deny(w, r, http.StatusBadRequest, err.Error())
		return
	}
	// A report is an export of evidence: it is audited, and not served if it cannot be.
	details := b.AuditDetails()
	details["format"] = format
	if err := s.record(ctx, p, "report.export", "report:"+string(kind), audit.OutcomeSuccess, details); err != nil {
		s.deny(w, r, http.StatusServiceUnavailable, "the audit log is unavailable, so reports cannot be exported")
		return
	}
	var name, ctype string
	var data []byte
	switch format {
	case "zip":
		var buf strings.Builder
		if err := b.WriteZip(&buf); err != nil {
			s.deny(w, r, http.StatusInternalServerError, "writing the report failed")
			return
		}
		name, ctype, data = b.BaseName()+".zip", "application/zip", []byte(buf.String())
	default:
		want := map[string]string{"csv": ".csv", "pdf": ".pdf", "manifest": report.ManifestName}[format]
		for _, f := range b.Files {
			if strings.HasSuffix(f.Name, want) {
				name, data = b.BaseName()+"_"+f.Name, f.Data
			}
		}
		ctype = map[string]string{"csv": "text/csv; charset=utf-8", "pdf": "application/pdf", "manifest": "application/json"}[format]
	}
	w.Header().Set("Content-Type", ctype)
	w.Header().Set("Content-Disposition", mime.FormatMediaType("attachment", map[string]string{"filename": name}))
	w.Header().Set("X-Ward-Manifest-Rows", strconv.Itoa(b.Manifest.Rows))
	_, _ = w.Write(data)
}
