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
		{"fedora/linux/releases/40/Everything/x86_64/os/repodata/repomd.xml", RpmRepomd},
		{"repodata/repomd.xml", RpmRepomd},
		{"repomd.xml", None},
		{"x/repomd.xml", None},
		{"repodata/repomd.xml.asc", None},
		{"repodata/repomd.xml.key", None},
		{"os/repodata/5b1e0f6c0a3e4bd2-primary.xml.zst", RpmPrimary},
		{"os/repodata/5b1e0f6c0a3e4bd2-primary.xml.gz", RpmPrimary},
		{"os/repodata/5b1e0f6c0a3e4bd2-primary.xml.xz", RpmPrimary},
		{"os/repodata/5b1e0f6c0a3e4bd2-primary.xml.bz2", RpmPrimary},
		{"os/repodata/5b1e0f6c0a3e4bd2-primary.xml", RpmPrimary},
		{"repodata/primary.xml.gz", RpmPrimary},
		{"repodata/primary.xml", RpmPrimary},
		{"os/repodata/5b1e0f6c0a3e4bd2-primary.xml.zck", None},
		{"os/repodata/5b1e0f6c0a3e4bd2-primary.sqlite.bz2", None},
		{"os/repodata/5b1e0f6c0a3e4bd2-filelists.xml.zst", None},
		{"os/repodata/5b1e0f6c0a3e4bd2-other.xml.gz", None},
		{"os/repodata/5b1e0f6c0a3e4bd2-primary.xml.gz.asc", None},
		{"os/repodata/xprimary.xml.gz", None},
		{"os/Packages/p/primary.xml.gz", None},
		{"os/Packages/r/repomd.xml", None},
		{"os/Packages/h/hello-2.12.1-4.fc40.x86_64.rpm", None},
		{"", None},
		{"/", None},
	} {
		if got := KindOf(tc.rel); got != tc.want {
			t.Errorf("KindOf(%q) = %d, want %d", tc.rel, got, tc.want)
		}
	}
}
