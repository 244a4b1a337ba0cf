package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/ward-dlp/ward/collector/audit"
	"github.com/ward-dlp/ward/collector/console/account"
	"github.com/ward-dlp/ward/collector/report"
	"github.com/ward-dlp/ward/collector/store"
)

// SetReports enables the report and console-user endpoints: reports are built from src, and
// passwords are hashed with params (zero: account.DefaultParams).
func (s *Server) SetReports(src report.Sources, params account.Params) {
	s.reports = &src
	if params == (account.Params{}) {
		params = account.DefaultParams
	}
	s.params = params
}

// UserRequest is the body of POST /v1/users and POST /v1/users/{name}/reset.
type UserRequest struct {
	Username string `json:"username"`
	Role     string `json:"role"`
}

// UserResponse answers a user add or reset: the one-time password is shown only here.
type UserResponse struct {
	Username        string `json:"username"`
	Role            string `json:"role"`
	InitialPassword string `json:"initial_password"`
}

// ConsoleUserLine is one account in GET /v1/users, without secrets.
type ConsoleUserLine struct {
	Username    string    `json:"username"`
	Role        string    `json:"role"`
	MFA         bool      `json:"mfa_enrolled"`
	Disabled    bool      `json:"disabled"`
	LockedUntil time.Time `json:"locked_until,omitzero"`
	CreatedAt   time.Time `json:"created_at"`
	LastLoginAt time.Time `json:"last_login_at,omitzero"`
}

func (s *Server) consoleReady(w http.ResponseWriter) bool {
	if s.reports == nil {
		writeError(w, http.StatusNotImplemented, "console accounts and reports are not enabled on this collector")
		return false
	}
	return true
}

func (s *Server) addUser(w http.ResponseWriter, r *http.Request) {
	if !s.consoleReady(w) {
		return
	}
	var req UserRequest
	if err := decodeJSON(w, r, &req); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	role, err := account.ParseRole(req.Role)
	if err == nil {
		err = account.ValidUsername(req.Username)
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	pw, h, ok := s.oneTimePassword(w)
	if !ok {
		return
	}
	_, err = s.store.CreateConsoleUser(r.Context(), store.ConsoleUser{Username: req.Username, Role: string(role), PasswordHash: h, MustChange: true}, time.Now())
	s.recordAfter(r, audit.ActionUserChange, "user:"+req.Username, err, map[string]string{"op": "add", "role": string(role)})
	if errors.Is(err, store.ErrUserExists) {
		writeError(w, http.StatusConflict, fmt.Sprintf("user %q exists; use wardctl user reset", req.Username))
		return
	}
	if err != nil {
		s.log.Error("add console user", "err", err)
		writeError(w, http.StatusInternalServerError, "adding the user failed")
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusCreated, UserResponse{Username: req.Username, Role: string(role), InitialPassword: pw})
}

// oneTimePassword makes an initial password and its hash (answering 500 when it cannot);
// the account is stored with must-change set, so the user replaces it at first sign-in.
func (s *Server) oneTimePassword(w http.ResponseWriter) (pw, hash string, ok bool) {
	pw, err := account.NewPassword()
	if err != nil {
		writeError(w, http.StatusInternalServerError, "random password failed")
		return "", "", false
	}
	hash, err = account.HashPassword(pw, s.params)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "hashing failed")
		return "", "", false
	}
	return pw, hash, true
}

func (s *Server) resetUser(w http.ResponseWriter, r *http.Request) {
	if !s.consoleReady(w) {
		return
	}
	name := r.PathValue("name")
	var req UserRequest
	if err := decodeJSON(w, r, &req); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if req.Role != "" {
		if _, err := account.ParseRole(req.Role); err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
	}
	pw, h, ok := s.oneTimePassword(w)
	if !ok {
		return
	}
	u, err := s.store.ResetConsoleUser(r.Context(), name, h, req.Role, time.Now())
	s.recordAfter(r, audit.ActionUserChange, "user:"+name, err, map[string]string{"op": "reset", "role": req.Role})
	if errors.Is(err, store.ErrUserUnknown) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no user %q", name))
		return
	}
	if err != nil {
		writeError(w, http.StatusInternalServerError, "resetting the user failed")
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, UserResponse{Username: u.Username, Role: u.Role, InitialPassword: pw})
}

func (s *Server) listUsers(w http.ResponseWriter, r *http.Request) {
	if !s.consoleReady(w) {
		return
	}
	us, err := s.store.ConsoleUsers(r.Context())
	if err != nil {
		writeError(w, http.StatusInternalServerError, "listing users failed")
		return
	}
	out := []ConsoleUserLine{}
	for _, u := range us {
		out = append(out, ConsoleUserLine{Username: u.Username, Role: u.Role, MFA: u.TOTPEnabled, Disabled: u.Disabled,
			LockedUntil: u.LockedUntil, CreatedAt: u.CreatedAt, LastLoginAt: u.LastLoginAt})
	}
	writeJSON(w, http.StatusOK, map[string]any{"users": out})
}

// report generates a report and answers with its zip (report.ReadZip verifies it).
func (s *Server) report(w http.ResponseWriter, r *http.Request) {
	if !s.consoleReady(w) {
		return
	}
	kind, err := report.ParseKind(r.PathValue("kind"))
	if err != nil {
		writeError(w, http.StatusNotFound, err.Error())
		return
	}
	q := r.URL.Query()
	from, err := report.ParseTime(q.Get("from"))
	if err != nil {
		writeError(w, http.StatusBadRequest, "from: "+err.Error())
		return
	}
	to, err := report.ParseTime(q.Get("to"))
	if err != nil {
		writeError(w, http.StatusBadRequest, "to: "+err.Error())
		return
	}
	b, err := report.Generate(r.Context(), *s.reports, report.Request{Kind: kind, From: from, To: to, GeneratedBy: actor(r).String()})
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	// Same action and details as the console's export, so one audit query finds both.
	if !s.record(w, r, "report.export", "report:"+string(kind), audit.OutcomeSuccess, b.AuditDetails()) {
		return
	}
	var buf bytes.Buffer
	if err := b.WriteZip(&buf); err != nil {
		writeError(w, http.StatusInternalServerError, "writing the report failed")
		return
	}
	w.Header().Set("Content-Type", "application/zip")
	_, _ = w.Write(buf.Bytes())
}

// decodeJSON reads a small JSON body (an empty body leaves v as is).
func decodeJSON(w http.ResponseWriter, r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 16<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("body: %w", err)
	}
	return nil
}
