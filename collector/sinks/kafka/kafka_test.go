package kafka

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	wardv1 "github.com/ward-dlp/ward/api/ward/v1"
	"github.com/ward-dlp/ward/collector/sinks/core"
	"github.com/ward-dlp/ward/collector/sinks/internal/sinktest"
	"github.com/ward-dlp/ward/collector/sinks/ocsf"
)

func newCluster(t *testing.T) *kfake.Cluster {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(3), kfake.SeedTopics(3, "ward"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func consume(t *testing.T, brokers []string, n int) []*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics("ward"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	var out []*kgo.Record
	for len(out) < n {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("consumed %d records, want %d", len(out), n)
		}
		fs.EachRecord(func(r *kgo.Record) { out = append(out, r) })
	}
	return out
}

// TestProduceIdempotentAllAcksKeyed produces through a three-broker kfake cluster and checks
// the protocol the producer used (InitProducerID, acks=-1) and what a consumer reads: one
// record per representable event, keyed by agent id, one agent's records on one partition
// in order, OCSF values within the allow-list.
func TestProduceIdempotentAllAcksKeyed(t *testing.T) {
	c := newCluster(t)
	var mu sync.Mutex
	var acks []int16
	initPID := 0
	c.ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		mu.Lock()
		acks = append(acks, req.(*kmsg.ProduceRequest).Acks)
		mu.Unlock()
		return nil, nil, false
	})
	c.ControlKey(int16(kmsg.InitProducerID), func(kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		mu.Lock()
		initPID++
		mu.Unlock()
		return nil, nil, false
	})
	s, err := New(Config{Brokers: c.ListenAddrs(), Topic: "ward", Timeout: 10 * time.Second}, ocsf.Options{}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var evs []*wardv1.Event
	for seq := uint64(1); seq <= 6; seq++ {
		agent := "a1"
		if seq%2 == 0 {
			agent = "a2"
		}
		evs = append(evs, sinktest.Finding(agent, seq, wardv1.Severity_SEVERITY_HIGH))
	}
	evs = append(evs, sinktest.Health("a1", 7))
	err = s.Deliver(context.Background(), sinktest.Items(evs...))
	var be *core.BatchError
	if !errors.As(err, &be) || len(be.Failed) != 1 || !errors.Is(be.Failed[6], core.ErrSkip) {
		t.Fatalf("want only health skipped: %v", err)
	}
	recs := consume(t, c.ListenAddrs(), 6)
	partition := map[string]int32{}
	lastSeq := map[string]float64{}
	for _, r := range recs {
		var m map[string]any
		if err := json.Unmarshal(r.Value, &m); err != nil {
			t.Fatal(err)
		}
		sinktest.CheckAllowed(t, "kafka", r.Value, any(m), sinktest.OCSFAllowed)
		key := string(r.Key)
		if p, ok := partition[key]; ok && p != r.Partition {
			t.Errorf("agent %s on partitions %d and %d", key, p, r.Partition)
		}
		partition[key] = r.Partition
		seq := m["unmapped"].(map[string]any)["ward"].(map[string]any)["seq"].(float64)
		if seq <= lastSeq[key] {
			t.Errorf("agent %s out of order: %v after %v", key, seq, lastSeq[key])
		}
		lastSeq[key] = seq
		if len(r.Headers) != 2 || r.Headers[0].Key != "ward-event-id" {
			t.Errorf("headers %v", r.Headers)
		}
	}
	if len(partition) != 2 {
		t.Fatalf("keys %v, want a1 and a2", partition)
	}
	mu.Lock()
	defer mu.Unlock()
	if initPID == 0 {
		t.Error("producer never asked for a producer id: not idempotent")
	}
	for _, a := range acks {
		if a != -1 {
			t.Errorf("produce with acks=%d, want -1 (all)", a)
		}
	}
}

// TestRefusedRecordsAreDeadLettered: a broker answering MESSAGE_TOO_LARGE refuses for good.
func TestRefusedRecordsAreDeadLettered(t *testing.T) {
	c := newCluster(t)
	c.ControlKey(int16(kmsg.Produce), func(kreq kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		req := kreq.(*kmsg.ProduceRequest)
		resp := req.ResponseKind().(*kmsg.ProduceResponse)
		for _, rt := range req.Topics {
			st := kmsg.NewProduceResponseTopic()
			st.Topic, st.TopicID = rt.Topic, rt.TopicID
			for _, p := range rt.Partitions {
				sp := kmsg.NewProduceResponseTopicPartition()
				sp.Partition = p.Partition
				sp.ErrorCode = kerr.MessageTooLarge.Code
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		return resp, nil, true
	})
	s, err := New(Config{Brokers: c.ListenAddrs(), Topic: "ward", Timeout: 5 * time.Second}, ocsf.Options{}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	err = s.Deliver(context.Background(), sinktest.Items(sinktest.Finding("a1", 1, wardv1.Severity_SEVERITY_HIGH)))
	var be *core.BatchError
	if !errors.As(err, &be) {
		t.Fatalf("err %v", err)
	}
	if o, _ := core.Outcome(be.Failed[0]); o != "dead_letter" {
		t.Fatalf("outcome %s (%v)", o, be.Failed[0])
	}
}

// TestClusterDownIsRetried: with no broker reachable the batch fails as retryable once the
// delivery timeout passes, instead of hanging or being dropped.
func TestClusterDownIsRetried(t *testing.T) {
	c := newCluster(t)
	addrs := c.ListenAddrs()
	c.Close()
	s, err := New(Config{Brokers: addrs, Topic: "ward", Timeout: time.Second}, ocsf.Options{}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	start := time.Now()
	err = s.Deliver(context.Background(), sinktest.Items(sinktest.Finding("a1", 1, wardv1.Severity_SEVERITY_HIGH)))
	var be *core.BatchError
	if !errors.As(err, &be) {
		t.Fatalf("err %v", err)
	}
	if o, _ := core.Outcome(be.Failed[0]); o != "retry" {
		t.Fatalf("outcome %s (%v)", o, be.Failed[0])
	}
	if time.Since(start) > 20*time.Second {
		t.Fatalf("took %v", time.Since(start))
	}
}

func TestValidate(t *testing.T) {
	for _, c := range []Config{{}, {Brokers: []string{"k:9092"}}, {Brokers: []string{"k"}, Topic: "t"}, {Brokers: []string{"k:9092"}, Topic: "a b"}} {
		if c.Validate() == nil {
			t.Errorf("%+v accepted", c)
		}
	}
}

// TestInDoubtNotProducedTwice: a batch redelivered after an attempt whose outcome is unknown
// (the collector died after the cluster acknowledged it) is checked against the topic: what
// is already there is not produced again, what is missing is.
func TestInDoubtNotProducedTwice(t *testing.T) {
	c := newCluster(t)
	s, err := New(Config{Brokers: c.ListenAddrs(), Topic: "ward", Timeout: 10 * time.Second, Format: "json"}, ocsf.Options{}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var evs []*wardv1.Event
	for seq := uint64(1); seq <= 8; seq++ {
		evs = append(evs, sinktest.Finding(fmt.Sprintf("a%d", seq%3), seq, wardv1.Severity_SEVERITY_HIGH))
	}
	start := time.Now()
	first := sinktest.Items(evs[:5]...)
	if err := s.Deliver(context.Background(), first); err != nil {
		t.Fatal(err)
	}
	// Redelivery of all eight, in doubt since before the first attempt.
	again := sinktest.Items(evs...)
	for i := range again {
		again[i].InDoubtSince = start.Add(-time.Second)
	}
	if err := s.Deliver(context.Background(), again); err != nil {
		t.Fatal(err)
	}
	recs := consume(t, c.ListenAddrs(), 8)
	time.Sleep(300 * time.Millisecond)
	recs = append(recs, consumeMore(t, c.ListenAddrs(), len(recs))...)
	seen := map[string]int{}
	for _, r := range recs {
		for _, h := range r.Headers {
			if h.Key == headerEventID {
				seen[string(h.Value)]++
			}
		}
	}
	for _, ev := range evs {
		if seen[ev.GetId()] != 1 {
			t.Errorf("event seq %d produced %d times", ev.GetSeq(), seen[ev.GetId()])
		}
	}
}

// consumeMore reads the whole topic again and returns the records beyond the first have.
func consumeMore(t *testing.T, brokers []string, have int) []*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics("ward"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var all []*kgo.Record
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for ctx.Err() == nil {
		fs := cl.PollFetches(ctx)
		fs.EachRecord(func(r *kgo.Record) { all = append(all, r) })
	}
	if len(all) <= have {
		return nil
	}
	return all[have:]
}
