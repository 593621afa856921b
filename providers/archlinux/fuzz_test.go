package archlinux

import (
	"testing"
)

// FuzzParseStatus: no document makes the parser panic, and whatever it
// accepts keeps the parser contract. Seeds: testdata/status.json and
// testdata/fuzz/FuzzParseStatus.
func FuzzParseStatus(f *testing.F) {
	f.Add(readStatus(f))
	all, err := (&Archlinux{MinCompletion: ptr(0.0), Active: ptr(false)}).filters()
	if err != nil {
		f.Fatal(err)
	}
	strict, err := (&Archlinux{Countries: []string{"DE", "fr"}, MaxScore: 3, MaxDelay: caddyDuration(3600e9), IPv4: true, IPv6: true, ISOs: true}).filters()
	if err != nil {
		f.Fatal(err)
	}
	defaults, err := (&Archlinux{}).filters()
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, flt := range []*filters{defaults, all, strict} {
			res, err := flt.parse(data)
			if err != nil {
				continue
			}
			if err := res.Check(); err != nil {
				t.Fatalf("accepted %q: %v", data, err)
			}
			if res.Entries < len(res.Candidates) {
				t.Fatalf("%d candidates from %d entries", len(res.Candidates), res.Entries)
			}
		}
	})
}
