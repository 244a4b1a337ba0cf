package kernel

import (
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestRingSize(t *testing.T) {
	page := uint32(os.Getpagesize())
	for _, c := range []struct{ in, want uint32 }{
		{0, page}, {1, page}, {page, page}, {page + 1, 2 * page}, {8 << 20, 8 << 20}, {5 << 20, 8 << 20},
	} {
		if got := RingSize(c.in); got != c.want {
			t.Errorf("RingSize(%d) = %d, want %d", c.in, got, c.want)
		}
	}
}

func TestClock(t *testing.T) {
	var c Clock
	if !c.Time(0).IsZero() {
		t.Error("zero boot time must stay zero")
	}
	boot := uint64(clockNs(unix.CLOCK_BOOTTIME))
	if d := time.Since(c.Time(boot)); d < -time.Second || d > time.Second {
		t.Errorf("boot-clock now converts to %v away from wall now", d)
	}
}

// TestClockResamplesFromRecordTime checks the staleness decision uses the
// record's timestamp: a stale offset is replaced once a record is more than a
// second past the last sample, and kept for records inside that second.
func TestClockResamplesFromRecordTime(t *testing.T) {
	var c Clock
	boot := clockNs(unix.CLOCK_BOOTTIME)
	c.offset.Store(0) // wrong on purpose: wall time would read as the boot clock
	c.sampled.Store(boot - int64(500*time.Millisecond))
	if got := c.Time(uint64(boot)); got.UnixNano() != boot {
		t.Fatalf("a record inside the resample interval must use the stored offset, got %v", got)
	}
	later := boot + 2*clockResample
	c.sampled.Store(boot)
	if d := c.Time(uint64(later)).Sub(time.Now().Add(2 * time.Second)); d < -time.Second || d > time.Second {
		t.Errorf("a record past the interval must resample the offset; off by %v", d)
	}
}

func TestCString(t *testing.T) {
	if CString([]byte("ab\x00cd")) != "ab" || CString([]byte("abc")) != "abc" {
		t.Error("CString")
	}
}
