package traffic

import "github.com/ward-dlp/ward/classifiers/catalog"

// nameEntry is what a cache remembers about an address: a name, the app it matched and
// where it was learned, until exp (packet-time nanoseconds).
type nameEntry struct {
	name string
	app  *catalog.App
	src  NameSource
	exp  int64
}

// ttlCache is a bounded map with expiry. When full it first drops expired entries and,
// if none were, an arbitrary sixteenth: bounded memory matters more than perfect recall.
type ttlCache[K comparable] struct {
	m   map[K]nameEntry
	max int
}

func newTTLCache[K comparable](max int) ttlCache[K] {
	return ttlCache[K]{m: make(map[K]nameEntry, min(max, 1024)), max: max}
}

func (c *ttlCache[K]) get(k K, now int64) (nameEntry, bool) {
	e, ok := c.m[k]
	if !ok || e.exp < now {
		return nameEntry{}, false
	}
	return e, true
}

func (c *ttlCache[K]) put(k K, e nameEntry, now int64) {
	if _, ok := c.m[k]; !ok && len(c.m) >= c.max {
		freed := 0
		for k2, e2 := range c.m {
			if e2.exp < now {
				delete(c.m, k2)
				freed++
			}
		}
		for k2 := range c.m {
			if freed > c.max/16 {
				break
			}
			delete(c.m, k2)
			freed++
		}
	}
	c.m[k] = e
}
