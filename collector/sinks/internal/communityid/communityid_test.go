package communityid

import (
	"net/netip"
	"testing"
)

// The spec's published vectors (community-id-spec baseline, also in Zeek's and Vector's
// test suites), both directions of each flow.
func TestPublishedVectors(t *testing.T) {
	a, b := netip.MustParseAddrPort("1.2.3.4:1122"), netip.MustParseAddrPort("5.6.7.8:3344")
	for _, c := range []struct {
		seed  uint16
		proto uint8
		want  string
	}{
		{0, TCP, "1:wCb3OG7yAFWelaUydu0D+125CLM="},
		{0, UDP, "1:0Mu9InQx6z4ZiCZM/7HXi2WMhOg="},
		{1, TCP, "1:HhA1B+6CoLbiKPEs5nhNYN4XWfk="},
		{1, UDP, "1:OShq+iKDAMVouh/4bMxB9Sz4amw="},
	} {
		for _, pair := range [][2]netip.AddrPort{{a, b}, {b, a}} {
			got, err := V1(c.seed, pair[0], pair[1], c.proto)
			if err != nil || got != c.want {
				t.Errorf("V1(%d, %v, %v, %d) = %q, %v; want %q", c.seed, pair[0], pair[1], c.proto, got, err, c.want)
			}
		}
	}
}

// Ordering ties on the address fall to the port; v4-mapped v6 addresses hash as IPv4.
func TestOrderingAndMapped(t *testing.T) {
	x := netip.MustParseAddrPort("10.0.0.1:443")
	y := netip.MustParseAddrPort("10.0.0.1:50000")
	if p, q := must(V1(0, x, y, TCP)), must(V1(0, y, x, TCP)); p != q {
		t.Errorf("same address, swapped ports: %s vs %s", p, q)
	}
	m := netip.AddrPortFrom(netip.MustParseAddr("::ffff:1.2.3.4"), 1122)
	if got := must(V1(0, m, netip.MustParseAddrPort("5.6.7.8:3344"), TCP)); got != "1:wCb3OG7yAFWelaUydu0D+125CLM=" {
		t.Errorf("v4-mapped: %s", got)
	}
	if _, err := V1(0, x, netip.MustParseAddrPort("[::1]:80"), TCP); err == nil {
		t.Error("mixed families hashed")
	}
	if _, err := V1(0, x, y, 1); err == nil {
		t.Error("ICMP hashed as a port protocol")
	}
}

func must(s string, err error) string {
	if err != nil {
		panic(err)
	}
	return s
}
