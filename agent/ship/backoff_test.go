package ship

import (
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	wardv1 "github.com/ward-dlp/ward/api/ward/v1"
)

func TestBackoffFullJitterBounded(t *testing.T) {
	s := &Shipper{cfg: Config{MinBackoff: 200 * time.Millisecond, MaxBackoff: 30 * time.Second}}
	for attempt, ceil := range []time.Duration{200 * time.Millisecond, 400 * time.Millisecond, 800 * time.Millisecond} {
		for range 200 {
			if d := s.backoff(attempt); d <= 0 || d > ceil+time.Millisecond {
				t.Fatalf("attempt %d: delay %v outside (0, %v]", attempt, d, ceil)
			}
		}
	}
	var maxSeen time.Duration
	for range 2000 {
		maxSeen = max(maxSeen, s.backoff(1000))
	}
	if maxSeen > 30*time.Second+time.Millisecond || maxSeen < 20*time.Second {
		t.Fatalf("capped delays: max seen %v", maxSeen)
	}
}

func TestRetryDelay(t *testing.T) {
	st, _ := status.New(codes.ResourceExhausted, "slow").WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(3 * time.Second)})
	if d, ok := retryDelay(st.Err()); !ok || d != 3*time.Second {
		t.Fatalf("retryDelay = %v, %v", d, ok)
	}
	if _, ok := retryDelay(status.Error(codes.ResourceExhausted, "no info")); ok {
		t.Fatal("found RetryInfo where there is none")
	}
	st, _ = status.New(codes.ResourceExhausted, "slow").WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(time.Hour)})
	if d, _ := retryDelay(st.Err()); d != maxThrottle {
		t.Fatalf("huge RetryInfo not capped: %v", d)
	}
}

func TestCovered(t *testing.T) {
	batch := []*wardv1.Event{{Seq: 1}, {Seq: 2}, {Seq: 5}, {Seq: 9}}
	if n := covered(batch, []*wardv1.SeqRange{{First: 1, Last: 2}, {First: 9, Last: 9}}); n != 3 {
		t.Fatalf("covered = %d", n)
	}
}

// A collector-given delay is a floor: the shipper waits at least that long, and at most a
// fifth more, so agents told the same delay spread out without coming back early.
func TestThrottleJitter(t *testing.T) {
	d := 2 * time.Second
	var lo, hi time.Duration = time.Hour, 0
	for range 2000 {
		j := throttleJitter(d)
		if j < d || j > d+d/5 {
			t.Fatalf("jittered delay %v outside [%v, %v]", j, d, d+d/5)
		}
		lo, hi = min(lo, j), max(hi, j)
	}
	if hi-lo < d/10 {
		t.Fatalf("no real spread: %v..%v", lo, hi)
	}
	if j := throttleJitter(0); j < 0 || j > time.Millisecond {
		t.Fatalf("zero delay jittered to %v", j)
	}
}
