package pool

import (
	"math"
	"slices"
	"time"
)

// Snapshot is what a State learned, in the form it is saved in (as JSON,
// by the Caddy module, in Caddy's storage) and read back from: per mirror,
// its throughput samples, failure streak, cool-down, last sync and trust;
// per pool, the mirrors it had. Other instances' samples (State.Share) are
// never part of it, so what is shared never echoes back.
type Snapshot struct {
	// Mirrors by base URL.
	Mirrors map[string]MirrorRecord `json:"mirrors"`
	// Pools: the mirrors each pool last had, by its members key (see
	// Config.MembersKey).
	Pools map[string][]PoolMember `json:"pools,omitempty"`
}

// MirrorRecord is what is known of one mirror.
type MirrorRecord struct {
	// Samples are throughput samples, oldest first; a failure is a sample
	// of no bytes.
	Samples []SampleRecord `json:"samples,omitempty"`
	// FailStreak counts the failures since its last success.
	FailStreak int `json:"fail_streak,omitempty"`
	// CooldownUntil is when it may join a pool again, after it resigned,
	// was evicted or lied.
	CooldownUntil time.Time `json:"cooldown_until,omitzero"`
	// Resigned: its cool-down is for being slow, not for failing.
	Resigned bool `json:"resigned,omitempty"`
	// Lied: its cool-down is for serving bytes that did not match the
	// repository's index.
	Lied bool `json:"lied,omitempty"`
	// LastSync is when the mirror last synchronised, if known.
	LastSync time.Time `json:"last_sync,omitzero"`
	// Verified and Witnessed count the files it served whose hash, or
	// length, was corroborated since it last failed a check (its trust).
	Verified  int `json:"verified,omitempty"`
	Witnessed int `json:"witnessed,omitempty"`
}

// SampleRecord is one throughput sample: Bytes moved in Seconds, taken at
// At (Unix seconds).
type SampleRecord struct {
	Bytes   int64   `json:"bytes"`
	Seconds float64 `json:"seconds"`
	At      int64   `json:"at"`
}

// PoolMember is one mirror a pool had.
type PoolMember struct {
	URL string `json:"url"`
	// Remote: the mirror came from a list fetched from a public address
	// (see Candidate.Remote).
	Remote bool `json:"remote,omitempty"`
	// Probation is how many samples it still had to show before it could
	// resign: it had come back from a cool-down.
	Probation int `json:"probation,omitempty"`
}

// Snapshot returns what the State learned that still counts at now:
// samples younger than ForgetAfter (this process's and those it restored,
// never other instances'), cool-downs not yet over, and every pool's
// mirrors.
func (s *State) Snapshot(now time.Time) Snapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	snap := Snapshot{Mirrors: map[string]MirrorRecord{}, Pools: map[string][]PoolMember{}}
	for key, ms := range s.mirrors {
		var rec MirrorRecord
		for _, v := range ms.recent(ms.count) {
			if weight(now.Sub(v.at)) > 0 {
				rec.Samples = append(rec.Samples, SampleRecord{Bytes: v.bytes, Seconds: v.time.Seconds(), At: v.at.Unix()})
			}
		}
		if len(rec.Samples) == 0 && weight(now.Sub(ms.lastSync)) == 0 {
			continue // only others' samples, or nothing that still counts
		}
		rec.FailStreak, rec.LastSync = ms.failStreak, ms.lastSync
		if !ms.lied {
			rec.Verified, rec.Witnessed = ms.verified, ms.witnessed
		}
		snap.Mirrors[key] = rec
	}
	for key, until := range s.cooldown {
		if !until.After(now) {
			continue
		}
		rec := snap.Mirrors[key]
		rec.CooldownUntil, rec.Resigned, rec.Lied = until, s.resigned[key], s.liars[key]
		snap.Mirrors[key] = rec
	}
	for key, cands := range s.members {
		for _, c := range cands {
			snap.Pools[key] = append(snap.Pools[key], PoolMember{URL: c.URL, Remote: c.Remote, Probation: c.probation})
		}
	}
	return snap
}

// Restore takes back what an earlier process learned, as it counts at now,
// for mirrors and pools this State knows nothing of yet (what it learned
// itself is newer): samples younger than ForgetAfter (marked restored),
// cool-downs not over, sync times, trust and pools' mirrors. A mirror all
// of whose samples are forgotten comes back to a fresh trial and without
// trust.
func (s *State) Restore(snap Snapshot, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for key, rec := range snap.Mirrors {
		if _, ok := s.mirrors[key]; ok {
			continue
		}
		if _, ok := s.cooldown[key]; ok {
			continue
		}
		if rec.CooldownUntil.After(now) {
			s.cooldown[key] = rec.CooldownUntil
			if rec.Resigned {
				s.resigned[key] = true
			}
			if rec.Lied {
				s.liars[key] = true
			}
		}
		samples := samplesOf(rec.Samples, now, true)
		if len(samples) == 0 && weight(now.Sub(rec.LastSync)) == 0 {
			continue // nothing that still counts
		}
		ms := &mirrorStats{samples: make([]sample, max(len(samples), DefaultWindow))}
		for _, v := range samples {
			ms.push(v)
		}
		ms.lastSync = rec.LastSync
		if len(samples) > 0 {
			ms.failStreak = max(rec.FailStreak, 0)
			ms.verified, ms.witnessed = max(rec.Verified, 0), max(rec.Witnessed, 0)
		}
		s.mirrors[key] = ms
	}
	for key, members := range snap.Pools {
		if _, ok := s.members[key]; ok {
			continue
		}
		for _, m := range members {
			s.members[key] = append(s.members[key], member{Candidate{URL: m.URL, Remote: m.Remote}, max(m.Probation, 0)})
		}
	}
}

// Share makes the samples of another instance's snapshot, read from the
// record source, count in the score of each mirror, in place of what was
// read from that record before. Nothing else of it is taken: cool-downs,
// trust and pools are each instance's own.
func (s *State) Share(source string, snap Snapshot, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for key, ms := range s.mirrors {
		if _, ok := snap.Mirrors[key]; !ok {
			delete(ms.shared, source)
		}
	}
	for key, rec := range snap.Mirrors {
		samples := samplesOf(rec.Samples, now, false)
		ms := s.mirrors[key]
		if ms == nil {
			if len(samples) == 0 {
				continue
			}
			ms = &mirrorStats{samples: make([]sample, DefaultWindow)}
			s.mirrors[key] = ms
		}
		if len(samples) == 0 {
			delete(ms.shared, source)
			continue
		}
		if ms.shared == nil {
			ms.shared = map[string][]sample{}
		}
		ms.shared[source] = samples
	}
}

// Unshare forgets what was read from the record source.
func (s *State) Unshare(source string) {
	s.Share(source, Snapshot{}, time.Time{})
}

// samplesOf converts records to the samples that still count at now,
// oldest first.
func samplesOf(recs []SampleRecord, now time.Time, restored bool) []sample {
	var out []sample
	for _, r := range recs {
		// A sample no transfer could have made (another instance's record
		// is not to be trusted blindly) is left out.
		if r.Bytes < 0 || math.IsNaN(r.Seconds) || r.Seconds < 0 || r.Seconds > ForgetAfter.Seconds() {
			continue
		}
		v := sample{
			bytes:    r.Bytes,
			time:     time.Duration(r.Seconds * float64(time.Second)),
			at:       time.Unix(r.At, 0),
			restored: restored,
		}
		if v.at.After(now) {
			v.at = now // a clock ahead of ours
		}
		if weight(now.Sub(v.at)) > 0 && (v.bytes > 0 || v.time > 0) {
			out = append(out, v)
		}
	}
	slices.SortStableFunc(out, func(a, b sample) int { return a.at.Compare(b.at) })
	return out
}
