package pool

import (
	"errors"
	"net/url"
	"strings"
	"testing"
)

// fuzzBase is the mirror base of the path invariants.
const fuzzBase = "https://m.example/archlinux/"

// upstreamPath is the path a mirror at fuzzBase sees (decoded, as it
// would decode it) for CleanPath's output rel, joined the way Serve joins it.
func upstreamPath(rel string) (string, error) {
	base, err := url.Parse(fuzzBase)
	if err != nil {
		return "", err
	}
	u, err := url.Parse(fileURL(base, rel))
	if err != nil {
		return "", err
	}
	return u.Path, nil
}

func TestCleanPathAccepts(t *testing.T) {
	tests := []struct {
		in       string
		out      string // "" : do not check the output itself
		upstream string // the path the mirror sees
	}{
		// The mirror's own index. JoinPath drops the base's trailing slash
		// for an empty path; the mirror redirects, no harm done.
		{"/", "", "/archlinux/"},
		{"/core/os/x86_64/core.db", "core/os/x86_64/core.db", "/archlinux/core/os/x86_64/core.db"},
		{"/" + pkgName, pkgName, "/archlinux/" + pkgName},
		{"//core///os//x86_64/core.db", "core/os/x86_64/core.db", "/archlinux/core/os/x86_64/core.db"},
		{"/core/os/", "core/os/", "/archlinux/core/os/"},
		{"/core//", "core/", "/archlinux/core/"},
		{"/a.b/..c/c../.../.x", "a.b/..c/c../.../.x", "/archlinux/a.b/..c/c../.../.x"},
		{"/pool/main/g/glibc/libc6_2.36-9+deb12u4_amd64.deb", "pool/main/g/glibc/libc6_2.36-9+deb12u4_amd64.deb",
			"/archlinux/pool/main/g/glibc/libc6_2.36-9+deb12u4_amd64.deb"},
		{"/extra/os/x86_64/vim-9.1:0.1-1-x86_64.pkg.tar.zst", "", "/archlinux/extra/os/x86_64/vim-9.1:0.1-1-x86_64.pkg.tar.zst"},
		{"/extra/glibc-2.40%2B1-1-x86_64.pkg.tar.zst", "", "/archlinux/extra/glibc-2.40+1-1-x86_64.pkg.tar.zst"},
		{"/a%20b", "", "/archlinux/a b"},
		{"/a%3Fb%23c", "", "/archlinux/a?b#c"},
		{"/%E2%82%AC", "", "/archlinux/€"},
		{"/" + strings.Repeat("a", MaxPathLength-1), strings.Repeat("a", MaxPathLength-1), "/archlinux/" + strings.Repeat("a", MaxPathLength-1)},
	}
	for _, tt := range tests {
		out, err := CleanPath(tt.in)
		if err != nil {
			t.Errorf("CleanPath(%q): %v", tt.in, err)
			continue
		}
		if tt.out != "" && out != tt.out {
			t.Errorf("CleanPath(%q) = %q, want %q", tt.in, out, tt.out)
		}
		if strings.HasPrefix(out, "/") {
			t.Errorf("CleanPath(%q) = %q starts with /", tt.in, out)
		}
		if up, err := upstreamPath(out); err != nil || up != tt.upstream {
			t.Errorf("CleanPath(%q) = %q: the mirror would see %q (%v), want %q", tt.in, out, up, err, tt.upstream)
		}
	}
}

func TestCleanPathRejects(t *testing.T) {
	tests := []struct {
		in   string
		want error
	}{
		{"", ErrBadPath},
		{"core/os", ErrBadPath},
		{"%2fcore", ErrBadPath},
		// Dot segments, plain and encoded.
		{"/.", ErrBadPath},
		{"/..", ErrBadPath},
		{"/a/./b", ErrBadPath},
		{"/a/../b", ErrBadPath},
		{"/a/..", ErrBadPath},
		{"/a/../", ErrBadPath},
		{"/../../etc/passwd", ErrBadPath},
		{"//..//etc", ErrBadPath},
		{"/%2e%2e/etc", ErrBadPath},
		{"/%2E%2e/etc", ErrBadPath},
		{"/.%2e/etc", ErrBadPath},
		{"/a/%2e/b", ErrBadPath},
		// Encoded slashes and backslashes, and backslashes.
		{"/a%2fb", ErrBadPath},
		{"/a%2Fb", ErrBadPath},
		{"/%2F", ErrBadPath},
		{"/..%2f..%2fetc", ErrBadPath},
		{"/a%5cb", ErrBadPath},
		{"/a%5Cb", ErrBadPath},
		{`/a\b`, ErrBadPath},
		{`/..\..\etc`, ErrBadPath},
		// NUL and control characters.
		{"/a%00b", ErrBadPath},
		{"/a\x00b", ErrBadPath},
		{"/a%0ab", ErrBadPath},
		{"/a%0D%0AX-Injected:%20yes", ErrBadPath},
		{"/a\nb", ErrBadPath},
		{"/a\tb", ErrBadPath},
		{"/a%09b", ErrBadPath},
		{"/a%1fb", ErrBadPath},
		{"/a\x1fb", ErrBadPath},
		{"/a%7fb", ErrBadPath},
		{"/a\x7fb", ErrBadPath},
		// Malformed escapes.
		{"/a%", ErrBadPath},
		{"/a%2", ErrBadPath},
		{"/a%zz", ErrBadPath},
		{"/a%g0b", ErrBadPath},
		{"/a%%41", ErrBadPath},
		// Too long, whatever else is wrong.
		{"/" + strings.Repeat("a", MaxPathLength), ErrPathTooLong},
		{"/" + strings.Repeat("../", MaxPathLength), ErrPathTooLong},
	}
	for _, tt := range tests {
		out, err := CleanPath(tt.in)
		if !errors.Is(err, tt.want) {
			name := tt.in
			if len(name) > 40 {
				name = name[:40] + "..."
			}
			t.Errorf("CleanPath(%q) = %q, %v; want %v", name, out, err, tt.want)
		}
	}
}

// A path escaped twice must not reach the mirror escaped once: a mirror
// that decodes it finds dot segments, slashes or backslashes that CleanPath
// rejects when they are escaped once. Either reject it, or send it so that
// the mirror decodes exactly what the client sent once decoded.
func TestCleanPathDoubleEscaped(t *testing.T) {
	tests := []struct{ in, upstream string }{
		{"/%252e%252e/%252e%252e/etc/passwd", "/archlinux/%2e%2e/%2e%2e/etc/passwd"},
		{"/a/%252E%252E/x", "/archlinux/a/%2E%2E/x"},
		{"/a%252fb", "/archlinux/a%2fb"},
		{"/a%255cb", "/archlinux/a%5cb"},
		{"/a%2500b", "/archlinux/a%00b"},
		{"/a%2525", "/archlinux/a%25"},
		{"/a%25zz", "/archlinux/a%zz"},
		{"/100%25", "/archlinux/100%"},
	}
	for _, tt := range tests {
		out, err := CleanPath(tt.in)
		if err != nil {
			continue // rejecting is fine
		}
		if up, err := upstreamPath(out); err != nil || up != tt.upstream {
			t.Errorf("CleanPath(%q) = %q: the mirror would see %q (%v), want %q", tt.in, out, up, err, tt.upstream)
		}
	}
}

// The invariant: whatever is accepted stays under the mirror's base, with
// no dot-dot segment, backslash or control character, even as the mirror
// decodes it.
func FuzzCleanPath(f *testing.F) {
	// More seeds in testdata/fuzz/FuzzCleanPath.
	f.Add("/core/os/x86_64/core.db")
	f.Fuzz(func(t *testing.T, in string) {
		out, err := CleanPath(in)
		if err != nil {
			if !errors.Is(err, ErrBadPath) && !errors.Is(err, ErrPathTooLong) {
				t.Fatalf("CleanPath(%q): %v, which is neither ErrBadPath nor ErrPathTooLong", in, err)
			}
			if out != "" {
				t.Fatalf("CleanPath(%q) = %q with an error", in, out)
			}
			return
		}
		if len(in) > MaxPathLength {
			t.Fatalf("CleanPath accepted %d bytes", len(in))
		}
		if bad := badChar(out); bad != "" {
			t.Fatalf("CleanPath(%q) = %q contains %s", in, out, bad)
		}
		if strings.HasPrefix(out, "/") || strings.Contains(out, "//") {
			t.Fatalf("CleanPath(%q) = %q: leading or repeated slash", in, out)
		}
		problem := ""
		up, err := upstreamPath(out)
		switch {
		case err != nil:
			problem = "cannot be joined to a base URL: " + err.Error()
		case !strings.HasPrefix(up, "/archlinux/"):
			problem = "escapes the base: " + up
		case hasDotDot(up):
			problem = "has a .. segment: " + up
		case badChar(up) != "":
			problem = "reaches the mirror with " + badChar(up) + ": " + up
		}
		if problem == "" {
			return
		}
		t.Fatalf("CleanPath(%q) = %q: %s", in, out, problem)
	})
}

func badChar(s string) string {
	for _, c := range []byte(s) {
		switch {
		case c == '\\':
			return "a backslash"
		case c < 0x20 || c == 0x7f:
			return "a control character"
		}
	}
	return ""
}

func hasDotDot(p string) bool {
	for seg := range strings.SplitSeq(p, "/") {
		if seg == ".." {
			return true
		}
	}
	return false
}

func TestParseMirrorURL(t *testing.T) {
	tests := []struct {
		in, want string // want "": an error
	}{
		{"https://geo.mirror.pkgbuild.com/", "https://geo.mirror.pkgbuild.com/"},
		{"https://m.example/archlinux", "https://m.example/archlinux/"},
		{"https://m.example/archlinux/", "https://m.example/archlinux/"},
		{"http://m.example", "http://m.example/"},
		{"HTTP://m.example/x", "http://m.example/x/"},
		{"http://127.0.0.1:8080/repo", "http://127.0.0.1:8080/repo/"},
		{"http://[::1]:8080/repo/", "http://[::1]:8080/repo/"},
		{"https://m.example/a%20b", "https://m.example/a%20b/"},
		{"https://m.example/a%2Fb", "https://m.example/a%2Fb/"},
		{"https://m.example/debian/", "https://m.example/debian/"},
		{"", ""},
		{"m.example/archlinux", ""},
		{"//m.example/archlinux/", ""},
		{"/archlinux/", ""},
		{"ftp://m.example/archlinux/", ""},
		{"rsync://m.example/archlinux/", ""},
		{"file:///srv/archlinux/", ""},
		{"javascript:alert(1)", ""},
		{"http:m.example", ""},
		{"http:///archlinux/", ""},
		{"http://:80/", ""},
		{"https://:443/archlinux/", ""},
		{"http://:8080/", ""},
		{"http://user@m.example/", ""},
		{"http://user:secret@m.example/", ""},
		{"http://m.example/?", ""},
		{"http://m.example/?mirror=1", ""},
		{"http://m.example/archlinux/#top", ""},
		{"http://m.example:port/", ""},
		{"http://m.example/%zz/", ""},
		{"http://m .example/", ""},
		{" http://m.example/", ""},
	}
	for _, tt := range tests {
		u, err := ParseMirrorURL(tt.in)
		switch {
		case tt.want == "" && err == nil:
			t.Errorf("ParseMirrorURL(%q) = %q, want an error", tt.in, u)
		case tt.want != "" && err != nil:
			t.Errorf("ParseMirrorURL(%q): %v", tt.in, err)
		case tt.want != "" && u.String() != tt.want:
			t.Errorf("ParseMirrorURL(%q) = %q, want %q", tt.in, u, tt.want)
		case tt.want != "" && u.JoinPath("core/os/x86_64/core.db").String() != tt.want+"core/os/x86_64/core.db":
			t.Errorf("ParseMirrorURL(%q) = %q: joining a path gives %q", tt.in, u, u.JoinPath("core/os/x86_64/core.db"))
		}
		if err != nil && !strings.Contains(err.Error(), "mirror URL") {
			t.Errorf("ParseMirrorURL(%q): error %q does not say what it is about", tt.in, err)
		}
	}
}
