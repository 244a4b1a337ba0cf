package edm

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/ward-dlp/ward/classifiers/engine"
)

const roster = "mrn,ssn,last_name,first_name,dob\n" +
	"HSR-0048812,219-45-8765,Sample,Jordan,04/12/1985\n" +
	"HSR-0051177,529 63 1184,O'Brien-Lee,Casey,1979-11-02\n" +
	"bad!mrn,12345,X,Y,notadate\n"

var key = []byte("edm-test-key-0123456789abcdef")

func build(t *testing.T) []byte {
	t.Helper()
	b, err := NewBuilder(key)
	if err != nil {
		t.Fatal(err)
	}
	st, err := BuildCSV(strings.NewReader(roster), b)
	if err != nil {
		t.Fatal(err)
	}
	if st.Rows != 3 || st.SSNs != 2 || st.MRNs != 2 || st.NameDOBs != 2 || st.Skipped != 3 {
		t.Fatalf("stats %+v", st)
	}
	var buf bytes.Buffer
	if _, err := b.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestIndexHoldsNoPlaintext looks for every roster value, in every normalised form, in the
// index bytes.
func TestIndexHoldsNoPlaintext(t *testing.T) {
	data := build(t)
	for _, v := range []string{"219458765", "219-45-8765", "8765", "529631184", "HSR-0048812", "HSR0048812", "0048812",
		"Sample", "sample", "obrienlee", "19850412", "04/12/1985", "Jordan", "Casey", "1979"} {
		if bytes.Contains(bytes.ToLower(data), bytes.ToLower([]byte(v))) {
			t.Errorf("index contains %q", v)
		}
	}
}

func TestLoadRejects(t *testing.T) {
	data := build(t)
	if _, err := Load(bytes.NewReader(data), []byte("another-key-0123456789")); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("wrong key: %v", err)
	}
	if _, err := Load(bytes.NewReader(data[:len(data)-1]), key); err == nil {
		t.Fatal("truncated index loaded")
	}
	bad := bytes.Clone(data)
	bad[len(bad)-40] ^= 1
	if _, err := Load(bytes.NewReader(bad), key); err == nil {
		t.Fatal("corrupted index loaded")
	}
	if _, err := Load(strings.NewReader("hello"), key); err == nil {
		t.Fatal("junk loaded")
	}
}

func TestDetector(t *testing.T) {
	x, err := Load(bytes.NewReader(build(t)), key)
	if err != nil {
		t.Fatal(err)
	}
	e, err := engine.New(engine.Config{FingerprintKey: []byte("fp-key-0123456789abc")}, NewDetector(x))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		in   string
		conf int
	}{
		{"upload: 219458765 ok", 95},
		{"ssn 529 63 1184", 95},
		{"chart HSR0048812 closed", 90},
		{"chart hsr-0048812 closed", 90},
		{"O'BRIEN-LEE, Casey  born 11/02/1979", 90},
		{"Jordan Sample DOB 1985-04-12", 90},
		{"Jordan Sample DOB 1985-04-13", 0},
		{"Other Person DOB 1985-04-12", 0},
		{"ssn 219-45-8766", 0},
		{"HSR-0048813", 0},
	}
	for _, c := range cases {
		ms := e.Classify([]byte(c.in))
		switch {
		case c.conf == 0 && len(ms) != 0:
			t.Errorf("%q: unexpected %+v", c.in, ms)
		case c.conf != 0 && (len(ms) != 1 || ms[0].Confidence != c.conf || ms[0].Class != engine.Part2):
			t.Errorf("%q: got %+v, want %d", c.in, ms, c.conf)
		}
		for _, m := range ms {
			for _, s := range m.Masked {
				if strings.Contains(s, "8765") && strings.Contains(s, "45") || strings.Contains(s, "0412") {
					t.Errorf("%q: sample %q shows too much", c.in, s)
				}
			}
		}
	}
}
