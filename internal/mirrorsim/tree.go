package mirrorsim

import (
	"bytes"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"time"
)

// ModTime is the modification time of every file a mirror serves.
var ModTime = time.Date(2026, 11, 20, 12, 0, 0, 0, time.UTC)

// File is one file of a mirror: held in memory, or generated from its name
// and offset as it is read.
type File struct {
	Name string // path relative to the mirror's base, no leading slash
	Size int64
	data []byte // nil: generated
}

// GeneratedFile is a file of size bytes computed from its name (see Fill).
func GeneratedFile(name string, size int64) File { return File{Name: name, Size: size} }

// BytesFile is a file with the given content.
func BytesFile(name string, data []byte) File {
	return File{Name: name, Size: int64(len(data)), data: data}
}

// Checker returns a Checker of the file's bytes from offset off.
func (f File) Checker(off int64) *Checker {
	if f.data != nil {
		return &Checker{want: f.data, off: off, bad: -1}
	}
	return NewChecker(f.Name, off)
}

// Open returns a reader of the file's content.
func (f File) Open() io.ReadSeeker {
	if f.data != nil {
		return bytes.NewReader(f.data)
	}
	return NewReader(f.Name, f.Size)
}

// Generated reports whether the file's content is generated (and can be
// checked with a Checker).
func (f File) Generated() bool { return f.data == nil }

// A Tree is the set of files a mirror serves.
type Tree interface {
	Lookup(name string) (File, bool)
}

// Files is a Tree of files held in memory, looked up in the map at each
// request.
type Files map[string][]byte

// Lookup implements Tree.
func (fs Files) Lookup(name string) (File, bool) {
	b, ok := fs[name]
	if !ok {
		return File{}, false
	}
	return BytesFile(name, b), true
}

// List is a Tree of a fixed list of files.
type List struct {
	files []File // sorted by name
	index map[string]int
}

// NewList returns a List of files.
func NewList(files ...File) *List {
	l := &List{files: slices.Clone(files), index: make(map[string]int, len(files))}
	slices.SortFunc(l.files, func(a, b File) int { return strings.Compare(a.Name, b.Name) })
	for i, f := range l.files {
		l.index[f.Name] = i
	}
	return l
}

// Lookup implements Tree.
func (l *List) Lookup(name string) (File, bool) {
	i, ok := l.index[name]
	if !ok {
		return File{}, false
	}
	return l.files[i], true
}

// Files returns the files, sorted by name.
func (l *List) Files() []File { return slices.Clone(l.files) }

// Packages returns the package files (*.pkg.tar.*), sorted by name.
func (l *List) Packages() []File {
	var out []File
	for _, f := range l.files {
		if strings.Contains(f.Name, ".pkg.tar.") {
			out = append(out, f)
		}
	}
	return out
}

// Size is the total size of the files.
func (l *List) Size() int64 {
	var n int64
	for _, f := range l.files {
		n += f.Size
	}
	return n
}

// ArchConfig describes a generated Arch Linux-like repository.
type ArchConfig struct {
	// Total is about how many bytes of packages there are. Default 1 GiB.
	Total int64
	// Large is the size of the one large package. Default: a quarter of
	// Total, at most 160 MiB.
	Large int64
	// DBSize is about the size of each database (core.db and extra.db,
	// real pacman databases listing the packages). Default 3 MiB.
	DBSize int64
	// LastSync is the time written in lastsync. Default: ModTime.
	LastSync time.Time
	// Seed varies the package names and sizes. The same config always
	// gives the same tree.
	Seed uint64
}

// Package size classes, as shares of the bytes that are not the large
// package: many small packages, a few medium ones, some of tens of MB.
const (
	smallMin, smallMax = 10 << 10, 500 << 10
	mediumMin, medMax  = 512 << 10, 8 << 20
	bigMin, bigMax     = 10 << 20, 60 << 20
)

// Arch generates an Arch Linux-like tree: lastsync, packages under core/
// and extra/, with a realistic mix of sizes, and the databases listing
// them (core/os/x86_64/core.db, extra/os/x86_64/extra.db). Only the names
// and sizes of packages are held; their contents are generated as they
// are read.
func Arch(c ArchConfig) *List {
	if c.Total <= 0 {
		c.Total = 1 << 30
	}
	if c.Large <= 0 {
		c.Large = min(c.Total/4, 160<<20)
	}
	if c.DBSize <= 0 {
		c.DBSize = 3 << 20
	}
	if c.LastSync.IsZero() {
		c.LastSync = ModTime
	}
	rng := rand.New(rand.NewPCG(c.Seed, 0x5eed))
	var files []File
	n := 0
	add := func(size int64) {
		repo := "core"
		if n%3 != 0 {
			repo = "extra"
		}
		name := fmt.Sprintf("%s/os/x86_64/%s%03d-%d.%d-%d-x86_64.pkg.tar.zst",
			repo, syllables[n%len(syllables)], n, 1+rng.IntN(9), rng.IntN(20), 1+rng.IntN(3))
		files = append(files, GeneratedFile(name, size))
		n++
	}
	add(c.Large)
	rest := c.Total - c.Large
	// logUniform draws a size between lo and hi, most of them near lo.
	logUniform := func(lo, hi int64) int64 {
		return int64(float64(lo) * math.Pow(float64(hi)/float64(lo), rng.Float64()))
	}
	fillClass := func(budget, lo, hi int64) {
		hi = min(hi, c.Large)
		if hi < lo {
			return
		}
		for budget >= lo {
			s := min(logUniform(lo, hi), budget)
			add(s)
			budget -= s
		}
	}
	fillClass(rest*4/10, bigMin, bigMax)
	fillClass(rest*3/10, mediumMin, medMax)
	var used int64
	for _, f := range files {
		used += f.Size
	}
	fillClass(c.Total-used, smallMin, smallMax)
	byRepo := map[string][]File{}
	for _, f := range files {
		repo := strings.Split(f.Name, "/")[0]
		byRepo[repo] = append(byRepo[repo], f)
	}
	files = append(files,
		BytesFile("core/os/x86_64/core.db", PacmanDB(byRepo["core"], c.DBSize)),
		BytesFile("extra/os/x86_64/extra.db", PacmanDB(byRepo["extra"], c.DBSize)),
		BytesFile("lastsync", []byte(strconv.FormatInt(c.LastSync.Unix(), 10)+"\n")),
	)
	return NewList(files...)
}

var syllables = []string{
	"lib", "python-", "perl-", "haskell-", "gst-", "qt6-", "kde-", "xf86-", "ttf-", "rust-",
	"go-", "node-", "texlive-", "linux-", "gtk-", "mesa-", "vulkan-", "java-", "ruby-", "lua-",
}
