package mirrorsim

import (
	"fmt"
	"math"
	"strings"

	"github.com/dustin/go-humanize"
)

// Geometric returns n rates from lo to hi in bytes per second, each the
// previous times the same factor.
func Geometric(n int, lo, hi int64) []int64 {
	out := make([]int64, n)
	for i := range out {
		if n == 1 {
			out[i] = hi
			continue
		}
		out[i] = int64(math.Round(float64(lo) * math.Pow(float64(hi)/float64(lo), float64(i)/float64(n-1))))
	}
	return out
}

// ParseSpeeds reads the rates of n mirrors: "geometric:LO-HI" (such as
// "geometric:512KiB-32MiB"), or a comma-separated list of sizes per second
// ("unlimited" or "0" for no cap) that is repeated to make n.
func ParseSpeeds(spec string, n int) ([]int64, error) {
	if n < 1 {
		return nil, fmt.Errorf("need at least one mirror, got %d", n)
	}
	if r, ok := strings.CutPrefix(spec, "geometric:"); ok {
		a, b, ok := strings.Cut(r, "-")
		if !ok {
			return nil, fmt.Errorf("speeds %q: want geometric:LO-HI", spec)
		}
		lo, err := ParseSize(a)
		if err != nil {
			return nil, err
		}
		hi, err := ParseSize(b)
		if err != nil {
			return nil, err
		}
		if lo <= 0 || hi < lo {
			return nil, fmt.Errorf("speeds %q: want 0 < LO <= HI", spec)
		}
		return Geometric(n, lo, hi), nil
	}
	var list []int64
	for _, f := range strings.Split(spec, ",") {
		f = strings.TrimSpace(f)
		if f == "unlimited" {
			list = append(list, 0)
			continue
		}
		v, err := ParseSize(f)
		if err != nil {
			return nil, err
		}
		list = append(list, v)
	}
	out := make([]int64, n)
	for i := range out {
		out[i] = list[i%len(list)]
	}
	return out, nil
}

// ParseSize reads a size such as 512KiB, 1.5MiB or 2000000; a trailing
// "/s" is allowed.
func ParseSize(s string) (int64, error) {
	v, err := humanize.ParseBytes(strings.TrimSuffix(strings.TrimSpace(s), "/s"))
	if err != nil {
		return 0, fmt.Errorf("size %q: %w", s, err)
	}
	return int64(v), nil
}

// FormatRate writes bytes per second in MiB/s.
func FormatRate(bps int64) string {
	if bps <= 0 {
		return "unlimited"
	}
	return fmt.Sprintf("%.2f MiB/s", float64(bps)/(1<<20))
}
