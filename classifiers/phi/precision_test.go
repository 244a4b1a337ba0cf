package phi

import (
	"fmt"
	"strings"
	"testing"

	"github.com/ward-dlp/ward/classifiers/engine"
)

// onlyAt classifies in with d alone and checks that d reports exactly the occurrences
// starting at the offsets of the substrings want (in order), and nothing else.
func onlyAt(t *testing.T, d engine.Detector, in string, want ...string) {
	t.Helper()
	e, err := engine.New(engine.Config{FingerprintKey: []byte("phi-test-key-0123456789")}, d)
	if err != nil {
		t.Fatal(err)
	}
	var offs []int64
	for _, w := range want {
		i := strings.Index(in, w)
		if i < 0 {
			t.Fatalf("bad test: %q not in %q", w, in)
		}
		offs = append(offs, int64(i))
	}
	var got []int64
	count := 0
	for _, m := range e.Classify([]byte(in)) {
		if m.Detector == d.Name() {
			got = append(got, m.Offsets...)
			count += m.Count
		}
	}
	if count != len(want) || fmt.Sprint(got) != fmt.Sprint(offs) {
		t.Errorf("%s in %q: %d occurrences at %v, want %v (%q)", d.Name(), in, count, got, offs, want)
	}
}

// TestDOBReportsOnlyTheBirthDate: a birth keyword vouches for the first date after it,
// not for a visit or order date that follows within the keyword window.
func TestDOBReportsOnlyTheBirthDate(t *testing.T) {
	for _, c := range []struct {
		in   string
		want []string
	}{
		{"DOB: 01/02/1970 Visit date: 03/04/2024", []string{"01/02/1970"}},
		{"DOB: 01/02/1970 ... Visit date: 03/04/2024", []string{"01/02/1970"}},
		{"DOB 1970-01-02; seen 2024-03-04", []string{"1970-01-02"}},
		{"Date of birth: April 12, 1985, admitted 04/12/2026", []string{"April 12, 1985"}},
		{"D.O.B 4/12/85 visit 5/1/24", []string{"4/12/85"}},
		{"DOB: 01/02/1970\nDOB: 03/04/1980", []string{"01/02/1970", "03/04/1980"}},
		{"DOB (age 54): 01/02/1970", []string{"01/02/1970"}},
		{`<birthTime value="19850412"/><effectiveTime value="20261002"/>`, []string{"19850412"}},
	} {
		onlyAt(t, NewDOB(), c.in, c.want...)
	}
}

// TestMRNIgnoresFollowingDates: the MRN keyword vouches for the identifier right after
// it, not for the year of a date of birth (or any later number) in its window.
func TestMRNIgnoresFollowingDates(t *testing.T) {
	for _, c := range []struct {
		in   string
		want []string
	}{
		{"MRN: 00482913 DOB: 01/02/1970", []string{"00482913"}},
		{"MRN 00482913, DOB 1970-01-02", []string{"00482913"}},
		{"MRN: HSR-0048812 born 1970", []string{"HSR-0048812"}},
		{"Patient ID: 4471, DOB 01/02/1970", []string{"4471"}},
		{"MRN: 01/02/1970", nil},
		{"Medical record number: 00482213", []string{"00482213"}},
	} {
		onlyAt(t, NewMRN(), c.in, c.want...)
	}
}
