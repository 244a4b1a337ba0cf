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

func TestCString(t *testing.T) {
	if CString([]byte("ab\x00cd")) != "ab" || CString([]byte("abc")) != "abc" {
		t.Error("CString")
	}
}
