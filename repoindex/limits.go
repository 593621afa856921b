package repoindex

import (
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Entry is what an index says of one file.
type Entry struct {
	Size   int64
	SHA256 [32]byte
}

// Limits bound what a parser accepts; exceeding one is an error wrapping
// ErrLimit. A field that is zero or negative takes its value from
// DefaultLimits.
type Limits struct {
	MaxDecompressed int64 // bytes of decompressed input, default 512 MiB
	MaxEntries      int   // entries reported, default 1,000,000
	MaxField        int   // bytes of one field, line or tar member of interest, default 64 KiB
}

// DefaultLimits are the limits used for fields of Limits left at zero.
var DefaultLimits = Limits{
	MaxDecompressed: 512 << 20,
	MaxEntries:      1_000_000,
	MaxField:        64 << 10,
}

// ErrLimit is wrapped by every error that comes from exceeding a limit.
var ErrLimit = errors.New("index exceeds a limit")

// orDefault returns l with its unset fields taken from DefaultLimits.
func (l Limits) orDefault() Limits {
	if l.MaxDecompressed <= 0 {
		l.MaxDecompressed = DefaultLimits.MaxDecompressed
	}
	if l.MaxEntries <= 0 {
		l.MaxEntries = DefaultLimits.MaxEntries
	}
	if l.MaxField <= 0 {
		l.MaxField = DefaultLimits.MaxField
	}
	return l
}

// reporter passes entries to a parser's callback, at most max of them.
type reporter struct {
	fn     func(string, Entry) error
	n, max int
	what   string // context for errors
}

func (r *reporter) report(name string, e Entry) error {
	if r.n++; r.n > r.max {
		return fmt.Errorf("%s: more than %d entries: %w", r.what, r.max, ErrLimit)
	}
	return r.fn(name, e)
}

// safePath reports whether p is non-empty, relative, free of "..", control
// characters and backslashes, and, unless slashes is set, of slashes.
func safePath(p string, slashes bool) bool {
	if p == "" || p[0] == '/' || strings.Contains(p, "..") {
		return false
	}
	for i := 0; i < len(p); i++ {
		if c := p[i]; c < 0x20 || c == 0x7f || c == '\\' || (c == '/' && !slashes) {
			return false
		}
	}
	return true
}

// parseEntry parses a decimal size and a hex SHA-256.
func parseEntry(size, sum string) (Entry, bool) {
	var e Entry
	if size == "" || len(sum) != 2*len(e.SHA256) {
		return e, false
	}
	for i := 0; i < len(size); i++ {
		if size[i] < '0' || size[i] > '9' {
			return e, false
		}
	}
	n, err := strconv.ParseInt(size, 10, 64)
	if err != nil {
		return e, false
	}
	if _, err := hex.Decode(e.SHA256[:], []byte(sum)); err != nil {
		return e, false
	}
	e.Size = n
	return e, true
}
