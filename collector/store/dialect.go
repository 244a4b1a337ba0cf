package store

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
)

// PostgreSQL. The store is written once, in the SQL that SQLite and PostgreSQL share, with
// `?` placeholders; a connection wrapper translates each statement to PostgreSQL's dialect
// the first time it is seen (cached by text). The translation is mechanical and covers what
// the two dialects spell differently but mean the same:
//
//   - `?` → `$1, $2, …`
//   - the column name user (a reserved word in PostgreSQL, where a bare `user` is
//     CURRENT_USER) → "user"
//   - scalar MAX(a, b, …) / MIN(a, b, …) → GREATEST / LEAST; IFNULL → COALESCE
//   - INSERT OR IGNORE → INSERT … ON CONFLICT DO NOTHING; INSERT OR REPLACE INTO t(k, …) →
//     INSERT … ON CONFLICT (k) DO UPDATE SET every column (k, the first column, must be the
//     primary key)
//   - in schema statements: INTEGER → BIGINT, INTEGER PRIMARY KEY AUTOINCREMENT → an
//     identity column, BLOB → BYTEA, REAL → DOUBLE PRECISION, WITHOUT ROWID dropped.
//
// The migrations list is therefore one list for both databases: a PostgreSQL schema is the
// SQLite schema translated (pgMigrationOverrides holds the rare migration that needs a
// hand-written PostgreSQL form), and TestPostgresSchemaMatchesSQLite checks on a real
// server that both end with the same tables and columns. What cannot be translated fails
// loudly at the statement, never silently: PRAGMAs and VACUUM are guarded by Store.pg.

// Store drivers.
const (
	DriverSQLite   = "sqlite"
	DriverPostgres = "postgres"
)

// pgTranslations caches translated statements by their SQLite text.
var pgTranslations sync.Map

// pgSQL translates one statement (see the package comment above).
func pgSQL(q string) string {
	if v, ok := pgTranslations.Load(q); ok {
		return v.(string)
	}
	out := translate(q, false)
	pgTranslations.Store(q, out)
	return out
}

// pgDDL translates a schema script (one or more statements).
func pgDDL(q string) string { return translate(q, true) }

type token struct {
	kind byte // 'w' word, 's' string/quoted identifier/comment (verbatim), 'p' punctuation/space
	text string
}

func lex(q string) []token {
	var toks []token
	for i := 0; i < len(q); {
		c := q[i]
		switch {
		case c == '\'' || c == '"':
			j := i + 1
			for j < len(q) {
				if q[j] == c {
					if j+1 < len(q) && q[j+1] == c { // doubled quote escapes itself
						j += 2
						continue
					}
					break
				}
				j++
			}
			j = min(j+1, len(q))
			toks = append(toks, token{'s', q[i:j]})
			i = j
		case c == '-' && i+1 < len(q) && q[i+1] == '-':
			j := strings.IndexByte(q[i:], '\n')
			if j < 0 {
				j = len(q) - i
			}
			toks = append(toks, token{'s', q[i : i+j]})
			i += j
		case c == '/' && i+1 < len(q) && q[i+1] == '*':
			j := strings.Index(q[i+2:], "*/")
			end := len(q)
			if j >= 0 {
				end = i + 2 + j + 2
			}
			toks = append(toks, token{'s', q[i:end]})
			i = end
		case isWordByte(c):
			j := i
			for j < len(q) && isWordByte(q[j]) {
				j++
			}
			toks = append(toks, token{'w', q[i:j]})
			i = j
		default:
			toks = append(toks, token{'p', q[i : i+1]})
			i++
		}
	}
	return toks
}

func isWordByte(c byte) bool {
	return c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

// next returns the index of the next token after i that is not whitespace or a comment.
func next(toks []token, i int) int {
	for j := i + 1; j < len(toks); j++ {
		t := toks[j]
		if t.kind == 'p' && strings.TrimSpace(t.text) == "" || t.kind == 's' && (strings.HasPrefix(t.text, "--") || strings.HasPrefix(t.text, "/*")) {
			continue
		}
		return j
	}
	return len(toks)
}

func isWord(toks []token, i int, w string) bool {
	return i < len(toks) && toks[i].kind == 'w' && strings.EqualFold(toks[i].text, w)
}

// topLevelArgs counts the arguments of the call whose "(" is at open, and returns the index
// of its ")".
func topLevelArgs(toks []token, open int) (args, closeAt int) {
	depth := 0
	args = 1
	for j := open; j < len(toks); j++ {
		if toks[j].kind != 'p' {
			continue
		}
		switch toks[j].text {
		case "(":
			depth++
		case ")":
			depth--
			if depth == 0 {
				return args, j
			}
		case ",":
			if depth == 1 {
				args++
			}
		}
	}
	return args, len(toks)
}

func translate(q string, ddl bool) string {
	toks := lex(q)
	var b strings.Builder
	param := 0
	// Pending INSERT OR … rewrites: the clause is appended at the end of the statement
	// (before RETURNING).
	var onConflict string
	flush := func() {
		if onConflict != "" {
			b.WriteString(" " + onConflict)
			onConflict = ""
		}
	}
	for i := 0; i < len(toks); i++ {
		t := toks[i]
		switch t.kind {
		case 's':
			b.WriteString(t.text)
			continue
		case 'p':
			switch t.text {
			case "?":
				param++
				b.WriteString("$" + strconv.Itoa(param))
			case ";":
				flush()
				b.WriteString(t.text)
			default:
				b.WriteString(t.text)
			}
			continue
		}
		w := strings.ToUpper(t.text)
		prevDot := i > 0 && toks[i-1].text == "."
		switch {
		case w == "USER":
			b.WriteString(`"user"`)
		case (w == "MAX" || w == "MIN") && !prevDot:
			if o := next(toks, i); o < len(toks) && toks[o].text == "(" {
				if n, _ := topLevelArgs(toks, o); n >= 2 {
					if w == "MAX" {
						b.WriteString("GREATEST")
					} else {
						b.WriteString("LEAST")
					}
					continue
				}
			}
			b.WriteString(t.text)
		case w == "IFNULL":
			b.WriteString("COALESCE")
		case w == "RETURNING" && onConflict != "":
			b.WriteString(onConflict + " " + t.text)
			onConflict = ""
		case w == "INSERT" && isWord(toks, next(toks, i), "OR"):
			or := next(toks, i)
			kind := next(toks, or)
			into := next(toks, kind)
			switch {
			case isWord(toks, kind, "IGNORE"):
				onConflict = "ON CONFLICT DO NOTHING"
			case isWord(toks, kind, "REPLACE"):
				// INSERT OR REPLACE INTO t (k, c1, …): upsert on the first column.
				table := next(toks, into)
				open := next(toks, table)
				var cols []string
				if open < len(toks) && toks[open].text == "(" {
					_, closeAt := topLevelArgs(toks, open)
					for j := open + 1; j < closeAt; j++ {
						if toks[j].kind == 'w' {
							cols = append(cols, toks[j].text)
						}
					}
				}
				if len(cols) == 0 {
					b.WriteString(t.text) // leave it to fail loudly
					continue
				}
				var set []string
				for _, c := range cols[1:] {
					set = append(set, pgIdent(c)+" = excluded."+pgIdent(c))
				}
				onConflict = "ON CONFLICT (" + pgIdent(cols[0]) + ") DO "
				if len(set) == 0 {
					onConflict += "NOTHING"
				} else {
					onConflict += "UPDATE SET " + strings.Join(set, ", ")
				}
			default:
				b.WriteString(t.text)
				continue
			}
			b.WriteString("INSERT")
			i = kind // skip "OR IGNORE|REPLACE"; INTO follows
		case ddl && w == "AUTOINCREMENT":
			b.WriteString("GENERATED BY DEFAULT AS IDENTITY")
		case ddl && w == "INTEGER":
			b.WriteString("BIGINT")
		case ddl && w == "BLOB":
			b.WriteString("BYTEA")
		case ddl && w == "REAL":
			b.WriteString("DOUBLE PRECISION")
		case ddl && w == "WITHOUT" && isWord(toks, next(toks, i), "ROWID"):
			i = next(toks, i)
		default:
			b.WriteString(t.text)
		}
	}
	flush()
	out := b.String()
	if ddl {
		// PostgreSQL wants the identity clause after the type and before PRIMARY KEY:
		// "BIGINT PRIMARY KEY GENERATED BY DEFAULT AS IDENTITY" is rejected.
		out = strings.ReplaceAll(out, "BIGINT PRIMARY KEY GENERATED BY DEFAULT AS IDENTITY",
			"BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY")
	}
	return out
}

func pgIdent(c string) string {
	if strings.EqualFold(c, "user") {
		return `"user"`
	}
	return c
}

// pgConnector opens pgx connections whose statements are translated by pgSQL.
type pgConnector struct{ inner driver.Connector }

func newPGConnector(dsn string) (driver.Connector, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("postgres dsn: %w", err)
	}
	// Parameters take their types from the Go values (int64 → bigint, string → text), as
	// SQLite's loose typing lets the store's SQL assume; with server-side inference a
	// parameter in a SELECT list (INSERT … SELECT ?, …) would be text. Statements the store
	// prepares explicitly (the ingest path) are still prepared once per connection.
	cfg.DefaultQueryExecMode = pgx.QueryExecModeExec
	return pgConnector{inner: stdlib.GetConnector(*cfg)}, nil
}

func (c pgConnector) Connect(ctx context.Context) (driver.Conn, error) {
	conn, err := c.inner.Connect(ctx)
	if err != nil {
		return nil, err
	}
	return &pgConn{Conn: conn.(*stdlib.Conn)}, nil
}

func (c pgConnector) Driver() driver.Driver { return c.inner.Driver() }

// pgConn is a pgx connection that translates every statement.
type pgConn struct{ *stdlib.Conn }

func (c *pgConn) Prepare(query string) (driver.Stmt, error) {
	return c.Conn.Prepare(pgSQL(query))
}

func (c *pgConn) PrepareContext(ctx context.Context, query string) (driver.Stmt, error) {
	return c.Conn.PrepareContext(ctx, pgSQL(query))
}

func (c *pgConn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	return c.Conn.ExecContext(ctx, pgSQL(query), args)
}

func (c *pgConn) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	return c.Conn.QueryContext(ctx, pgSQL(query), args)
}

// CheckNamedValue stores Go values as the SQLite schema's INTEGER columns expect: booleans
// as 0/1 (pgx would send 'f'/'t' to a BIGINT column) and unsigned integers as int64.
func (c *pgConn) CheckNamedValue(nv *driver.NamedValue) error {
	switch v := nv.Value.(type) {
	case bool:
		if v {
			nv.Value = int64(1)
		} else {
			nv.Value = int64(0)
		}
	case uint64:
		if v > 1<<63-1 {
			return fmt.Errorf("unsigned value %d does not fit a BIGINT", v)
		}
		nv.Value = int64(v)
	case uint32:
		nv.Value = int64(v)
	case int:
		nv.Value = int64(v)
	case int32:
		nv.Value = int64(v)
	}
	return c.Conn.CheckNamedValue(nv)
}

// errPostgresOnly marks operations that exist only for one database.
var errSQLiteOnly = errors.New("this operation exists only for the SQLite store")
