package phi

func lowerByte(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// digitsBefore counts the ASCII digits immediately before b[end].
func digitsBefore(b []byte, end int) int {
	n := 0
	for end-n > 0 && isDigit(b[end-n-1]) {
		n++
	}
	return n
}

// luhnOK checks the Luhn mod-10 digit of s (ASCII digits), with prefix digits prepended.
func luhnOK(prefix, s string) bool {
	all := prefix + s
	sum, dbl := 0, false
	for i := len(all) - 1; i >= 0; i-- {
		d := int(all[i] - '0')
		if dbl {
			d *= 2
			if d > 9 {
				d -= 9
			}
		}
		sum += d
		dbl = !dbl
	}
	return sum%10 == 0
}

// repeated reports whether s is one character repeated (placeholder values).
func repeated(s []byte) bool {
	for _, c := range s[1:] {
		if c != s[0] {
			return false
		}
	}
	return true
}
