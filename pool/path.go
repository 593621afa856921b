package pool

import (
	"errors"
	"net/url"
	"strings"
)

// MaxPathLength bounds the length of a request path, in bytes as received.
const MaxPathLength = 4096

// Path errors; each means the request is rejected, never sent upstream.
var (
	ErrPathTooLong = errors.New("request path too long")
	ErrBadPath     = errors.New("request path not allowed")
)

// CleanPath checks a request's escaped path and returns it relative to the
// mirror base (no leading slash), or an error wrapping ErrBadPath or
// ErrPathTooLong. It rejects rather than repairs anything that could climb
// out of the base or be read differently by a mirror: dot segments, encoded
// slashes and backslashes, control characters and malformed escapes.
// Repeated slashes are folded into one.
func CleanPath(escaped string) (string, error) {
	if len(escaped) > MaxPathLength {
		return "", ErrPathTooLong
	}
	if !strings.HasPrefix(escaped, "/") {
		return "", badPath("must start with /")
	}
	lower := strings.ToLower(escaped)
	for _, enc := range []string{"%2f", "%5c", "%00"} {
		if strings.Contains(lower, enc) {
			return "", badPath("encoded slash, backslash or NUL")
		}
	}
	decoded, err := url.PathUnescape(escaped)
	if err != nil {
		return "", badPath("malformed escape")
	}
	for _, c := range []byte(decoded) {
		if c < 0x20 || c == 0x7f || c == '\\' {
			return "", badPath("control character or backslash")
		}
	}
	segments := strings.Split(decoded, "/")
	kept := segments[:0]
	for i, s := range segments {
		switch s {
		case ".", "..":
			return "", badPath("dot segment")
		case "":
			if i == len(segments)-1 && len(kept) > 0 {
				kept = append(kept, s) // keep a trailing slash
			}
			continue
		}
		kept = append(kept, s)
	}
	return strings.Join(kept, "/"), nil
}

func badPath(why string) error {
	return &pathError{why}
}

type pathError struct{ why string }

func (e *pathError) Error() string { return ErrBadPath.Error() + ": " + e.why }
func (e *pathError) Unwrap() error { return ErrBadPath }
