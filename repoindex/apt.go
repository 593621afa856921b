package repoindex

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
)

// ParseRelease parses an apt Release or InRelease file and calls fn for each
// line of its SHA256 field: the path relative to the Release file's
// directory, the size and the hash. The armour of a clear-signed InRelease is
// skipped; its signature is not checked. Lines with a malformed size or hash,
// or a path that is empty, absolute or contains "..", are skipped. It also
// returns whether "Acquire-By-Hash: yes" is set. An error from fn stops the
// parse and is returned as it is.
func ParseRelease(r io.Reader, lim Limits, fn func(path string, e Entry) error) (byHash bool, err error) {
	lim = lim.orDefault()
	rep := reporter{fn: fn, max: lim.MaxEntries, what: "release"}
	in := &decoder{r: r, what: "read index", left: lim.MaxDecompressed, max: lim.MaxDecompressed}
	lines := newScanner(in, lim.MaxField)
	var (
		field  []byte
		first  = true
		signed bool // a clear-signed InRelease
		armour bool // in its armour headers ("Hash: SHA512"), which end at an empty line
	)
	for lines.Scan() {
		line := lines.Bytes()
		switch {
		case first && string(line) == "-----BEGIN PGP SIGNED MESSAGE-----":
			first, signed, armour = false, true, true
			continue
		case armour:
			armour = len(bytes.TrimSpace(line)) > 0
			continue
		case signed && string(line) == "-----BEGIN PGP SIGNATURE-----":
			return byHash, nil
		case signed:
			line = bytes.TrimPrefix(line, []byte("- ")) // dash-escaping
		}
		first = false
		if len(line) > 0 && (line[0] == ' ' || line[0] == '\t') {
			if f := bytes.Fields(line); len(f) == 3 && bytes.EqualFold(field, []byte("SHA256")) {
				if e, ok := parseEntry(string(f[1]), string(f[0])); ok && safePath(string(f[2]), true) {
					if err := rep.report(string(f[2]), e); err != nil {
						return byHash, err
					}
				}
			}
			continue
		}
		name, value, _ := bytes.Cut(line, []byte(":"))
		field = append(field[:0], bytes.TrimSpace(name)...)
		if bytes.EqualFold(field, []byte("Acquire-By-Hash")) {
			byHash = isTrue(bytes.TrimSpace(value))
		}
	}
	if err := scanErr(lines, "release", lim.MaxField); err != nil {
		return byHash, err
	}
	if signed {
		return byHash, errors.New("release: clear-signed text without its signature (truncated?)")
	}
	return byHash, nil
}

// isTrue reads a boolean field value as apt does.
func isTrue(v []byte) bool {
	for _, s := range []string{"yes", "true", "with", "on", "enable", "1"} {
		if bytes.EqualFold(v, []byte(s)) {
			return true
		}
	}
	return false
}

// ParsePackages parses an apt Packages file, possibly compressed, and calls
// fn for each stanza that has a Filename, a Size and a SHA256: the file name
// relative to the archive root (such as pool/main/h/hello/hello_2.10-3_amd64.deb).
// Stanzas with a malformed size or hash, or a file name that is empty,
// absolute or contains "..", are skipped. An error from fn stops the parse
// and is returned as it is.
func ParsePackages(r io.Reader, lim Limits, fn func(filename string, e Entry) error) error {
	lim = lim.orDefault()
	dr, err := Decompress(r, lim)
	if err != nil {
		return fmt.Errorf("packages: %w", err)
	}
	defer dr.Close()
	rep := reporter{fn: fn, max: lim.MaxEntries, what: "packages"}
	var name, size, sum string
	end := func() error {
		e, ok := parseEntry(size, sum)
		if ok && safePath(name, true) {
			if err := rep.report(name, e); err != nil {
				return err
			}
		}
		name, size, sum = "", "", ""
		return nil
	}
	lines := newScanner(dr, lim.MaxField)
	for lines.Scan() {
		line := lines.Bytes()
		if len(bytes.TrimSpace(line)) == 0 {
			if err := end(); err != nil {
				return err
			}
			continue
		}
		if line[0] == ' ' || line[0] == '\t' {
			continue // a continuation line, of none of the three fields
		}
		key, value, _ := bytes.Cut(line, []byte(":"))
		switch key = bytes.TrimSpace(key); {
		case bytes.EqualFold(key, []byte("Filename")):
			name = string(bytes.TrimSpace(value))
		case bytes.EqualFold(key, []byte("Size")):
			size = string(bytes.TrimSpace(value))
		case bytes.EqualFold(key, []byte("SHA256")):
			sum = string(bytes.TrimSpace(value))
		}
	}
	if err := scanErr(lines, "packages", lim.MaxField); err != nil {
		return err
	}
	return end()
}

// newScanner returns a line scanner that refuses lines over max bytes.
func newScanner(r io.Reader, max int) *bufio.Scanner {
	if max < math.MaxInt {
		max++ // for the newline
	}
	s := bufio.NewScanner(r)
	s.Buffer(make([]byte, 0, min(max, 4096)), max)
	return s
}

// scanErr is the scanner's error, if any, with context.
func scanErr(s *bufio.Scanner, what string, max int) error {
	switch err := s.Err(); {
	case err == nil:
		return nil
	case errors.Is(err, bufio.ErrTooLong):
		return fmt.Errorf("%s: line over %d bytes: %w", what, max, ErrLimit)
	default:
		return fmt.Errorf("%s: %w", what, err)
	}
}
