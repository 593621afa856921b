package repoindex

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// release is inRelease without its signature: a Release file.
func release() string {
	body := strings.SplitN(inRelease, "\n\n", 2)[1]
	return body[:strings.Index(body, "-----BEGIN PGP SIGNATURE-----")]
}

func TestParseRelease(t *testing.T) {
	want := inReleaseWant()
	for _, tc := range []struct {
		name, text string
		byHash     bool
	}{
		{"InRelease", inRelease, true},
		{"Release", release(), true},
		{"CRLF", strings.ReplaceAll(release(), "\n", "\r\n"), true},
		{"dash-escaped", strings.Replace(inRelease, "\nSHA256:", "\n- SHA256:", 1), true},
		{"no by-hash", strings.Replace(release(), "Acquire-By-Hash: yes", "Acquire-By-Hash: no", 1), false},
		{"by-hash true", strings.Replace(release(), "Acquire-By-Hash: yes", "acquire-by-hash:True", 1), true},
		{"by-hash absent", strings.Replace(release(), "Acquire-By-Hash: yes\n", "", 1), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := map[string]Entry{}
			byHash, err := ParseRelease(strings.NewReader(tc.text), Limits{}, collect(got))
			if err != nil {
				t.Fatal(err)
			}
			if byHash != tc.byHash {
				t.Errorf("byHash %v, want %v", byHash, tc.byHash)
			}
			if !maps.Equal(got, want) {
				t.Errorf("got %v\nwant %v", got, want)
			}
		})
	}
}

func TestParseReleaseErrors(t *testing.T) {
	n := len(inReleaseWant())
	wantRefused(t, func(r io.Reader, lim Limits, fn func(string, Entry) error) error {
		_, err := ParseRelease(r, lim, fn)
		return err
	}, []badInput{
		{"signature missing", []byte(inRelease[:strings.Index(inRelease, "-----BEGIN PGP SIGNATURE-----")]), Limits{}, nil, nil},
		{"too many entries", []byte(inRelease), Limits{MaxEntries: n - 1}, nil, ErrLimit},
		{"long line", []byte(strings.Replace(release(), "Debian 12.7 Released", strings.Repeat("long ", 1000), 1)), Limits{MaxField: 4096}, nil, ErrLimit},
		{"over MaxDecompressed", []byte(inRelease), Limits{MaxDecompressed: 1000}, nil, ErrLimit},
		{"callback error", []byte(inRelease), Limits{}, stopParse, errStop},
	})
	// Exactly at the limits is fine.
	lim := Limits{MaxEntries: n, MaxDecompressed: int64(len(inRelease)), MaxField: 200}
	if _, err := ParseRelease(strings.NewReader(inRelease), lim, collect(map[string]Entry{})); err != nil {
		t.Errorf("at the limits: %v", err)
	}
}

func TestParsePackages(t *testing.T) {
	text, want := packagesSample()
	for _, format := range formats {
		t.Run(format, func(t *testing.T) {
			c, ok := compress(t, format, []byte(text))
			if !ok {
				t.Skipf("cannot write %s here", format)
			}
			got := map[string]Entry{}
			huge := Limits{MaxDecompressed: math.MaxInt64, MaxEntries: math.MaxInt, MaxField: math.MaxInt}
			if err := ParsePackages(bytes.NewReader(c), huge, collect(got)); err != nil {
				t.Fatal(err)
			}
			if !maps.Equal(got, want) {
				t.Fatalf("got %v\nwant %v", got, want)
			}
		})
	}
}

func TestParsePackagesErrors(t *testing.T) {
	text, want := packagesSample()
	zst, _ := compress(t, "zstd", []byte(text))
	wantRefused(t, ParsePackages, []badInput{
		{"truncated zstd", zst[:len(zst)-5], Limits{}, nil, nil},
		{"too many entries", zst, Limits{MaxEntries: len(want) - 1}, nil, ErrLimit},
		{"long line", []byte(strings.Replace(text, "example package", strings.Repeat("long ", 1000), 1)), Limits{MaxField: 4096}, nil, ErrLimit},
		{"long line, no newline", []byte(text + strings.Repeat("x", 5000)), Limits{MaxField: 4096}, nil, ErrLimit},
		{"over MaxDecompressed", zst, Limits{MaxDecompressed: int64(len(text) - 1)}, nil, ErrLimit},
		{"callback error", zst, Limits{}, stopParse, errStop},
	})
}

// Packages and Release files that apt-ftparchive made from .debs that
// dpkg-deb built.
func TestParseAptFTPArchive(t *testing.T) {
	skipWithout(t, "apt-ftparchive", "dpkg-deb")
	repo := t.TempDir()
	want := map[string]Entry{}
	for _, name := range []string{"alpha", "beta"} {
		root := filepath.Join(t.TempDir(), name)
		must(t, os.MkdirAll(filepath.Join(root, "DEBIAN"), 0o755))
		control := fmt.Sprintf("Package: %s\nVersion: 1.0-1\nArchitecture: all\nMaintainer: Test <test@example.org>\nDescription: a test package\n A longer description,\n .\n over lines.\n", name)
		must(t, os.WriteFile(filepath.Join(root, "DEBIAN", "control"), []byte(control), 0o644))
		deb := filepath.Join("pool", "main", name[:1], name, name+"_1.0-1_all.deb")
		must(t, os.MkdirAll(filepath.Join(repo, filepath.Dir(deb)), 0o755))
		run(t, repo, "dpkg-deb", "--root-owner-group", "-Zgzip", "--build", root, deb)
		data, err := os.ReadFile(filepath.Join(repo, deb))
		must(t, err)
		want[deb] = Entry{Size: int64(len(data)), SHA256: sha256.Sum256(data)}
	}
	packages := run(t, repo, "apt-ftparchive", "packages", "pool")
	got := map[string]Entry{}
	if err := ParsePackages(bytes.NewReader(packages), Limits{}, collect(got)); err != nil || !maps.Equal(got, want) {
		t.Fatalf("Packages: got %v, %v\nwant %v\n%s", got, err, want, packages)
	}

	index := filepath.Join(repo, "dists", "stable", "main", "binary-amd64")
	must(t, os.MkdirAll(index, 0o755))
	must(t, os.WriteFile(filepath.Join(index, "Packages"), packages, 0o644))
	xzPackages, _ := compress(t, "xz", packages)
	must(t, os.WriteFile(filepath.Join(index, "Packages.xz"), xzPackages, 0o644))
	rel := run(t, filepath.Join(repo, "dists", "stable"), "apt-ftparchive",
		"-o", "APT::FTPArchive::Release::Acquire-By-Hash=yes", "release", ".")
	got = map[string]Entry{}
	byHash, err := ParseRelease(bytes.NewReader(rel), Limits{}, collect(got))
	want = map[string]Entry{
		"main/binary-amd64/Packages":    {Size: int64(len(packages)), SHA256: sha256.Sum256(packages)},
		"main/binary-amd64/Packages.xz": {Size: int64(len(xzPackages)), SHA256: sha256.Sum256(xzPackages)},
	}
	if err != nil || !byHash || !maps.Equal(got, want) {
		t.Fatalf("Release: got %v, by-hash %v, %v\nwant %v\n%s", got, byHash, err, want, rel)
	}
}

// run runs a command in dir and returns its standard output.
func run(t *testing.T, dir, name string, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, stderr.Bytes())
	}
	return out
}
