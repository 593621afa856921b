package repoindex

import "strings"

// Kind is what sort of index a path names.
type Kind int

// The kinds of index KindOf tells apart.
const (
	None        Kind = iota // not an index this package reads
	PacmanDB                // a pacman sync database: "<repo>.db" or "<repo>.db.tar[.gz|.zst|.xz|.bz2]"
	AptRelease              // an apt "InRelease" or "Release" file
	AptPackages             // an apt "Packages" file, possibly compressed
	RpmRepomd               // an RPM repository's "repodata/repomd.xml"
	RpmPrimary              // an RPM repository's primary metadata: "repodata/[<hash>-]primary.xml[.gz|.xz|.zst|.bz2]"
)

var (
	pacmanSuffixes = []string{".db", ".db.tar", ".db.tar.gz", ".db.tar.zst", ".db.tar.xz", ".db.tar.bz2"}
	// primaryNames are the names of primary metadata after the hash that
	// createrepo_c puts before them (unless --simple-md-filenames). The
	// zchunk (.zck) and sqlite forms are not read.
	primaryNames = []string{"primary.xml", "primary.xml.gz", "primary.xml.xz", "primary.xml.zst", "primary.xml.bz2"}
)

// KindOf tells what sort of index rel names, from its last element (and,
// for RPM metadata, which always lives in repodata/, the directory holding
// it); rel is a slash-separated path relative to the mirror base.
func KindOf(rel string) Kind {
	dir, name := "", rel
	if i := strings.LastIndexByte(rel, '/'); i >= 0 {
		dir, name = rel[:i], rel[i+1:]
	}
	switch name {
	case "InRelease", "Release":
		return AptRelease
	case "Packages", "Packages.gz", "Packages.xz", "Packages.bz2", "Packages.zst":
		return AptPackages
	}
	if dir == "repodata" || strings.HasSuffix(dir, "/repodata") {
		if name == "repomd.xml" {
			return RpmRepomd
		}
		for _, s := range primaryNames {
			if name == s || strings.HasSuffix(name, "-"+s) {
				return RpmPrimary
			}
		}
	}
	for _, s := range pacmanSuffixes {
		if len(name) > len(s) && strings.HasSuffix(name, s) {
			return PacmanDB
		}
	}
	return None
}
