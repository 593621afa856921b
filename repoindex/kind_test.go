package repoindex

import "testing"

func TestKindOf(t *testing.T) {
	for _, tc := range []struct {
		rel  string
		want Kind
	}{
		{"core/os/x86_64/core.db", PacmanDB},
		{"core.db.tar.gz", PacmanDB},
		{"extra/os/x86_64/extra.db.tar.zst", PacmanDB},
		{"x/custom.db.tar.xz", PacmanDB},
		{"x/custom.db.tar.bz2", PacmanDB},
		{"x/custom.db.tar", PacmanDB},
		{"core/os/x86_64/core.files", None},
		{"core/os/x86_64/core.files.tar.gz", None},
		{"core/os/x86_64/core.db.sig", None},
		{"core/os/x86_64/core.db.tar.gz.sig", None},
		{"core/os/x86_64/core.db.tar.gz.old", None},
		{"core/os/x86_64/.db", None},
		{"core/os/x86_64/.db.tar.gz", None},
		{"core.db/hello-1-1-x86_64.pkg.tar.zst", None},
		{"dists/bookworm/InRelease", AptRelease},
		{"dists/bookworm/Release", AptRelease},
		{"Release", AptRelease},
		{"dists/bookworm/Release.gpg", None},
		{"dists/bookworm/main/binary-amd64/Release", AptRelease},
		{"dists/bookworm/main/binary-amd64/Packages", AptPackages},
		{"dists/bookworm/main/binary-amd64/Packages.gz", AptPackages},
		{"dists/bookworm/main/binary-amd64/Packages.xz", AptPackages},
		{"dists/bookworm/main/binary-amd64/Packages.bz2", AptPackages},
		{"dists/bookworm/main/binary-amd64/Packages.zst", AptPackages},
		{"dists/bookworm/main/binary-amd64/Packages.diff/Index", None},
		{"dists/bookworm/main/binary-amd64/Packages.diff", None},
		{"dists/bookworm/main/binary-amd64/Packages.lz4", None},
		{"dists/bookworm/main/binary-amd64/by-hash/SHA256/a5fcac50", None},
		{"dists/bookworm/main/source/Sources.xz", None},
		{"Packages/hello.deb", None},
		{"pool/main/h/hello/hello_2.10-3_amd64.deb", None},
		{"", None},
		{"/", None},
	} {
		if got := KindOf(tc.rel); got != tc.want {
			t.Errorf("KindOf(%q) = %d, want %d", tc.rel, got, tc.want)
		}
	}
}
