package mirrorlist

import (
	"os"
	"testing"
)

// FuzzParseMirrorlist: no file makes the parser panic, and whatever it
// accepts keeps the parser contract. Seeds: the testdata mirrorlists and
// testdata/fuzz/FuzzParseMirrorlist.
func FuzzParseMirrorlist(f *testing.F) {
	for _, name := range []string{"testdata/mirrorlist", "testdata/mirrorlist-reflector"} {
		data, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		res, err := parseMirrorlist(data)
		if err != nil {
			return
		}
		if err := res.Check(); err != nil {
			t.Fatalf("accepted %q: %v", data, err)
		}
	})
}
