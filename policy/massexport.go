package policy

import (
	"sync"
	"time"
)

// Mass-export state is bounded: each rule keeps at most maxTrackedUsers users, each with a
// fixed ring of massBuckets time buckets covering the rule's window. The window therefore
// slides in steps of window/massBuckets, and the least recently active user is forgotten
// when a new one arrives at the bound.
const (
	massBuckets     = 60
	maxTrackedUsers = 4096
)

type massCounter struct {
	cfg    MassExport
	bucket time.Duration
	mu     sync.Mutex
	users  map[string]*userWindow
}

type userWindow struct {
	epoch   [massBuckets]int64 // bucket number each slot holds
	records [massBuckets]int64
	bytes   [massBuckets]int64
	last    int64 // newest bucket number seen
	firedAt int64 // bucket number of the last firing; -1 never
}

func newMassCounter(m *MassExport) *massCounter {
	b := m.Window / massBuckets
	if b <= 0 {
		b = time.Second
	}
	return &massCounter{cfg: *m, bucket: b, users: make(map[string]*userWindow)}
}

// add counts records and bytes for user at t and reports whether the window's total crossed
// a threshold with this input. After firing, a user's counter stays quiet for one window so
// an ongoing export raises one alert per window rather than one per file.
func (m *massCounter) add(user string, t time.Time, records, bytes int64) bool {
	now := t.UnixNano() / int64(m.bucket)
	m.mu.Lock()
	defer m.mu.Unlock()
	w := m.users[user]
	if w == nil {
		if len(m.users) >= maxTrackedUsers {
			m.evictOldest()
		}
		w = &userWindow{firedAt: -1 << 62}
		for i := range w.epoch {
			w.epoch[i] = -1
		}
		m.users[user] = w
	}
	slot := int(uint64(now) % massBuckets)
	if w.epoch[slot] != now {
		w.epoch[slot], w.records[slot], w.bytes[slot] = now, 0, 0
	}
	w.records[slot] += max(records, 0)
	w.bytes[slot] += max(bytes, 0)
	w.last = max(w.last, now)
	var sumR, sumB int64
	for i := range w.epoch {
		if e := w.epoch[i]; e >= 0 && e > now-massBuckets && e <= now {
			sumR += w.records[i]
			sumB += w.bytes[i]
		}
	}
	over := (m.cfg.Records > 0 && sumR >= m.cfg.Records) || (m.cfg.Bytes > 0 && sumB >= m.cfg.Bytes)
	if !over || now-w.firedAt < massBuckets {
		return false
	}
	w.firedAt = now
	return true
}

func (m *massCounter) evictOldest() {
	var oldest string
	var at int64 = 1<<63 - 1
	for u, w := range m.users {
		if w.last < at {
			oldest, at = u, w.last
		}
	}
	delete(m.users, oldest)
}
