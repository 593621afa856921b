package list

import (
	"os"
	"testing"
)

// FuzzParseList: no list makes the parser panic, and whatever it accepts
// keeps the parser contract. Seeds: the testdata lists and
// testdata/fuzz/FuzzParseList.
func FuzzParseList(f *testing.F) {
	for _, name := range []string{"testdata/mirrors.txt", "testdata/apt-mirrors.list"} {
		data, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		res, err := parseList(data)
		if err != nil {
			return
		}
		if err := res.Check(); err != nil {
			t.Fatalf("accepted %q: %v", data, err)
		}
	})
}
