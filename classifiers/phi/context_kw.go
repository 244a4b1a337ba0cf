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

// contextCursor answers one detector's keyword questions about one content.
type contextCursor struct {
	c *keywordContext
	b []byte
}

func (c *keywordContext) cursor(s *engine.Scan) contextCursor {
	return contextCursor{c: c, b: s.Content}
}

// find returns the keyword nearest the start of the window around [start, end), or -1.
// (A cursor that remembered scanned windows was measured slower: keywords usually sit
// right before the value, where a direct search stops early.)
func (cc *contextCursor) find(start, end int) int {
	hi := start
	if cc.c.after > 0 {
		hi = end + cc.c.after
	}
	return cc.c.set.Find(cc.b, start-cc.c.before, hi)
}

// any reports whether one of the detector's keywords starts within keyword_before bytes
// before [lo, hi) or inside it: a cheap superset test before parsing a candidate.
func (cc *contextCursor) any(lo, hi int) bool {
	return cc.c.set.Find(cc.b, lo-cc.c.before, hi) >= 0
}
