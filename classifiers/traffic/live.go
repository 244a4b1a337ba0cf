package traffic

import (
	"net/netip"
	"time"
)

// The live path (agent/netcap) captures only the first packets of each flow, so it cannot
// wait for a flow to end inside the analyzer: the kernel's flow tracker reports the end,
// and asks here what the analyzer learned about the flow so far.

// Lookup returns what the analyzer knows so far about the live flow between two endpoints
// (in either order) over proto (6 TCP, 17 UDP). The flow stays live; its final record still
// comes through OnRecord when it ends.
func (a *Analyzer) Lookup(proto uint8, x, y netip.AddrPort) (FlowRecord, bool) {
	k, _ := makeKey(proto, x.Addr(), y.Addr(), x.Port(), y.Port())
	f := a.flows.get(a.hashKey(&k), &k)
	if f == nil {
		return FlowRecord{}, false
	}
	return a.record(f), true
}

// Advance moves the analyzer's clock to now and expires idle flows and IP fragments, as a
// packet at that time would. Live capture calls it on a timer: once a flow's first packets
// are captured no more arrive to drive expiry.
func (a *Analyzer) Advance(now time.Time) {
	n := now.UnixNano()
	if n > a.now {
		a.now = n
	}
	if a.now-a.sweptAt >= int64(time.Second) {
		a.expire(a.now)
		a.frags.expire(a.now, &a.stats)
		a.sweptAt = a.now
	}
}
