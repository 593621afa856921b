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
	printLAN(w, c)
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

// The LAN cache issue's targets (issue 15): with the cache, the mirrors
// send at most this many times one machine's bytes, and the slowest
// machine takes at most this fraction of the time it takes without.
const (
	lanUpstreamTarget = 1.1
	lanWallTarget     = 0.5
)

// lanRow is one contender's run, or medians, in the LAN cache tables.
type lanRow struct {
	slowest, mean      float64
	censored           bool
	upstream, indexes  float64 // bytes
	cacheFiles         float64
	cacheBytes         float64
	onDisk, onDiskSize float64
}

func lanRowOf(r runData) lanRow {
	slowest, mean := machineTimes(r)
	return lanRow{
		slowest: slowest, mean: mean, censored: r.Censored,
		upstream: float64(r.Upstream), indexes: float64(r.UpstreamIndexes),
		cacheFiles: float64(r.CacheFiles), cacheBytes: float64(r.CacheBytes),
		onDisk: float64(r.OnDiskFiles), onDiskSize: float64(r.OnDiskBytes),
	}
}

// lanMedians are the medians, each over the runs, of a contender's rows.
func lanMedians(rs []runData) lanRow {
	var m lanRow
	col := func(f func(lanRow) float64) float64 {
		var xs []float64
		for _, r := range rs {
			xs = append(xs, f(lanRowOf(r)))
		}
		v, _ := median(xs, nil)
		return v
	}
	var slowest []float64
	var cens []bool
	for _, r := range rs {
		l := lanRowOf(r)
		slowest = append(slowest, l.slowest)
		cens = append(cens, l.censored)
	}
	m.slowest, m.censored = median(slowest, cens)
	m.mean = col(func(l lanRow) float64 { return l.mean })
	m.upstream = col(func(l lanRow) float64 { return l.upstream })
	m.indexes = col(func(l lanRow) float64 { return l.indexes })
	m.cacheFiles = col(func(l lanRow) float64 { return l.cacheFiles })
	m.cacheBytes = col(func(l lanRow) float64 { return l.cacheBytes })
	m.onDisk = col(func(l lanRow) float64 { return l.onDisk })
	m.onDiskSize = col(func(l lanRow) float64 { return l.onDiskSize })
	return m
}

// printLAN prints, for a cell whose machines each download every package,
// the machines' times, what the mirrors sent against one machine's bytes,
// and what came from the cache: per run, then medians, then the targets.
func printLAN(w io.Writer, c *cell) {
	if !c.SameSet || c.OneMachine == 0 {
		return
	}
	one, onePkgs := float64(c.OneMachine), float64(c.OneMachinePackages)
	fmt.Fprintf(w, "\nOne machine's files: %.1f MiB (packages %.1f MiB, databases %.1f MiB). Oracle with every package fetched once (a perfect LAN cache; databases once per machine): %.2f s.\n\n",
		one/mib, onePkgs/mib, (one-onePkgs)/mib, c.OracleOnce)
	head := "| contender | run | slowest machine s | mean machine s | x cache-off (slowest) | x cache-off (mean) | upstream MiB | x one machine | databases MiB | packages upstream x one set | from the cache: files, MiB | on disk: files, MiB |\n" +
		"|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
	fmt.Fprint(w, head)
	off, hasOff := c.Runs["refractor"]
	var offMed lanRow
	if hasOff {
		offMed = lanMedians(off)
	}
	row := func(name, run string, l, base lanRow, hasBase bool) {
		vs := func(x, b float64) string {
			if !hasBase || name == "refractor" || b == 0 {
				return "-"
			}
			return fmt.Sprintf("%.2f", x/b)
		}
		fmt.Fprintf(w, "| %s | %s | %s%.2f | %.2f | %s | %s | %.1f | %.2f | %.1f | %.2f | %.0f, %.1f | %.0f, %.1f |\n",
			name, run, gt(l.censored), l.slowest, l.mean, vs(l.slowest, base.slowest), vs(l.mean, base.mean),
			l.upstream/mib, l.upstream/one, l.indexes/mib, (l.upstream-l.indexes)/onePkgs,
			l.cacheFiles, l.cacheBytes/mib, l.onDisk, l.onDiskSize/mib)
	}
	for _, name := range c.Contenders {
		rs := c.Runs[name]
		for i, r := range rs {
			// Against the cache-off run of the same run, when there is one.
			var base lanRow
			ok := hasOff && i < len(off)
			if ok {
				base = lanRowOf(off[i])
			}
			row(name, fmt.Sprint(r.Run+1), lanRowOf(r), base, ok)
		}
	}
	for _, name := range c.Contenders {
		if rs := c.Runs[name]; len(rs) > 0 {
			row(name, "median", lanMedians(rs), offMed, hasOff)
		}
	}
	fmt.Fprintf(w, "\n%s\n", strings.TrimSpace(`
slowest machine: when the last machine had every file (">": the deadline stopped it); mean: the
machines' mean. x cache-off: against refractor without the cache, in the same run (median rows:
median against median). upstream: body bytes the mirrors sent, until they were idle after the run
(the pool's own fetches included); x one machine: over one machine's files (databases and
packages). databases: of upstream, the *.db files. packages upstream x one set: the rest, over one
machine's packages. from the cache: files the clients got from responses marked Refractor-Mirror:
cache. on disk: complete files in the cache directory after the run. Medians are per column.`))
	on, hasOn := c.Runs["refractor-cache"]
	if !hasOn || !hasOff {
		return
	}
	onMed := lanMedians(on)
	verdict := func(x, target float64) string {
		if x <= target {
			return "met"
		}
		return fmt.Sprintf("missed by %.0f%%", 100*(x/target-1))
	}
	up := onMed.upstream / one
	fmt.Fprintf(w, "\nTargets (issue 15), medians: with the cache the mirrors sent x%.2f one machine's bytes (target x%.1f: %s; packages alone x%.2f one set);",
		up, lanUpstreamTarget, verdict(up, lanUpstreamTarget), (onMed.upstream-onMed.indexes)/onePkgs)
	slow := onMed.slowest / offMed.slowest
	mark := ""
	if offMed.censored && !onMed.censored {
		mark = "<"
	}
	fmt.Fprintf(w, " the slowest machine took x%s%.2f the cache-off time (%s%.2f s against %s%.2f s; target x%.1f: %s), the mean machine x%.2f; the slowest machine with the cache took x%.2f the oracle with every package fetched once.\n",
		mark, slow, gt(onMed.censored), onMed.slowest, gt(offMed.censored), offMed.slowest, lanWallTarget, verdict(slow, lanWallTarget), onMed.mean/offMed.mean, onMed.slowest/c.OracleOnce)
	fmt.Fprintln(w, "Cache statistics from the admin API (GET /refractor/cache): not available, the benchmark runs Caddy with its admin endpoint off; \"from the cache\" and \"on disk\" above stand for them.")
}
