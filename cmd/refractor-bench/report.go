package main

import (
	"fmt"
	"io"
	"slices"
	"strings"
)

// median returns the median of xs and whether it is a lower bound (a
// censored value is one). For an even count it is the mean of the two
// middle values.
func median(xs []float64, censored []bool) (float64, bool) {
	type v struct {
		x float64
		c bool
	}
	vs := make([]v, len(xs))
	for i := range xs {
		vs[i] = v{xs[i], censored != nil && censored[i]}
	}
	slices.SortFunc(vs, func(a, b v) int {
		switch {
		case a.x < b.x:
			return -1
		case a.x > b.x:
			return 1
		}
		return 0
	})
	n := len(vs)
	if n == 0 {
		return 0, false
	}
	if n%2 == 1 {
		return vs[n/2].x, vs[n/2].c
	}
	a, b := vs[n/2-1], vs[n/2]
	return (a.x + b.x) / 2, a.c || b.c
}

type summary struct {
	wall, rate, share, recovery    float64
	wallMin, wallMax               float64
	done, files                    float64
	gaveUp                         int
	wallCensored, recoveryCensored bool
	failures, corrupt              int
	censoredRuns, runs             int
}

func summarize(rs []runData) summary {
	var walls, rates, shares, recs, dones []float64
	var cens, recCens []bool
	var s summary
	for _, r := range rs {
		walls = append(walls, r.Wall)
		cens = append(cens, r.Censored)
		rates = append(rates, float64(r.Good)/mib/r.Wall)
		shares = append(shares, r.TopShare)
		recs = append(recs, r.Recovery)
		recCens = append(recCens, !r.Recovered)
		s.failures += r.Failures
		s.gaveUp += r.GaveUp
		dones = append(dones, float64(r.Done))
		s.files = float64(r.Files)
		s.corrupt += r.Corrupt
		if r.Censored {
			s.censoredRuns++
		}
	}
	s.runs = len(rs)
	s.wall, s.wallCensored = median(walls, cens)
	s.wallMin, s.wallMax = slices.Min(walls), slices.Max(walls)
	s.done, _ = median(dones, nil)
	s.rate, _ = median(rates, nil)
	s.share, _ = median(shares, nil)
	s.recovery, s.recoveryCensored = median(recs, recCens)
	return s
}

func gt(b bool) string {
	if b {
		return ">"
	}
	return ""
}

func printCell(w io.Writer, c *cell, sc scenario) {
	fmt.Fprintf(w, "### %s, %s\n\n", c.Scenario, c.Clients)
	fmt.Fprintf(w, "%s. %d files, %.0f MiB (largest %.0f MiB). Oracle %.2f s (%.1f MiB/s over the top %d caps",
		c.About, c.Files, float64(c.Bytes)/mib, float64(c.Largest)/mib, c.Oracle.Seconds, c.Oracle.Rate/mib, c.TopK)
	if c.Oracle.RateAfter > 0 {
		fmt.Fprintf(w, ", %.1f MiB/s after the degradation", c.Oracle.RateAfter/mib)
	}
	fmt.Fprintf(w, "). Deadline %.1f s. Median of %d runs.\n\n", c.Deadline, len(c.Runs[c.Contenders[0]]))
	degrade := c.DegradeAt > 0
	head := "| contender | wall s | (min-max) | MiB/s | x oracle | x refractor's time | files done | failures | gave up | corrupt | top-%d share |"
	sep := "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
	if degrade {
		head += " recovery s |"
		sep += "---:|"
	}
	fmt.Fprintf(w, head+"\n%s\n", c.TopK, sep)
	ref, hasRef := c.Runs["refractor"]
	var refWall float64
	if hasRef {
		refWall = summarize(ref).wall
	}
	for _, name := range c.Contenders {
		if len(c.Runs[name]) == 0 {
			continue // refractor-warm after a degradation
		}
		s := summarize(c.Runs[name])
		vsRef := "-"
		if hasRef && name != "refractor" {
			vsRef = fmt.Sprintf("%s%.2f", gt(s.wallCensored), s.wall/refWall)
		}
		fmt.Fprintf(w, "| %s | %s%.2f | %.1f-%.1f | %.1f | %s%.2f | %s | %.0f/%.0f | %d | %d | %d | %.0f%% |",
			name, gt(s.wallCensored), s.wall, s.wallMin, s.wallMax, s.rate, gt(s.wallCensored), s.wall/c.Oracle.Seconds, vsRef,
			s.done, s.files, s.failures, s.gaveUp, s.corrupt, 100*s.share)
		if degrade {
			fmt.Fprintf(w, " %s%.1f |", gt(s.recoveryCensored), s.recovery)
		}
		fmt.Fprintln(w)
	}
	printRestored(w, c)
	printBigfile(w, c)
	fmt.Fprintf(w, "\n%s\n", strings.TrimSpace(`
wall: median time to download every file (">": the deadline stopped the median run, so the time is a
lower bound). MiB/s: checked bytes over wall time. files done: median. failures, gave up, corrupt:
totals over all runs (failed attempts, which the client retries up to 3 times; files that failed all
3; files with wrong bytes or short but ended cleanly). top-k share: of the bytes the mirrors sent,
the share sent by the k fastest (at the start).`))
	if degrade {
		fmt.Fprintln(w, "recovery: seconds from the degradation until throughput is back within 1.5x of the new oracle rate (\">\": never, before the run ended).")
	}
	fmt.Fprintln(w)
}

// printRestored compares refractor-restored, a pool restarted from
// storage, with refractor's pool cold and warm (median walls).
func printRestored(w io.Writer, c *cell) {
	restored := c.Runs["refractor-restored"]
	if len(restored) == 0 {
		return
	}
	r := summarize(restored)
	fmt.Fprintf(w, "\nrefractor-restored (a new process that restored from storage what refractor's run learned): %s%.2f s", gt(r.wallCensored), r.wall)
	for _, o := range []struct{ name, time string }{{"refractor-warm", "refractor-warm's time"}, {"refractor", "refractor's cold time"}} {
		if runs := c.Runs[o.name]; len(runs) > 0 {
			s := summarize(runs)
			fmt.Fprintf(w, ", x%s%.2f %s (%s%.2f s)", gt(r.wallCensored), r.wall/s.wall, o.time, gt(s.wallCensored), s.wall)
		}
	}
	fmt.Fprintln(w, ".")
}

// The bigfile issue's targets: the file at this fraction of the sum of the
// caps one download can use (the 4 fastest), and refractor this many times
// faster than direct-best.
const (
	bigfileRateTarget    = 0.8
	bigfileSpeedupTarget = 2.0
)

// printBigfile compares, in a cell whose downloads may use several mirrors,
// each contender's package rate with the sum of the caps one download can
// use, and refractor's time with direct-best's (median walls).
func printBigfile(w io.Writer, c *cell) {
	if c.Ranges == 0 {
		return
	}
	sum := c.Oracle.Download
	fmt.Fprintf(w, "\nsum of the %d fastest caps: %.1f MiB/s; the target, %.1fx of it: %.1f MiB/s.\n",
		c.Ranges, sum/mib, bigfileRateTarget, bigfileRateTarget*sum/mib)
	var rates []string
	for _, name := range c.Contenders {
		rs := c.Runs[name]
		if len(rs) == 0 {
			continue
		}
		var xs []float64
		for _, r := range rs {
			xs = append(xs, r.PackageRate)
		}
		m, _ := median(xs, nil)
		rates = append(rates, fmt.Sprintf("%s %.1f MiB/s (%.2f)", name, m/mib, m/sum))
	}
	fmt.Fprintf(w, "package rate (bytes received after the databases, over the time from then to the end of the run, median) and its fraction of that sum: %s.\n",
		strings.Join(rates, ", "))
	ref, best := c.Runs["refractor"], c.Runs["direct-best"]
	if len(ref) == 0 || len(best) == 0 {
		return
	}
	r, b := summarize(ref), summarize(best)
	// A censored time is a lower bound: so is the ratio if only
	// direct-best's is, and it is an upper bound if only refractor's is.
	mark := ""
	switch {
	case r.wallCensored && b.wallCensored:
		mark = "?"
	case b.wallCensored:
		mark = ">"
	case r.wallCensored:
		mark = "<"
	}
	fmt.Fprintf(w, "refractor's speed-up over direct-best (direct-best's time / refractor's): x%s%.2f (%s%.2f s / %s%.2f s); the target is x%.0f.\n",
		mark, b.wall/r.wall, gt(b.wallCensored), b.wall, gt(r.wallCensored), r.wall, bigfileSpeedupTarget)
}
