package pool

import (
	"bytes"
	"context"
	"crypto/sha256"
	"slices"
	"testing"
	"time"

	"github.com/caddy-refractor/refractor/internal/testmirror"
)

// The tests of Candidate.Probe: freshness learned from the versions of a
// file the provider knows (freshness.go), as the metalink provider gives
// them for an RPM repository's repomd.xml.

const probePath = "repodata/repomd.xml"

// probeProvider proposes the bases, in order, each with probe.
func probeProvider(probe *SyncProbe, bases ...string) ProviderFunc {
	return func(context.Context) ([]Candidate, error) {
		cands := make([]Candidate, len(bases))
		for i, b := range bases {
			cands[i] = Candidate{URL: b, Probe: probe}
		}
		return cands, nil
	}
}

// lastSyncOf returns the sync time the pool has for mirror key.
func lastSyncOf(p *Pool, key string) time.Time {
	i := slices.IndexFunc(p.Status().Workers, func(w WorkerStatus) bool { return w.Mirror == key })
	if i < 0 {
		return time.Time{}
	}
	return p.Status().Workers[i].LastSync
}

// A metalink says which repomd.xml is current (an hour old) and which one
// was before it (a day old). Of four mirrors, F has the current one, S the
// older one, U one the metalink does not name, and M none at all. The
// pool, whose sync file is off, learns F's and S's sync times from the
// probe and leaves U's and M's unknown; repomd.xml (a file that changes in
// place) goes to F every time, however much faster the others are; U and
// M stay in the pool and serve packages.
func TestProbeRanksByVersion(t *testing.T) {
	now := time.Now().Truncate(time.Second)
	current := testmirror.Content("repomd.xml current", 3<<10)
	older := testmirror.Content("repomd.xml older", 3<<10)
	other := testmirror.Content("repomd.xml of another repository", 3<<10)
	pkg := testmirror.Content(pkgName, 300<<10)
	probe := &SyncProbe{Path: probePath, Times: map[[32]byte]time.Time{
		sha256.Sum256(current): now.Add(-time.Hour),
		sha256.Sum256(older):   now.Add(-25 * time.Hour),
	}}
	f := testmirror.New(t, map[string][]byte{probePath: current, pkgName: pkg})
	s := testmirror.New(t, map[string][]byte{probePath: older, pkgName: pkg})
	u := testmirror.New(t, map[string][]byte{probePath: other, pkgName: pkg})
	m := testmirror.New(t, map[string][]byte{pkgName: pkg})
	obs := &recorder{}
	// The sync file is off (startPool's default): probes run all the same.
	p := mbStartPool(t, Config{Provider: probeProvider(probe, s.Base(), u.Base(), m.Base(), f.Base()), Observer: obs},
		s.Base(), u.Base(), m.Base(), f.Base())

	pollFor(t, 10*time.Second, "the sync times of F and S", func() bool {
		return !lastSyncOf(p, f.Base()).IsZero() && !lastSyncOf(p, s.Base()).IsZero()
	})
	if got, want := lastSyncOf(p, f.Base()), now.Add(-time.Hour); !got.Equal(want) {
		t.Fatalf("F (current repomd.xml): last sync %v, want %v", got, want)
	}
	if got, want := lastSyncOf(p, s.Base()), now.Add(-25*time.Hour); !got.Equal(want) {
		t.Fatalf("S (older repomd.xml): last sync %v, want %v", got, want)
	}
	// U's and M's probes ran with F's and S's; give them a moment to land,
	// if they wrongly would.
	if mbPollUntil(300*time.Millisecond, func() bool {
		return !lastSyncOf(p, u.Base()).IsZero() || !lastSyncOf(p, m.Base()).IsZero()
	}) {
		t.Fatalf("U (unknown repomd.xml) or M (none) got a sync time: %v, %v", lastSyncOf(p, u.Base()), lastSyncOf(p, m.Base()))
	}

	// The others ranked far above F.
	for _, b := range []string{s.Base(), u.Base(), m.Base()} {
		setSamples(t, p, b, 50<<20, 50<<20, 50<<20)
	}
	setSamples(t, p, f.Base(), 1<<20, 1<<20, 1<<20)
	for i := 1; i <= 6; i++ {
		rec, err := serve(t, p, nil, probePath)
		if from := rec.Header().Get(MirrorHeader); from != f.Base() || !bytes.Equal(rec.Body.Bytes(), current) {
			t.Fatalf("request %d: repomd.xml from %s (current: %v, older: %v, Serve: %v); want the current one from F",
				i, from, bytes.Equal(rec.Body.Bytes(), current), bytes.Equal(rec.Body.Bytes(), older), err)
		}
		wantFile(t, rec, err, f, current)
	}

	// A package goes to the best ranked, whatever its freshness.
	res, err := serve(t, p, nil, pkgName)
	if err != nil || !bytes.Equal(res.Body.Bytes(), pkg) {
		t.Fatalf("the package: %d bytes, Serve: %v", res.Body.Len(), err)
	}
	if from := res.Header().Get(MirrorHeader); from == f.Base() {
		t.Fatal("the package came from F, the slowest")
	}
	for _, b := range []string{u.Base(), m.Base()} {
		if !inPool(p, b) {
			t.Fatalf("%s (repomd.xml unknown or missing) left the pool", b)
		}
		if st := statsOf(t, p, b); st.failures != 0 {
			t.Fatalf("%s: %d failures counted for a probe", b, st.failures)
		}
	}
	if left := obs.events(&obs.left); len(left) != 0 {
		t.Fatalf("mirrors left the pool: %+v", left)
	}
}

// A mirror whose candidate has a probe is judged by the probe, not by the
// pool's sync file: its lastsync says now, its repomd.xml is a day old.
func TestProbeReplacesSyncFile(t *testing.T) {
	now := time.Now().Truncate(time.Second)
	older := testmirror.Content("repomd.xml older", 3<<10)
	probe := &SyncProbe{Path: probePath, Times: map[[32]byte]time.Time{sha256.Sum256(older): now.Add(-24 * time.Hour)}}
	m := testmirror.New(t, map[string][]byte{probePath: older, "lastsync": mbUnix(now)})
	p := mbStartPool(t, Config{Provider: probeProvider(probe, m.Base()), SyncFile: "lastsync"}, m.Base())
	pollFor(t, 10*time.Second, "the mirror's sync time", func() bool { return !lastSyncOf(p, m.Base()).IsZero() })
	if got, want := lastSyncOf(p, m.Base()), now.Add(-24*time.Hour); !got.Equal(want) {
		t.Fatalf("last sync %v, want %v (the probe's, not lastsync's)", got, want)
	}
}

// A candidate proposed again brings its newer probe to the worker it
// already has: the mirror that had a version unknown at first is fresh
// once the provider knows it.
func TestProbeUpdatedByTheProvider(t *testing.T) {
	now := time.Now().Truncate(time.Second)
	current := testmirror.Content("repomd.xml current", 3<<10)
	m := testmirror.New(t, map[string][]byte{probePath: current})
	p := mbStartPool(t, Config{Provider: probeProvider(&SyncProbe{Path: probePath}, m.Base())}, m.Base())
	p.probeSync(p.workerList())
	if got := lastSyncOf(p, m.Base()); !got.IsZero() {
		t.Fatalf("last sync %v from a probe that knows no version", got)
	}
	known := &SyncProbe{Path: probePath, Times: map[[32]byte]time.Time{sha256.Sum256(current): now}}
	p.admit([]Candidate{{URL: m.Base(), Probe: known}})
	p.probeSync(p.workerList())
	if got := lastSyncOf(p, m.Base()); !got.Equal(now) {
		t.Fatalf("last sync %v, want %v", got, now)
	}
}
