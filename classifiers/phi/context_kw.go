package phi

import (
	"github.com/ward-dlp/ward/classifiers/defs"
	"github.com/ward-dlp/ward/classifiers/engine"
)

// keywordContext is one detector's context keywords and how far from a value
// [start, end) they may sit: keyword_before bytes before its start, keyword_after bytes
// after its end.
type keywordContext struct {
	set           *defs.KeywordSet
	own           []defs.Keyword
	before, after int
}

func newKeywordContext(d defs.Definition) keywordContext {
	return keywordContext{set: defs.NewKeywordSet(d.Keywords), own: d.Keywords, before: d.KeywordBefore, after: d.KeywordAfter}
}

// name is the evidence name of the detector's keyword k.
func (c *keywordContext) name(k int) string { return c.own[k].Name }

// contextCursor answers one detector's keyword questions about one content. Detectors ask
// in offset order, so a defs.Cursor reads each byte once however much the windows overlap.
type contextCursor struct {
	c   *keywordContext
	cur defs.Cursor
}

func (c *keywordContext) cursor(s *engine.Scan) contextCursor {
	return contextCursor{c: c, cur: c.set.Cursor(s.Content)}
}

// find returns the keyword nearest the start of the window around [start, end), or -1.
func (cc *contextCursor) find(start, end int) int {
	hi := start
	if cc.c.after > 0 {
		hi = end + cc.c.after
	}
	return cc.cur.Find(start-cc.c.before, hi)
}

// last returns the keyword starting last in [lo, hi), its start and its end, or k -1: the
// keyword nearest a value is the one that vouches for it.
func (cc *contextCursor) last(lo, hi int) (k, start, end int) {
	k, start = cc.cur.Last(lo, hi)
	if k < 0 {
		return -1, -1, -1
	}
	return k, start, start + cc.c.set.TextLen(k)
}

// anyIn reports whether a keyword starts in [lo, hi).
func (cc *contextCursor) anyIn(lo, hi int) bool {
	return cc.cur.Find(lo, hi) >= 0
}
