package mirrorlist

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/caddy-refractor/refractor/pool"
)

func newContext(t *testing.T) caddy.Context {
	t.Helper()
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	t.Cleanup(cancel)
	return ctx
}

func urls(cands []pool.Candidate) string {
	var out []string
	for _, c := range cands {
		out = append(out, c.URL)
	}
	return strings.Join(out, " ")
}

func parseFile(t *testing.T, name string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	res, err := parseMirrorlist(data)
	if err != nil {
		t.Fatal(err)
	}
	return urls(res.Candidates)
}

func TestParseMirrorlist(t *testing.T) {
	// Commented-out servers are ignored; Server= without spaces counts.
	want := "https://mirror.alpha.example/archlinux/ https://ftp.beta.example/pub/archlinux/ https://arch.gamma.example/"
	if got := parseFile(t, "mirrorlist"); got != want {
		t.Fatalf("got\n\t%s\nwant\n\t%s", got, want)
	}
}

func TestParseMirrorlistMessy(t *testing.T) {
	data, err := os.ReadFile("testdata/mirrorlist-reflector")
	if err != nil {
		t.Fatal(err)
	}
	res, err := parseMirrorlist(data)
	if err != nil {
		t.Fatal(err)
	}
	want := strings.Join([]string{
		"https://mirror.alpha.example/archlinux/",
		"https://ftp.beta.example/pub/archlinux/",
		"https://arch.gamma.example/",                          // inline comment dropped
		"http://arm.delta.example/",                            // $arch/$repo layout
		"https://fixed.zeta.example/archlinux/core/os/x86_64/", // no variables: as written
	}, " ")
	if got := urls(res.Candidates); got != want {
		t.Fatalf("got\n\t%s\nwant\n\t%s", got, want)
	}
	if res.Entries != 8 {
		t.Errorf("Entries = %d, want 8 Server lines", res.Entries)
	}
	// The repeat (another spelling), rsync, the variable host and the
	// Include line.
	if len(res.Warnings) != 4 {
		t.Fatalf("warnings:\n%s", strings.Join(res.Warnings, "\n"))
	}
	for i, sub := range []string{"line 13: ", "line 16: ", "line 17: ", "line 19: not a Server line"} {
		if !strings.HasPrefix(res.Warnings[i], sub) {
			t.Errorf("warning %q, want it to start with %q", res.Warnings[i], sub)
		}
	}
	if !strings.Contains(res.Warnings[0], "repeats line 11") {
		t.Errorf("warning %q does not say what it repeats", res.Warnings[0])
	}
}

func TestParseMirrorlistErrors(t *testing.T) {
	for _, tc := range []struct{ doc, want string }{
		{"", "no Server line"},
		{"## Germany\n#Server = https://a.example/$repo/os/$arch\n", "no Server line (commented-out servers do not count)"},
		{"Server = ftp://a.example/$repo/os/$arch\n", "none of the 1 servers has a valid http(s) URL"},
	} {
		if _, err := parseMirrorlist([]byte(tc.doc)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want %q", tc.doc, err, tc.want)
		}
	}
}

func TestRepoRoot(t *testing.T) {
	for in, want := range map[string]string{
		"https://h.example/archlinux/$repo/os/$arch": "https://h.example/archlinux/",
		"https://h.example/$repo/os/$arch":           "https://h.example/",
		"https://h.example/arch/$arch/$repo":         "https://h.example/arch/",
		"https://h.example/archlinux":                "https://h.example/archlinux",
		"https://$h.example/$repo":                   "error",
		"https://h.example$repo":                     "error",
		"https$://h.example/":                        "error",
		"$repo":                                      "error",
	} {
		got, err := repoRoot(in)
		if err != nil {
			got = "error"
		}
		if got != want {
			t.Errorf("repoRoot(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

func TestUnmarshalCaddyfile(t *testing.T) {
	for _, tc := range []struct {
		input, want, wantErr string
	}{
		{input: `mirrorlist`, want: ""},
		{input: `mirrorlist /etc/pacman.d/mirrorlist`, want: "/etc/pacman.d/mirrorlist"},
		{input: "mirrorlist {\n\tpath /srv/mirrorlist\n}", want: "/srv/mirrorlist"},
		{input: "mirrorlist /a {\n\tpath /b\n}", wantErr: "mirrorlist provider: path already specified"},
		{input: "mirrorlist /a /b", wantErr: "wrong argument count"},
		{input: "mirrorlist {\n\tpath\n}", wantErr: "wrong argument count"},
		{input: "mirrorlist {\n\tserver https://a.example/\n}", wantErr: "unrecognized subdirective server"},
	} {
		var m Mirrorlist
		err := m.UnmarshalCaddyfile(caddyfile.NewTestDispenser(tc.input))
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%q: error %v, want %q", tc.input, err, tc.wantErr)
			}
			continue
		}
		if err != nil || m.Path != tc.want {
			t.Errorf("%q: path %q, error %v; want %q", tc.input, m.Path, err, tc.want)
		}
	}
}

func TestProvisionErrors(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, []byte("#Server = https://a.example/$repo/os/$arch\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]string{
		filepath.Join(dir, "missing"): "mirrorlist provider: open " + filepath.Join(dir, "missing"),
		empty:                         "mirrorlist provider: " + empty + ": no Server line",
		dir:                           "is a directory",
	} {
		m := &Mirrorlist{Path: path}
		if err := m.Provision(newContext(t)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error %v, want %q", path, err, want)
		}
	}
}

// TestRereadOnChange: edits in place and atomic replacements are seen on
// the next call; a broken or missing file keeps the last good list.
func TestRereadOnChange(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "mirrorlist")
	mtime := time.Date(2026, 11, 20, 12, 0, 0, 0, time.UTC)
	write := func(content string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		// A new modification time each write, whatever the file
		// system's granularity.
		mtime = mtime.Add(time.Second)
		if err := os.Chtimes(path, mtime, mtime); err != nil {
			t.Fatal(err)
		}
	}
	replace := func(content string) {
		t.Helper()
		tmp := path + ".new"
		if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(tmp, mtime, mtime); err != nil { // same mtime: the inode tells
			t.Fatal(err)
		}
		if err := os.Rename(tmp, path); err != nil {
			t.Fatal(err)
		}
	}
	var ml *Mirrorlist
	get := func() string {
		t.Helper()
		cands, err := ml.Candidates(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		return urls(cands)
	}

	write("Server = https://a.example/$repo/os/$arch\n")
	ml = &Mirrorlist{Path: path}
	if err := ml.Provision(newContext(t)); err != nil {
		t.Fatal(err)
	}
	if got := get(); got != "https://a.example/" {
		t.Fatalf("got %s", got)
	}

	write("Server = https://b.example/$repo/os/$arch\nServer = https://c.example/$repo/os/$arch\n")
	if got := get(); got != "https://b.example/ https://c.example/" {
		t.Fatalf("after an edit: got %s", got)
	}

	replace("Server = https://d.example/$repo/os/$arch\nServer = https://e.example/$repo/os/$arch\n")
	if got := get(); got != "https://d.example/ https://e.example/" {
		t.Fatalf("after a replacement: got %s", got)
	}

	write("#Server = https://f.example/$repo/os/$arch\n")
	if got := get(); got != "https://d.example/ https://e.example/" {
		t.Fatalf("after breaking the file: got %s, want the last good list", got)
	}

	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if got := get(); got != "https://d.example/ https://e.example/" {
		t.Fatalf("after removing the file: got %s, want the last good list", got)
	}

	write("Server = https://g.example/$repo/os/$arch\n")
	if got := get(); got != "https://g.example/" {
		t.Fatalf("after restoring the file: got %s", got)
	}
}
