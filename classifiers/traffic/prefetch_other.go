//go:build !amd64

package traffic

// prefetch is a no-op where no assembly stub exists; see prefetch_amd64.go.
func prefetch(p *byte) {}
