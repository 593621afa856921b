package repoindex

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestParsePacmanDB(t *testing.T) {
	members, want := pacmanSample()
	db := buildTar(t, members)
	for _, format := range formats {
		t.Run(format, func(t *testing.T) {
			c, ok := compress(t, format, db)
			if !ok {
				t.Skipf("cannot write %s here", format)
			}
			got := map[string]Entry{}
			if err := ParsePacmanDB(bytes.NewReader(c), Limits{}, collect(got)); err != nil {
				t.Fatal(err)
			}
			if !maps.Equal(got, want) {
				t.Fatalf("got %v\nwant %v", got, want)
			}
		})
	}
}

func TestParsePacmanDBErrors(t *testing.T) {
	members, want := pacmanSample()
	db := buildTar(t, members)
	gz, _ := compress(t, "gzip", db)
	wantRefused(t, ParsePacmanDB, []badInput{
		{"not a tar", []byte("%FILENAME%\nhello-1-1-any.pkg.tar.zst\n"), Limits{}, nil, nil},
		{"truncated tar", db[:len(db)/2], Limits{}, nil, nil},
		{"truncated gzip", gz[:len(gz)-20], Limits{}, nil, nil},
		{"too many entries", db, Limits{MaxEntries: len(want) - 1}, nil, ErrLimit},
		{"desc over MaxField", db, Limits{MaxField: 400}, nil, ErrLimit},
		{"over MaxDecompressed", gz, Limits{MaxDecompressed: int64(len(db) / 2)}, nil, ErrLimit},
		{"callback error", gz, Limits{}, stopParse, errStop},
	})
	// The file list members of a .files database may be far larger than
	// MaxField: they are not read.
	n := 0
	count := func(string, Entry) error { n++; return nil }
	if err := ParsePacmanDB(bytes.NewReader(db), Limits{MaxField: 4096}, count); err != nil || n != len(want) {
		t.Errorf("MaxField 4096: %d entries, %v", n, err)
	}
	// An empty archive is an empty database.
	if err := ParsePacmanDB(bytes.NewReader(buildTar(t, nil)), Limits{}, count); err != nil {
		t.Errorf("empty database: %v", err)
	}
}

// A database that repo-add made, in each compression it supports, and the
// .files database beside it.
func TestParsePacmanDBRepoAdd(t *testing.T) {
	skipWithout(t, "repo-add", "bsdtar")
	dir := t.TempDir()
	want := map[string]Entry{}
	var files []string
	for i, name := range []string{"alpha", "beta", "gamma-with-dashes"} {
		pkg := fmt.Sprintf("%s-1:%d.0-1-x86_64.pkg.tar.gz", name, i)
		data := pacmanPackage(t, name, fmt.Sprintf("1:%d.0-1", i))
		must(t, os.WriteFile(filepath.Join(dir, pkg), data, 0o644))
		want[pkg] = Entry{Size: int64(len(data)), SHA256: sha256.Sum256(data)}
		files = append(files, pkg)
	}
	for _, ext := range []string{"tar.gz", "tar.zst", "tar.xz", "tar.bz2", "tar"} {
		t.Run(ext, func(t *testing.T) {
			if tool := map[string]string{"tar.zst": "zstd", "tar.xz": "xz", "tar.bz2": "bzip2"}[ext]; tool != "" {
				if _, err := exec.LookPath(tool); err != nil {
					t.Skipf("repo-add needs %s for .db.%s", tool, ext)
				}
			}
			repo := filepath.Join(dir, strings.ReplaceAll(ext, ".", "-"))
			must(t, os.Mkdir(repo, 0o755))
			cmd := exec.Command("repo-add", append([]string{"--quiet", "--nocolor", filepath.Join(repo, "test.db."+ext)}, files...)...)
			cmd.Dir = dir
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("repo-add: %v\n%s", err, out)
			}
			for _, db := range []string{"test.db." + ext, "test.files." + ext} {
				data, err := os.ReadFile(filepath.Join(repo, db))
				must(t, err)
				got := map[string]Entry{}
				if err := ParsePacmanDB(bytes.NewReader(data), Limits{}, collect(got)); err != nil {
					t.Fatalf("%s: %v", db, err)
				}
				if !maps.Equal(got, want) {
					t.Fatalf("%s: got %v\nwant %v", db, got, want)
				}
			}
		})
	}
}

// pacmanPackage is a package file, a gzipped tar with a .PKGINFO, that
// repo-add accepts.
func pacmanPackage(t *testing.T, name, version string) []byte {
	pkginfo := fmt.Sprintf("pkgname = %s\npkgbase = %[1]s\npkgver = %s\npkgdesc = a test package\nbuilddate = 1700000000\npackager = Test <test@example.org>\nsize = 1024\narch = x86_64\nlicense = MIT\ndepend = glibc\n", name, version)
	tarball := buildTar(t, map[string]string{".PKGINFO": pkginfo, "usr/share/" + name + "/data": strings.Repeat(name, 300)})
	gz, _ := compress(t, "gzip", tarball)
	return gz
}
