package repoindex

import (
	"archive/tar"
	"fmt"
	"io"
	"path"
	"slices"
	"strings"
)

// ParsePacmanDB reads a pacman sync database (a tar archive, possibly
// compressed, of <name>-<version>/desc files) and calls fn for each package
// with its %FILENAME%, %CSIZE% and %SHA256SUM%. Packages lacking any of the
// three, with a malformed size or hash, or with a file name that is empty or
// contains "/" or "..", are skipped. A desc file over lim.MaxField bytes is
// an error. An error from fn stops the parse and is returned as it is.
func ParsePacmanDB(r io.Reader, lim Limits, fn func(filename string, e Entry) error) error {
	lim = lim.orDefault()
	dr, err := Decompress(r, lim)
	if err != nil {
		return fmt.Errorf("pacman db: %w", err)
	}
	defer dr.Close()
	rep := reporter{fn: fn, max: lim.MaxEntries, what: "pacman db"}
	tr := tar.NewReader(dr)
	var buf []byte
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("pacman db: %w", err)
		}
		// Other members (such as the file lists of a .files database) are
		// skipped by tr.Next without being held in memory.
		if h.Typeflag != tar.TypeReg || path.Base(h.Name) != "desc" {
			continue
		}
		if h.Size > int64(lim.MaxField) {
			return fmt.Errorf("pacman db: %s is %d bytes, over %d: %w", h.Name, h.Size, lim.MaxField, ErrLimit)
		}
		buf = slices.Grow(buf[:0], int(h.Size))[:h.Size]
		if _, err := io.ReadFull(tr, buf); err != nil {
			return fmt.Errorf("pacman db: read %s: %w", h.Name, err)
		}
		name, e, ok := parseDesc(string(buf))
		if !ok {
			continue
		}
		if err := rep.report(name, e); err != nil {
			return err
		}
	}
}

// parseDesc finds the file name, size and SHA-256 in a desc file: sections of
// a "%NAME%" line followed by value lines, ended by an empty line.
func parseDesc(desc string) (string, Entry, bool) {
	var section, name, size, sum string
	for line := range strings.Lines(desc) {
		line = strings.TrimSuffix(line, "\n")
		switch {
		case line == "":
			section = ""
		case section == "":
			section = line
		default:
			switch section {
			case "%FILENAME%":
				name = line
			case "%CSIZE%":
				size = line
			case "%SHA256SUM%":
				sum = line
			}
			section = "-" // only the first value line counts
		}
	}
	e, ok := parseEntry(size, sum)
	return name, e, ok && safePath(name, false)
}
