package testmirror

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"fmt"
	"slices"
)

// PacmanDB builds a pacman sync database (a gzip-compressed tar, as
// repo-add writes) listing files (name relative to the database's
// directory → content) with their sizes and SHA-256.
func PacmanDB(files map[string][]byte) []byte {
	var raw bytes.Buffer
	tw := tar.NewWriter(&raw)
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	slices.Sort(names)
	for i, name := range names {
		desc := fmt.Sprintf("%%FILENAME%%\n%s\n\n%%NAME%%\npkg%d\n\n%%CSIZE%%\n%d\n\n%%SHA256SUM%%\n%x\n\n",
			name, i, len(files[name]), sha256.Sum256(files[name]))
		// Writes to a bytes.Buffer do not fail.
		_ = tw.WriteHeader(&tar.Header{Name: fmt.Sprintf("pkg%d-1.0-1/desc", i), Mode: 0o644, Size: int64(len(desc))})
		_, _ = tw.Write([]byte(desc))
	}
	_ = tw.Close()
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	_, _ = zw.Write(raw.Bytes())
	_ = zw.Close()
	return gz.Bytes()
}
