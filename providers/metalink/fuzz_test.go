package metalink

import (
	"testing"
)

// FuzzParse: no document makes the parser panic, and whatever it accepts
// keeps the parser contract, with one probe for every candidate, for the
// file at strip. Seeds: the testdata metalinks and testdata/fuzz/FuzzParse.
func FuzzParse(f *testing.F) {
	for _, name := range []string{"fedora-updates.metalink", "opensuse-tumbleweed.meta4"} {
		f.Add(readTestdata(f, name))
	}
	parsers := []*parser{
		newParser(f, Metalink{}),
		newParser(f, Metalink{Strip: fedoraStrip, Countries: []string{"DE", "us"}, Protocols: []string{"https"}}),
		newParser(f, Metalink{Strip: suseStrip}),
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, p := range parsers {
			res, err := p.parse(data)
			if err != nil {
				continue
			}
			if err := res.Check(); err != nil {
				t.Fatalf("accepted %q: %v", data, err)
			}
			if res.Entries < len(res.Candidates) {
				t.Fatalf("%d candidates from %d entries", len(res.Candidates), res.Entries)
			}
			probe := res.Candidates[0].Probe
			for _, c := range res.Candidates {
				if c.Probe != probe {
					t.Fatalf("candidates with different probes")
				}
			}
			if probe != nil && (probe.Path != p.strip || len(probe.Times) == 0 || len(probe.Times) > maxVersions) {
				t.Fatalf("probe for %q with %d versions; want %q, 1 to %d", probe.Path, len(probe.Times), p.strip, maxVersions)
			}
		}
	})
}
