package repoindex

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fuzzLimits are small, so that a fuzzed input can reach them.
var fuzzLimits = Limits{MaxDecompressed: 1 << 20, MaxEntries: 20, MaxField: 2048}

// addCompressed adds data as a seed in every format, and truncated.
func addCompressed(f *testing.F, data []byte) {
	f.Add(data)
	addOnlyCompressed(f, data)
}

func addOnlyCompressed(f *testing.F, data []byte) {
	for _, format := range formats[1:] {
		if c, ok := compress(f, format, data); ok {
			f.Add(c)
			f.Add(c[:len(c)*2/3])
		}
	}
}

// checker returns a callback that checks what a parser reports, and a
// function that checks how many entries were reported.
func checker(t *testing.T, slashes bool) (fn func(string, Entry) error, done func()) {
	n := 0
	fn = func(name string, e Entry) error {
		n++
		if name == "" || strings.Contains(name, "..") || name[0] == '/' || !slashes && strings.Contains(name, "/") || e.Size < 0 {
			t.Fatalf("reported %q %+v", name, e)
		}
		return nil
	}
	return fn, func() {
		if n > fuzzLimits.MaxEntries {
			t.Fatalf("%d entries reported, over MaxEntries %d", n, fuzzLimits.MaxEntries)
		}
	}
}

func FuzzDecompress(f *testing.F) {
	addCompressed(f, textSample(5000))
	addOnlyCompressed(f, make([]byte, 2<<20)) // bombs, over fuzzLimits
	f.Add(xzFile(xzCheckSHA256, 20, []byte("hello"), []byte("world")))
	f.Add(xzFile(xzCheckCRC64, 40, []byte("huge dictionary")))
	f.Add([]byte{0x28, 0xb5, 0x2f, 0xfd, 0x00, 0x88, 0x09, 0x00, 0x00, 'x'})
	if c, err := os.ReadFile("testdata/lines.bz2"); err == nil {
		f.Add(c)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		rc, err := Decompress(bytes.NewReader(data), fuzzLimits)
		if err != nil {
			return
		}
		defer rc.Close()
		got, err := io.ReadAll(rc)
		if int64(len(got)) > fuzzLimits.MaxDecompressed {
			t.Fatalf("%d bytes decompressed, over MaxDecompressed", len(got))
		}
		if isCompressed(data) {
			return
		}
		// Plain input passes through unchanged, up to the limit.
		over := int64(len(data)) > fuzzLimits.MaxDecompressed
		if !bytes.HasPrefix(data, got) || over != errors.Is(err, ErrLimit) || !over && (err != nil || len(got) != len(data)) {
			t.Fatalf("plain input of %d bytes: %d bytes back, %v", len(data), len(got), err)
		}
	})
}

// isCompressed reports whether Decompress takes data for compressed.
func isCompressed(data []byte) bool {
	for _, m := range [][]byte{zstdMagic, gzipMagic, xzMagic, bzip2Magic} {
		if bytes.HasPrefix(data, m) {
			return true
		}
	}
	return zstdSkippable(data)
}

func FuzzParsePacmanDB(f *testing.F) {
	members, _ := pacmanSample()
	members["hello-2.12.1-2/files"] = "%FILES%\nusr/\nusr/bin/\nusr/bin/hello\n"
	addCompressed(f, buildTar(f, members))
	members["big-1-1/desc"] = desc("big", "1-1", "big-1-1-any.pkg.tar.zst", "1", hexSum("big")) + strings.Repeat("%X%\nfiller\n\n", 300)
	addCompressed(f, buildTar(f, members))
	f.Fuzz(func(t *testing.T, data []byte) {
		fn, done := checker(t, false)
		_ = ParsePacmanDB(bytes.NewReader(data), fuzzLimits, fn)
		done()
	})
}

func FuzzParseRelease(f *testing.F) {
	f.Add([]byte(inRelease))
	f.Add([]byte(release()))
	f.Add([]byte(inRelease[:len(inRelease)/2]))
	f.Add([]byte(strings.Replace(release(), "Debian 12.7 Released", strings.Repeat("long ", 1000), 1)))
	f.Fuzz(func(t *testing.T, data []byte) {
		fn, done := checker(t, true)
		_, _ = ParseRelease(bytes.NewReader(data), fuzzLimits, fn)
		done()
	})
}

func FuzzParsePackages(f *testing.F) {
	text, _ := packagesSample()
	addCompressed(f, []byte(text))
	addCompressed(f, []byte(strings.Replace(text, "example package", strings.Repeat("long ", 1000), 1)))
	f.Fuzz(func(t *testing.T, data []byte) {
		fn, done := checker(t, true)
		_ = ParsePackages(bytes.NewReader(data), fuzzLimits, fn)
		done()
	})
}

func FuzzParseRepomd(f *testing.F) {
	text, _ := repomdSample()
	f.Add([]byte(text))
	f.Add([]byte(text[:len(text)/2]))
	f.Add([]byte(strings.Replace(text, "<revision>", "<revision>"+strings.Repeat("long ", 1000), 1)))
	if b, err := os.ReadFile("testdata/createrepo/repodata/repomd.xml"); err == nil {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		fn, done := checker(t, true)
		_ = ParseRepomd(bytes.NewReader(data), fuzzLimits, fn)
		done()
	})
}

func FuzzParsePrimary(f *testing.F) {
	text, _ := primarySample()
	addCompressed(f, []byte(text))
	addCompressed(f, []byte(strings.Replace(text, "friendly greeting.", strings.Repeat("long ", 1000), 1)))
	f.Add([]byte("<metadata>" + strings.Repeat("<a>", 100)))
	if files, err := filepath.Glob("testdata/createrepo/repodata/*-primary.xml.gz"); err == nil && len(files) == 1 {
		if b, err := os.ReadFile(files[0]); err == nil {
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		fn, done := checker(t, true)
		_ = ParsePrimary(bytes.NewReader(data), fuzzLimits, fn)
		done()
	})
}
