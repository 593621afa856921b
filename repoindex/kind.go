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
)

var pacmanSuffixes = []string{".db", ".db.tar", ".db.tar.gz", ".db.tar.zst", ".db.tar.xz", ".db.tar.bz2"}

// KindOf tells what sort of index rel names, from its last element alone;
// rel is a slash-separated path relative to the mirror base.
func KindOf(rel string) Kind {
	name := rel[strings.LastIndexByte(rel, '/')+1:]
	switch name {
	case "InRelease", "Release":
		return AptRelease
	case "Packages", "Packages.gz", "Packages.xz", "Packages.bz2", "Packages.zst":
		return AptPackages
	}
	for _, s := range pacmanSuffixes {
		if len(name) > len(s) && strings.HasSuffix(name, s) {
			return PacmanDB
		}
	}
	return None
}
