// Package api is the collector's local admin API, used by wardctl: JSON over HTTP on a unix
// socket.
//
// Why a unix socket with SO_PEERCRED rather than a TCP port with a password or token:
//   - it is not reachable from the network at all, so there is no remote attack surface and no
//     TLS to configure for it;
//   - the kernel tells us who the peer is (uid, gid, pid at connect time); the client cannot
//     forge it, and there is no secret to generate, store, leak or rotate;
//   - it composes with file permissions as two independent layers: the socket is 0600 in a 0700
//     directory, and even if a packager or operator loosens those modes, peers other than root
//     and the collector's own user are still refused with 403;
//   - the uid is logged with every mutating request, which the audit trail needs.
package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/ward-dlp/ward/collector/audit"
	"github.com/ward-dlp/ward/collector/console/account"
	"github.com/ward-dlp/ward/collector/enroll"
	"github.com/ward-dlp/ward/collector/report"
	"github.com/ward-dlp/ward/collector/store"
)

// Server is the admin API.
type Server struct {
	store   *store.Store
	enr     *enroll.Enroller
	log     *slog.Logger
	version string
	// allowed are the uids that may use the API: root and the collector's own uid.
	allowed map[uint32]bool
	// audit records administrative actions and event reads (nil: not recorded).
	audit *audit.Log
	// reports and params serve the report and console-user endpoints (console.go); nil
	// reports disables them.
	reports *report.Sources
	params  account.Params
}

// New builds the API server.
func New(st *store.Store, enr *enroll.Enroller, version string, log *slog.Logger) *Server {
	return &Server{
		store:   st,
		enr:     enr,
		log:     log,
		version: version,
		allowed: map[uint32]bool{0: true, uint32(os.Getuid()): true},
	}
}

// Listen creates the admin socket at path: parent directory 0700, socket 0600. A stale socket
// left by a crashed collector is replaced; a live one (another collector answering) is an
// error rather than being stolen.
func Listen(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("api: create directory for %s: %w", path, err)
	}
	if _, err := os.Lstat(path); err == nil {
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			_ = c.Close()
			return nil, fmt.Errorf("api: %s is in use: is another ward-collector running with the same home?", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("api: remove stale socket %s: %w", path, err)
		}
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("api: listen on %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		_ = l.Close()
		return nil, fmt.Errorf("api: chmod %s: %w", path, err)
	}
	return l, nil
}

// Serve serves the API on l until ctx ends, then shuts down, giving requests up to grace to
// finish (follow streams end at once, since they run on ctx).
func (s *Server) Serve(ctx context.Context, l net.Listener, grace time.Duration) error {
	hs := &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: 5 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		BaseContext:       func(net.Listener) context.Context { return ctx },
		ConnContext:       connWithPeer,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(l) }()
	select {
	case err := <-errc:
		return fmt.Errorf("api: serve: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil {
		_ = hs.Close()
		return fmt.Errorf("api: shutdown: %w", err)
	}
	return nil
}

// route is one admin API endpoint: a ServeMux pattern ("METHOD /path") and its handler.
type route struct {
	pattern string
	handler http.HandlerFunc
}

// routes is the one list of endpoints: Handler registers exactly these, and the OpenAPI test
// checks them against openapi.yaml both ways, so an undocumented route cannot ship.
func (s *Server) routes() []route {
	return []route{
		{"GET /v1/openapi.yaml", s.openapi},
		{"GET /v1/healthz", s.healthz},
		{"GET /v1/events", s.listEvents},
		{"GET /v1/events/follow", s.followEvents},
		{"POST /v1/enrollment-tokens", s.createToken},
		{"GET /v1/agents", s.listAgents},
		{"POST /v1/agents/{id}/revoke", s.revokeAgent},
		{"POST /v1/policy", s.pushPolicy},
		{"GET /v1/policy", s.policyStatus},
		{"GET /v1/audit/entries", s.auditEntries},
		{"GET /v1/audit/checkpoints", s.auditCheckpoints},
		{"POST /v1/audit/checkpoints", s.auditCheckpointNow},
		{"GET /v1/sinks", s.sinkStatus},
		{"GET /v1/sinks/dead-letters", s.deadLetters},
		{"POST /v1/sinks/{name}/replay", s.replay},
		{"POST /v1/evidence/rewrap", s.rewrapEvidence},
		{"GET /v1/users", s.listUsers},
		{"POST /v1/users", s.addUser},
		{"POST /v1/users/{name}/reset", s.resetUser},
		{"GET /v1/reports/{kind}", s.report},
	}
}

// Handler returns the API's routes behind the peer-credential check.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	for _, rt := range s.routes() {
		mux.HandleFunc(rt.pattern, rt.handler)
	}
	return s.requirePeer(mux)
}

type peerKey struct{}

type peerCred struct {
	ucred *syscall.Ucred
	err   error
}

// connWithPeer reads SO_PEERCRED once per connection: the credentials of the process that
// connected, recorded by the kernel at connect(2).
func connWithPeer(ctx context.Context, c net.Conn) context.Context {
	pc := peerCred{err: errors.New("not a unix socket connection")}
	if uc, ok := c.(*net.UnixConn); ok {
		raw, err := uc.SyscallConn()
		if err != nil {
			pc.err = err
		} else {
			cerr := raw.Control(func(fd uintptr) {
				pc.ucred, pc.err = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
			})
			if cerr != nil {
				pc.err = cerr
			}
		}
	}
	return context.WithValue(ctx, peerKey{}, pc)
}

func (s *Server) requirePeer(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		pc, _ := r.Context().Value(peerKey{}).(peerCred)
		if pc.ucred == nil || !s.allowed[pc.ucred.Uid] {
			uid := int64(-1)
			if pc.ucred != nil {
				uid = int64(pc.ucred.Uid)
			}
			s.log.Warn("admin API refused peer", "uid", uid, "path", r.URL.Path, "err", pc.err)
			s.record(nil, r, audit.ActionAdminAccessDenied, r.Method+" "+r.URL.Path, audit.OutcomeDenied, nil)
			writeError(w, http.StatusForbidden, "only root or the collector's user may use the admin API")
			return
		}
		if r.Method != http.MethodGet {
			s.log.Info("admin API request", "method", r.Method, "path", r.URL.Path, "uid", pc.ucred.Uid, "pid", pc.ucred.Pid)
		}
		next.ServeHTTP(w, r)
	})
}

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	if err := s.store.Ping(r.Context()); err != nil {
		writeError(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	v, _ := s.store.SchemaVersion(r.Context())
	writeJSON(w, http.StatusOK, map[string]any{"status": "ok", "version": s.version, "schema_version": v})
}

// EventLine is one line of the events endpoints: the Event as protojson (proto field names)
// plus where and when the store put it.
type EventLine struct {
	RowID      int64           `json:"rowid"`
	ReceivedAt time.Time       `json:"received_at"`
	Event      json.RawMessage `json:"event"`
}

var eventJSON = protojson.MarshalOptions{UseProtoNames: true}

func eventLine(e store.StoredEvent) (EventLine, error) {
	ev, err := e.Event()
	if err != nil {
		return EventLine{}, err
	}
	b, err := eventJSON.Marshal(ev)
	if err != nil {
		return EventLine{}, fmt.Errorf("api: encode event rowid %d: %w", e.RowID, err)
	}
	return EventLine{RowID: e.RowID, ReceivedAt: e.ReceivedAt, Event: b}, nil
}

// parseFilter reads after, since (RFC 3339 or a duration back from now), kind, agent, limit
// and newest from the query string.
func parseFilter(r *http.Request) (store.Filter, error) {
	q := r.URL.Query()
	var f store.Filter
	if v := q.Get("after"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return f, fmt.Errorf("after: want a rowid, got %q", v)
		}
		f.AfterRowID = n
	}
	if v := q.Get("since"); v != "" {
		if d, err := time.ParseDuration(v); err == nil {
			f.Since = time.Now().Add(-d)
		} else if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
			f.Since = t
		} else {
			return f, fmt.Errorf("since: want RFC 3339 time or a duration like 1h, got %q", v)
		}
	}
	f.Kind = q.Get("kind")
	switch f.Kind {
	case "", store.KindProcess, store.KindFile, store.KindFinding, store.KindHealth, store.KindFlow, store.KindFleet:
	default:
		return f, fmt.Errorf("kind: want process, file, finding, flow, health or fleet, got %q", f.Kind)
	}
	f.AgentID = q.Get("agent")
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > store.MaxLimit {
			return f, fmt.Errorf("limit: want 1..%d, got %q", store.MaxLimit, v)
		}
		f.Limit = n
	}
	if v := q.Get("newest"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return f, fmt.Errorf("newest: want true or false, got %q", v)
		}
		f.Newest = b
	}
	return f, nil
}

// listEvents writes matching events as NDJSON, oldest first.
func (s *Server) listEvents(w http.ResponseWriter, r *http.Request) {
	f, err := parseFilter(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if !s.record(w, r, audit.ActionEventsRead, "events", audit.OutcomeSuccess, filterDetails(r, "list")) {
		return
	}
	events, err := s.store.ListEvents(r.Context(), f)
	if err != nil {
		s.log.Error("list events", "err", err)
		writeError(w, http.StatusInternalServerError, "listing events failed")
		return
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	enc := json.NewEncoder(w)
	for _, e := range events {
		line, err := eventLine(e)
		if err != nil {
			s.log.Error("encode event", "err", err)
			continue
		}
		if err := enc.Encode(line); err != nil {
			return // client went away
		}
	}
}

// followEvents streams NDJSON until the client disconnects or the collector stops. Without
// after it starts at the newest event, so only new ones are sent.
func (s *Server) followEvents(w http.ResponseWriter, r *http.Request) {
	f, err := parseFilter(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if r.URL.Query().Get("after") == "" {
		if f.AfterRowID, err = s.store.LastRowID(r.Context()); err != nil {
			writeError(w, http.StatusInternalServerError, "reading the event cursor failed")
			return
		}
	}
	if !s.record(w, r, audit.ActionEventsRead, "events", audit.OutcomeSuccess, filterDetails(r, "follow")) {
		return
	}
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	if err := rc.Flush(); err != nil {
		return
	}
	enc := json.NewEncoder(w)
	err = s.store.Follow(r.Context(), f, func(e store.StoredEvent) error {
		line, err := eventLine(e)
		if err != nil {
			s.log.Error("encode event", "err", err)
			return nil
		}
		if err := enc.Encode(line); err != nil {
			return err
		}
		return rc.Flush()
	})
	if err != nil && r.Context().Err() == nil {
		s.log.Debug("follow ended", "err", err)
	}
}

type tokenRequest struct {
	TTL string `json:"ttl"`
}

// TokenResponse is the answer to POST /v1/enrollment-tokens. The token is shown only here.
type TokenResponse struct {
	Token     string    `json:"token"`
	ExpiresAt time.Time `json:"expires_at"`
}

func (s *Server) createToken(w http.ResponseWriter, r *http.Request) {
	var req tokenRequest
	body := http.MaxBytesReader(w, r.Body, 4<<10)
	if err := json.NewDecoder(body).Decode(&req); err != nil && !errors.Is(err, io.EOF) {
		writeError(w, http.StatusBadRequest, "body: "+err.Error())
		return
	}
	var ttl time.Duration
	if req.TTL != "" {
		d, err := time.ParseDuration(req.TTL)
		if err != nil || d <= 0 {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("ttl: want a positive duration like 1h, got %q", req.TTL))
			return
		}
		ttl = d
	}
	tok, exp, err := s.enr.CreateToken(r.Context(), ttl)
	// The token itself is never recorded: it is a credential until used.
	details := map[string]string{"ttl": req.TTL}
	if err == nil {
		details["expires_at"] = exp.UTC().Format(time.RFC3339)
	}
	s.recordAfter(r, audit.ActionTokenCreate, "", err, details)
	if err != nil {
		if errors.Is(err, enroll.ErrTTLTooLong) {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
		s.log.Error("create token", "err", err)
		writeError(w, http.StatusInternalServerError, "creating the token failed")
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusCreated, TokenResponse{Token: tok, ExpiresAt: exp.UTC()})
}

// AgentsResponse is the answer to GET /v1/agents.
type AgentsResponse struct {
	Agents []AgentView `json:"agents"`
}

func (s *Server) listAgents(w http.ResponseWriter, r *http.Request) {
	views, err := s.store.AgentStatuses(r.Context())
	if err != nil {
		s.log.Error("list agents", "err", err)
		writeError(w, http.StatusInternalServerError, "listing agents failed")
		return
	}
	writeJSON(w, http.StatusOK, AgentsResponse{Agents: views})
}

func (s *Server) revokeAgent(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	err := s.store.RevokeAgent(r.Context(), id, time.Now())
	s.recordAfter(r, audit.ActionAgentRevoke, id, err, nil)
	if errors.Is(err, store.ErrAgentUnknown) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no agent %q", id))
		return
	}
	if err != nil {
		s.log.Error("revoke agent", "agent_id", id, "err", err)
		writeError(w, http.StatusInternalServerError, "revoking the agent failed")
		return
	}
	s.log.Info("agent revoked", "agent_id", id)
	a, err := s.store.Agent(r.Context(), id)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "reading the agent failed")
		return
	}
	writeJSON(w, http.StatusOK, a)
}

// ErrorResponse is the body of every non-2xx answer.
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

// filterDetails names an events read in the audit log: the endpoint and the filter, which
// say what could have been seen (the events themselves are not copied into the log).
func filterDetails(r *http.Request, mode string) map[string]string {
	d := map[string]string{"mode": mode}
	for _, k := range []string{"kind", "agent", "since", "after", "limit", "newest"} {
		if v := r.URL.Query().Get(k); v != "" {
			d[k] = v
		}
	}
	return d
}
