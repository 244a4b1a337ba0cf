package console

import (
	"slices"

	"github.com/ward-dlp/ward/collector/console/account"
)

// Perm is one thing the console lets a role do. Every route names exactly one; the server
// checks it on every request (docs/console.md has the table).
type Perm string

// Permissions.
const (
	// PermAny is any signed-in user (their own session, the API description).
	PermAny           Perm = "any"
	PermEventsRead    Perm = "events.read"
	PermEvidenceView  Perm = "evidence.view"
	PermEventsTriage  Perm = "events.triage"
	PermShadowITRead  Perm = "shadowit.read"
	PermAppsSanction  Perm = "apps.sanction"
	PermFleetRead     Perm = "fleet.read"
	PermTokensCreate  Perm = "tokens.create"
	PermTokensManage  Perm = "tokens.manage"
	PermUsersManage   Perm = "users.manage"
	PermAuditRead     Perm = "audit.read"
	PermReportsExport Perm = "reports.export"
)

// grants is the least-privilege table: admins run the system but do not read evidence;
// analysts read and triage events but not reports or sanctioning; auditors read reports,
// shadow IT and the audit log, and change nothing.
var grants = map[account.Role][]Perm{
	account.RoleAdmin:   {PermAny, PermShadowITRead, PermAppsSanction, PermFleetRead, PermTokensCreate, PermTokensManage, PermUsersManage, PermAuditRead},
	account.RoleAnalyst: {PermAny, PermEventsRead, PermEvidenceView, PermEventsTriage, PermFleetRead},
	account.RoleAuditor: {PermAny, PermShadowITRead, PermAuditRead, PermReportsExport},
}

// Allowed reports whether role has perm.
func Allowed(role account.Role, perm Perm) bool {
	return slices.Contains(grants[role], perm)
}

func validRole(s string) bool {
	_, err := account.ParseRole(s)
	return err == nil
}
