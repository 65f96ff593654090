package gateway

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// ParseSize reads a size the way the reference system's configuration does
// (the npm "bytes" package): a number with an optional unit b, kb, mb, gb,
// tb or pb, case-insensitive, powers of 1024, decimals allowed ("1.5mb");
// a bare number is bytes.
func ParseSize(s string) (int64, error) {
	t := strings.ToLower(strings.TrimSpace(s))
	i := len(t)
	for i > 0 && t[i-1] >= 'a' && t[i-1] <= 'z' {
		i--
	}
	num, unit := strings.TrimSpace(t[:i]), t[i:]
	mult := map[string]float64{"": 1, "b": 1, "kb": 1 << 10, "mb": 1 << 20, "gb": 1 << 30, "tb": 1 << 40, "pb": 1 << 50}[unit]
	if mult == 0 {
		return 0, fmt.Errorf("size %q: unknown unit %q (use b, kb, mb, gb, tb or pb)", s, unit)
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil || f <= 0 || math.IsInf(f, 0) || math.IsNaN(f) {
		return 0, fmt.Errorf("size %q: not a positive number", s)
	}
	v := f * mult
	if v < 1 {
		return 0, fmt.Errorf("size %q: less than one byte", s)
	}
	if v > math.MaxInt64/2 {
		return 0, fmt.Errorf("size %q: too large", s)
	}
	return int64(math.Floor(v)), nil
}

// FormatSize prints n bytes with the largest unit that divides it evenly,
// as ParseSize reads it back ("100mb").
func FormatSize(n int64) string {
	for _, u := range []struct {
		name string
		size int64
	}{{"gb", 1 << 30}, {"mb", 1 << 20}, {"kb", 1 << 10}} {
		if n >= u.size && n%u.size == 0 {
			return strconv.FormatInt(n/u.size, 10) + u.name
		}
	}
	return strconv.FormatInt(n, 10) + "b"
}
