package pool

import (
	"math"
	"slices"
	"testing"
	"testing/synctest"
	"time"
)

func newStats(window int) *mirrorStats {
	return NewState().stats("http://m.example/", window)
}

func near(a, b float64) bool { return math.Abs(a-b) <= 1e-9*math.Max(math.Abs(a), math.Abs(b)) }

// oneSecondAt is a sample of a transfer of one second at rate.
func oneSecondAt(rate float64) sample {
	return sample{bytes: int64(rate), time: time.Second, at: time.Now()}
}

// rates are the samples' rates, in bytes per second.
func rates(samples []sample) []float64 {
	out := make([]float64, len(samples))
	for i, s := range samples {
		out[i] = float64(s.bytes) / s.time.Seconds()
	}
	return out
}

// A score is the throughput of the last Window samples only: older samples drop
// out of the ring buffer.
func TestStatsWindow(t *testing.T) {
	ms := newStats(3)
	if ms.score() != 0 || ms.count != 0 {
		t.Fatalf("empty stats: score %v count %d", ms.score(), ms.count)
	}
	for i, r := range []float64{100, 200, 300} {
		if !ms.addTransfer(int64(r), time.Second, 1) {
			t.Fatalf("transfer %d was not a sample", i)
		}
	}
	if got := ms.score(); got != 200 {
		t.Fatalf("score of 100, 200, 300 = %v, want 200", got)
	}
	// The window is full: each new sample pushes out the oldest.
	ms.addTransfer(1000, time.Second, 1)
	if got := ms.score(); got != 500 { // (200+300+1000)/3
		t.Fatalf("score after 100 dropped out = %v, want 500", got)
	}
	for range 3 {
		ms.addTransfer(10, time.Second, 1)
	}
	if got := ms.score(); got != 10 {
		t.Fatalf("score after a window of 10s = %v, want 10 (older samples must not count)", got)
	}
	if ms.count != 3 {
		t.Fatalf("count = %d, want the window, 3", ms.count)
	}
	if got := rates(ms.recent(3)); !slices.Equal(got, []float64{10, 10, 10}) {
		t.Fatalf("recent = %v", got)
	}
}

// A fast mirror that turns slow falls as fast as the window allows.
func TestStatsWindowForgetsAGoodPast(t *testing.T) {
	ms := newStats(DefaultWindow)
	for range 1000 {
		ms.addTransfer(100<<20, time.Second, 1)
	}
	for range DefaultWindow {
		ms.addTransfer(1<<10, time.Second, 1)
	}
	if got := ms.score(); got != 1<<10 {
		t.Fatalf("score = %v, want 1 KiB/s once a whole window was slow", got)
	}
}

// The score is the window's bytes over its time: a long transfer weighs more
// than a short one, so a burst of quick small samples cannot hide that a
// mirror is slow on the transfers that take time.
func TestStatsScoreWeighsByTime(t *testing.T) {
	ms := newStats(4)
	ms.addTransfer(10<<20, time.Second, 1)   // 10 MiB/s for a second
	ms.addTransfer(1<<20, 10*time.Second, 1) // 0.1 MiB/s for ten
	want := float64(11<<20) / 11             // 1 MiB/s, not the mean 5.05
	if got := ms.score(); !near(got, want) {
		t.Fatalf("score = %v, want %v", got, want)
	}
}

// A large transfer is timed from its first byte; a small one also counts
// the wait for the answer, in proportion to how small it is.
func TestTransferTime(t *testing.T) {
	const minBytes = 1000
	wait, body := 100*time.Millisecond, 10*time.Millisecond
	for _, c := range []struct {
		n    int64
		want time.Duration
	}{
		{0, 110 * time.Millisecond},
		{250, 85 * time.Millisecond},
		{500, 60 * time.Millisecond},
		{1000, 10 * time.Millisecond},
		{5000, 10 * time.Millisecond},
	} {
		if got := transferTime(c.n, wait, body, minBytes); got != c.want {
			t.Errorf("transferTime(%d bytes) = %v, want %v", c.n, got, c.want)
		}
	}
	if got := transferTime(10, wait, body, 0); got != body {
		t.Errorf("with no sample minimum: %v, want the body time", got)
	}
}

// A failure is a sample of no bytes that costs its penalty time, counts in a
// streak that a success ends, and in the lifetime failure counter.
func TestStatsFailureIsZeroSample(t *testing.T) {
	ms := newStats(4)
	ms.addTransfer(400, time.Second, 1)
	ms.addFailure(time.Second)
	if ms.count != 2 || ms.score() != 200 {
		t.Fatalf("after 400 B/s and a failure: count %d score %v, want 2 and 200", ms.count, ms.score())
	}
	ms.addFailure(time.Second)
	if ms.failStreak != 2 || ms.failures != 2 {
		t.Fatalf("failStreak %d failures %d, want 2 and 2", ms.failStreak, ms.failures)
	}
	ms.addTransfer(400, time.Second, 1)
	if ms.failStreak != 0 || ms.failures != 2 {
		t.Fatalf("after a success: failStreak %d failures %d, want 0 and 2", ms.failStreak, ms.failures)
	}
	// A window of failures scores 0.
	for range 4 {
		ms.addFailure(time.Second)
	}
	if ms.score() != 0 {
		t.Fatalf("score of a window of failures = %v", ms.score())
	}
}

// Transfers smaller than MinSampleBytes are summed, bytes and time, until
// the sum reaches it, and then make one sample of sum(bytes)/sum(time).
func TestStatsCoalescesSmallTransfers(t *testing.T) {
	ms := newStats(10)
	for i := range 3 {
		if ms.addTransfer(300, time.Millisecond, 1000) {
			t.Fatalf("small transfer %d made a sample on its own", i)
		}
	}
	if ms.count != 0 {
		t.Fatalf("count = %d after 900 of 1000 bytes", ms.count)
	}
	if !ms.addTransfer(300, time.Millisecond, 1000) {
		t.Fatal("the transfer that brought the sum to 1200 >= 1000 bytes made no sample")
	}
	if ms.count != 1 {
		t.Fatalf("count = %d, want 1 sample for the 4 transfers", ms.count)
	}
	if got, want := ms.score(), 1200/0.004; !near(got, want) {
		t.Fatalf("coalesced sample = %v, want %v (1200 B in 4 ms)", got, want)
	}
	// The sum starts again from zero.
	if ms.addTransfer(300, time.Millisecond, 1000) {
		t.Fatal("the pending sum was not reset after a sample")
	}
}

// Coalescing weighs by time, so one fast small transfer does not flatter a
// slow mirror: the sample is total bytes over total time, not a mean of
// per-transfer rates.
func TestStatsCoalescingIsNotAMeanOfRates(t *testing.T) {
	ms := newStats(10)
	ms.addTransfer(100, time.Millisecond, 200)            // 100 kB/s
	ms.addTransfer(100, 999*time.Millisecond, 200)        // ~100 B/s
	if got, want := ms.score(), 200.0; !near(got, want) { // 200 B in 1 s
		t.Fatalf("sample = %v, want %v", got, want)
	}
}

// A transfer at least MinSampleBytes is a sample by itself, and a zero
// duration does not divide by zero.
func TestStatsLargeTransferAndZeroDuration(t *testing.T) {
	ms := newStats(10)
	if !ms.addTransfer(1000, 2*time.Second, 1000) || ms.score() != 500 {
		t.Fatalf("score = %v, want 500", ms.score())
	}
	ms = newStats(10)
	ms.addTransfer(1000, 0, 1000)
	if s := ms.score(); math.IsInf(s, 0) || math.IsNaN(s) || s <= 0 {
		t.Fatalf("score of an instant transfer = %v", s)
	}
}

// State.stats resizes an existing window, keeping the newest samples.
func TestStateStatsResize(t *testing.T) {
	s := NewState()
	ms := s.stats("m", 5)
	for _, r := range []float64{1, 2, 3, 4, 5} {
		ms.push(oneSecondAt(r))
	}
	if s.stats("m", 3) != ms {
		t.Fatal("stats of a known mirror were replaced")
	}
	if got := rates(ms.recent(10)); !slices.Equal(got, []float64{3, 4, 5}) {
		t.Fatalf("after shrinking to 3: %v, want [3 4 5]", got)
	}
	s.stats("m", 6)
	if got := rates(ms.recent(10)); !slices.Equal(got, []float64{3, 4, 5}) || len(ms.samples) != 6 {
		t.Fatalf("after growing to 6: %v (len %d), want [3 4 5]", got, len(ms.samples))
	}
	ms.push(oneSecondAt(6))
	if ms.score() != 4.5 {
		t.Fatalf("score = %v, want 4.5", ms.score())
	}
}

func TestStateCoolingDownExpires(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := NewState()
		now := time.Now()
		s.cooldown["m"] = now.Add(time.Minute)
		if !s.coolingDown("m", now) || !s.coolingDown("m", now.Add(time.Minute-1)) {
			t.Fatal("not cooling down before the end of the cool-down")
		}
		if s.coolingDown("m", now.Add(time.Minute)) {
			t.Fatal("still cooling down at its end")
		}
		if _, ok := s.cooldown["m"]; ok {
			t.Fatal("an expired cool-down was kept")
		}
		if s.coolingDown("other", now) {
			t.Fatal("an unknown mirror is cooling down")
		}
	})
}

func TestConfigDefaults(t *testing.T) {
	var c Config
	c.setDefaults()
	if c.Workers != DefaultWorkers || c.Window != DefaultWindow || c.Resign != DefaultResign ||
		c.TrialSamples != DefaultTrialSamples || c.MinSampleBytes != DefaultMinSampleBytes ||
		c.Cooldown != DefaultCooldown || c.EvictAfter != DefaultEvictAfter || c.MaxQueue != DefaultMaxQueue {
		t.Fatalf("defaults not applied: %+v", c)
	}
	if c.State == nil || c.Logger == nil || c.Observer == nil {
		t.Fatal("nil State, Logger or Observer after setDefaults")
	}
	// A trial cannot need more samples than the window holds.
	c = Config{Window: 2, TrialSamples: 5, SyncFile: "-"}
	c.setDefaults()
	if c.TrialSamples != 2 {
		t.Fatalf("TrialSamples = %d with Window 2, want 2", c.TrialSamples)
	}
	if c.SyncFile != "" {
		t.Fatalf(`SyncFile "-" became %q, want ""`, c.SyncFile)
	}
}
