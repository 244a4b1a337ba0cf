package fingerprint

import (
	"encoding/hex"
	"fmt"
	"sync"

	"github.com/ward-dlp/ward/classifiers/engine"
)

// Detector reports content that shares at least MinOverlap of some indexed Part 2
// document's fingerprints: a partial copy of a document found labelled at rest, with or
// without its labels. It runs on every content (engine.Interest.Always), so it is only
// added when an index is loaded.
//
// In an engine.Stream each window is judged on its own, so a copy spread over several
// windows is found when one window holds MinOverlap of the document (Classify on whole
// content, as the agent does per file, has no such limit).
type Detector struct {
	x          *Index
	minOverlap float64
	bufs       sync.Pool
}

// DetectorName is the detector id.
const DetectorName = "fingerprint.part2-document"

// DefaultMinOverlap is the share of a document's fingerprints that makes a copy.
const DefaultMinOverlap = 0.30

// NewDetector returns the detector over x; minOverlap in (0, 1] (0 means the default).
func NewDetector(x *Index, minOverlap float64) (*Detector, error) {
	if minOverlap == 0 {
		minOverlap = DefaultMinOverlap
	}
	if minOverlap <= 0 || minOverlap > 1 || x == nil {
		return nil, fmt.Errorf("fingerprint: detector needs an index and an overlap in (0, 1], got %v", minOverlap)
	}
	d := &Detector{x: x, minOverlap: minOverlap}
	d.bufs.New = func() any { return &buffers{pos: make([]int32, 0, 1024)} }
	return d, nil
}

type buffers struct {
	norm   []byte
	pos    []int32
	prints []Print
}

// Name implements engine.Detector.
func (*Detector) Name() string { return DetectorName }

// Interest implements engine.Detector.
func (*Detector) Interest() engine.Interest { return engine.Interest{Always: true} }

// Detect implements engine.Detector.
func (d *Detector) Detect(s *engine.Scan, r *engine.Reporter) {
	bf := d.bufs.Get().(*buffers)
	defer func() {
		if cap(bf.norm) <= 4<<20 {
			d.bufs.Put(bf)
		}
	}()
	bf.norm, bf.pos = Normalise(bf.norm[:0], bf.pos[:0], s.Content)
	bf.prints = d.x.h.Winnow(bf.prints[:0], bf.norm)
	for _, o := range d.x.Match(bf.prints, d.minOverlap) {
		doc := d.x.docs[o.Doc]
		id := hex.EncodeToString(doc.ID[:8])
		conf := 80
		if o.Frac >= 0.6 {
			conf = 90
		}
		off := -1
		if o.First < len(bf.pos) {
			off = int(bf.pos[o.First])
		}
		r.Label(engine.Part2, conf, off, "fpdoc:"+id, "fingerprint-doc|"+hex.EncodeToString(doc.ID[:]),
			fmt.Sprintf("shares %d%% of the winnowed fingerprints (%d of %d) of indexed Part 2 document %s",
				int(o.Frac*100), o.Shared, len(doc.Values), id))
	}
}
