package spool

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
)

const stateFile = "state.json"

// seqRange is an inclusive range of seqs.
type seqRange [2]uint64

// persistedState is the small file that survives restarts: which records of the remaining
// segments are acked, and the highest seq ever assigned (so seqs are not reused after
// segments holding them were deleted). Ranges are per log and coalesce over the seqs of
// the other log, so in-order shipping keeps them to a handful.
type persistedState struct {
	Version   int        `json:"version"`
	MaxSeq    uint64     `json:"max_seq"`
	Findings  []seqRange `json:"findings_acked,omitempty"`
	Telemetry []seqRange `json:"telemetry_acked,omitempty"`
}

func (p *persistedState) ranges(k Log) []seqRange {
	if k == Findings {
		return p.Findings
	}
	return p.Telemetry
}

func readState(path string, log *slog.Logger) (persistedState, error) {
	var st persistedState
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return st, nil
	}
	if err != nil {
		return st, fmt.Errorf("read ack state: %w", err)
	}
	if err := json.Unmarshal(b, &st); err != nil {
		// The file is written by atomic rename, so this is disk damage; losing it only
		// means re-sending acked events, which the collector dedupes.
		log.Warn("spool: ack state unreadable, acked events may be sent again", "err", err)
		return persistedState{}, nil
	}
	return st, nil
}

// applyAcks marks the entries of sg covered by the sorted ranges as acked.
func applyAcks(sg *segment, ranges []seqRange) {
	r := 0
	for i := range sg.entries {
		e := &sg.entries[i]
		for r < len(ranges) && ranges[r][1] < e.seq {
			r++
		}
		if r == len(ranges) {
			return
		}
		if ranges[r][0] <= e.seq && e.state != stateAcked {
			e.state = stateAcked
			sg.acked++
		}
	}
}

// ackedRanges lists runs of consecutive acked entries of a log as seq ranges.
func ackedRanges(l *plog) []seqRange {
	var out []seqRange
	open := false
	for _, sg := range l.segs {
		if sg.acked == 0 {
			open = false
			continue
		}
		if sg.acked == len(sg.entries) {
			if open {
				out[len(out)-1][1] = sg.last()
			} else {
				out = append(out, seqRange{sg.entries[0].seq, sg.last()})
				open = true
			}
			continue
		}
		for _, e := range sg.entries {
			switch {
			case e.state != stateAcked:
				open = false
			case open:
				out[len(out)-1][1] = e.seq
			default:
				out = append(out, seqRange{e.seq, e.seq})
				open = true
			}
		}
	}
	return out
}

// persistStateLocked writes state.json by write-fsync-rename-fsync(dir).
func (s *Spool) persistStateLocked() error {
	st := persistedState{
		Version:   1,
		MaxSeq:    s.nextSeq - 1,
		Findings:  ackedRanges(s.logs[Findings]),
		Telemetry: ackedRanges(s.logs[Telemetry]),
	}
	b, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("spool: marshal ack state: %w", err)
	}
	if err := writeFileAtomic(s.dir, stateFile, b); err != nil {
		s.log.Error("spool: cannot persist ack state", "err", err)
		return fmt.Errorf("spool: persist ack state: %w", err)
	}
	s.dirty = false
	return nil
}

func writeFileAtomic(dir, name string, b []byte) error {
	tmp := filepath.Join(dir, name+".tmp")
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		return err
	}
	return syncDir(dir)
}
