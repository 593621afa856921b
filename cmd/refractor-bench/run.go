package main

import (
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/caddy-refractor/refractor/internal/mirrorsim"
)

// cell is one scenario with one client setup: every contender's outcomes.
type cell struct {
	Scenario string `json:"scenario"`
	About    string `json:"about"`
	Clients  string `json:"clients"`
	Files    int    `json:"files"`
	Bytes    int64  `json:"bytes"`
	Largest  int64  `json:"largest"`
	Oracle   struct {
		Seconds   float64 `json:"seconds"`
		Rate      float64 `json:"rate_bps"`
		RateAfter float64 `json:"rate_after_bps,omitempty"`
		Download  float64 `json:"download_rate_bps"` // the caps one download can use
	} `json:"oracle"`
	Ranges     int                  `json:"ranges,omitempty"` // mirrors one download may use at once
	Deadline   float64              `json:"deadline_seconds"`
	DegradeAt  float64              `json:"degrade_at_seconds,omitempty"`
	TopK       int                  `json:"top_k"`
	Contenders []string             `json:"contenders"`
	Runs       map[string][]runData `json:"runs"`
	// SameSet: every machine downloads every package (the lan scenario);
	// OneMachine and OneMachinePackages are one machine's bytes, and
	// OracleOnce the oracle's time with every package fetched once (a
	// perfect LAN cache; the databases still once per machine).
	SameSet            bool    `json:"same_set,omitempty"`
	OneMachine         int64   `json:"one_machine_bytes,omitempty"`
	OneMachinePackages int64   `json:"one_machine_package_bytes,omitempty"`
	OracleOnce         float64 `json:"oracle_once_seconds,omitempty"`
}

// runData is one contender's run, as kept in the JSON report.
type runData struct {
	Run        int     `json:"run"`
	Position   int     `json:"position"` // in the run's contender order
	Wall       float64 `json:"wall_seconds"`
	Censored   bool    `json:"censored"`
	Good       int64   `json:"good_bytes"`
	Received   int64   `json:"received_bytes"`
	Files      int     `json:"files"`
	Done       int     `json:"done"`
	Failures   int     `json:"failures"`
	GaveUp     int     `json:"gave_up"`    // files that failed every attempt
	Unfinished int     `json:"unfinished"` // files not done when the deadline hit
	Corrupt    int     `json:"corrupt"`
	CPU        float64 `json:"cpu_seconds"` // this process's, during the run (and refractor-restored's process's)
	TopShare   float64 `json:"top_k_share"` // of the bytes the mirrors sent, the share of the k fastest
	// PackageRate: bytes received after the databases over the time from
	// then to the end of the run (the deadline, if it stopped the run).
	PackageRate float64 `json:"package_rate_bps"`
	Recovery    float64 `json:"recovery_seconds,omitempty"`
	Recovered   bool    `json:"recovered,omitempty"`
	// MachineWalls: when each machine had all its files (the deadline,
	// if it stopped the machine).
	MachineWalls []float64 `json:"machine_wall_seconds"`
	// MachineDBs: when each machine had its databases.
	MachineDBs []float64 `json:"machine_db_seconds"`
	// Upstream: body bytes the mirrors sent during the run, until they
	// were idle again (the pool's own fetches, such as the databases'
	// corroborating copies, included); UpstreamIndexes, those of the
	// databases (*.db).
	Upstream        int64 `json:"upstream_bytes"`
	UpstreamIndexes int64 `json:"upstream_index_bytes"`
	// CacheFiles and CacheBytes: files the clients got whole from
	// responses marked as the LAN cache's (Refractor-Mirror: cache), and
	// their bytes; OnDiskFiles and OnDiskBytes, the complete files in the
	// cache's directory after the run (refractor-cache).
	CacheFiles  int     `json:"cache_files,omitempty"`
	CacheBytes  int64   `json:"cache_bytes,omitempty"`
	OnDiskFiles int     `json:"on_disk_files,omitempty"`
	OnDiskBytes int64   `json:"on_disk_bytes,omitempty"`
	Series      []int64 `json:"series,omitempty"` // bytes received, every 100 ms
}

type jsonReport struct {
	Cells    []*cell          `json:"cells,omitempty"`
	Overhead []overheadResult `json:"overhead,omitempty"`
}

func runScenarios(o options, report *jsonReport) error {
	for _, name := range o.scenarios {
		scName, clients, limited := strings.Cut(name, "/")
		if limited {
			name = scName
		}
		var sc scenario
		switch name {
		case "static":
			sc = staticScenario(o.total)
		case "degrade":
			sc = degradeScenario(o.degradeTotal, o.degradeAt)
		case "flaky":
			sc = flakyScenario(o.total)
		case "bigfile":
			sc = bigfileScenario(o.bigfileSize, o.bigDeadline)
		case "lan":
			sc = lanScenario(o.lanTotal, o.lanDeadline)
		default:
			return fmt.Errorf("unknown scenario %q", name)
		}
		tree := mirrorsim.Arch(mirrorsim.ArchConfig{Total: sc.total, Large: sc.large, Seed: o.seed})
		cnames := o.clients
		switch {
		case limited:
			cnames = []string{clients}
		case sc.clients != nil:
			cnames = sc.clients
		}
		for _, cname := range cnames {
			var cs clientSetup
			switch cname {
			case "one":
				cs = oneClient
			case "lan":
				cs = lan
			case "cache":
				cs = lanSame
			default:
				return fmt.Errorf("unknown client setup %q", cname)
			}
			c, err := runCell(o, sc, cs, tree)
			if err != nil {
				return err
			}
			report.Cells = append(report.Cells, c)
			printCell(os.Stdout, c, sc)
		}
	}
	return nil
}

// poolSettle lets a new pool take its mirrors and read their lastsync.
const poolSettle = 300 * time.Millisecond

func runCell(o options, sc scenario, cs clientSetup, tree *mirrorsim.List) (*cell, error) {
	contenders := o.contenders
	if contenders == nil {
		contenders = firstNonNil(sc.contenders, defaultContenders)
	}
	c := &cell{
		Scenario: sc.name, About: sc.about, Clients: cs.name,
		Contenders: contenders, Runs: map[string][]runData{},
		TopK: min(5, len(sc.rates)), Ranges: sc.ranges,
	}
	if sc.ranges > 0 {
		c.TopK = min(sc.ranges, len(sc.rates))
	}
	machines := plan(tree, cs, o.seed)
	for _, m := range machines {
		c.Files += len(m.dbs) + len(m.packages)
		for _, db := range m.dbs {
			c.Bytes += db.size
		}
		for _, p := range m.packages {
			c.Bytes += p.size
			c.Largest = max(c.Largest, p.size)
		}
	}
	or := sc.oracle(machines, cs)
	c.Oracle.Seconds, c.Oracle.Rate, c.Oracle.RateAfter, c.Oracle.Download = or.seconds, or.rate, or.after, or.download
	if cs.same {
		c.SameSet = true
		for _, db := range machines[0].dbs {
			c.OneMachine += db.size
		}
		for _, p := range machines[0].packages {
			c.OneMachinePackages += p.size
		}
		c.OneMachine += c.OneMachinePackages
		c.OracleOnce = sc.oracle(onceEach(machines), cs).seconds
	}
	deadline := time.Duration(o.deadlineFactor * or.seconds * float64(time.Second))
	deadline = min(max(deadline, o.minDeadline), o.maxDeadline)
	deadline = max(deadline, sc.leastDeadline)
	if sc.name == "static" && cs == oneClient {
		// The headline cell: long enough for reverse_proxy to finish.
		deadline = max(deadline, o.staticDeadline)
	}
	if sc.degradeAt > 0 {
		deadline = sc.degradeAt + o.degradeWatch
	}
	c.Deadline = deadline.Seconds()
	c.DegradeAt = sc.degradeAt.Seconds()
	progress("%s, %s: %d files, %.0f MiB, oracle %.2f s, deadline %v", sc.name, cs.name,
		c.Files, float64(c.Bytes)/mib, or.seconds, deadline)

	for run := range o.runs {
		seed := o.seed + uint64(run)*1000
		machines := plan(tree, cs, seed)
		ms, err := sc.start(tree, seed)
		if err != nil {
			return nil, err
		}

		// refractor-warm is refractor's pool again, right after refractor's
		// own run: what a pool that has learned these mirrors does.
		// refractor-restored is a new process that restored what that run
		// learned from storage: what a pool restarted does.
		var rotating []string
		for _, name := range contenders {
			if name != "refractor-warm" && name != "refractor-restored" {
				rotating = append(rotating, name)
			}
		}
		if len(rotating) == 0 {
			ms.close()
			return nil, fmt.Errorf("refractor-warm and refractor-restored need refractor among the contenders")
		}
		// Not after a degradation: that pool learned that the fast mirrors
		// had turned slow, and the next run starts them fast again.
		follows := func(name string) bool {
			return slices.Contains(contenders, name) && slices.Contains(rotating, "refractor") && sc.degradeAt == 0
		}
		warm, restored := follows("refractor-warm"), follows("refractor-restored")
		refOpts := o.refractorOpts
		var store string // refractor's storage root, for refractor-restored
		if restored {
			if store, err = os.MkdirTemp(o.tempDir, "learned-"); err != nil {
				ms.close()
				return nil, fmt.Errorf("refractor-restored: storage: %w", err)
			}
			refOpts = storedOptions(o.refractorOpts, store)
		}

		var servers []proxyServer
		var refRoutes []any // refractor's, which refractor-restored runs again
		addrs := map[string]string{}
		for _, name := range contenders {
			addr := freeAddr()
			switch name {
			case "refractor":
				refRoutes = refractorRoute(ms.bases(), refOpts)
				servers = append(servers, proxyServer{name, addr, refRoutes})
			case "rp-random":
				servers = append(servers, proxyServer{name, addr, reverseProxyRoute(ms.hostPorts(), "random")})
			case "rp-least_conn":
				servers = append(servers, proxyServer{name, addr, reverseProxyRoute(ms.hostPorts(), "least_conn")})
			case "direct-first", "direct-best", "refractor-warm", "refractor-restored", "refractor-cache":
			default:
				ms.close()
				return nil, fmt.Errorf("unknown contender %q", name)
			}
			addrs[name] = addr
		}
		if err := loadCaddy(servers, o.logFile); err != nil {
			ms.close()
			return nil, err
		}
		time.Sleep(poolSettle)
		if o.verbose {
			var list []string
			for _, i := range ms.order {
				list = append(list, fmt.Sprintf("%s=%.1f", ms.servers[i].Addr()[len("127.0.0.1:"):], float64(sc.rates[i])/mib))
			}
			progress("  run %d mirrors in list order (port=MiB/s): %s", run+1, strings.Join(list, " "))
		}

		n := len(rotating)
		order := append(slices.Clone(rotating[run%n:]), rotating[:run%n]...)
		pos := 0
		// runOne runs the workload against base; proxyCPU, if set, is the
		// CPU time of the contender's own process, counted with this one's.
		runOne := func(name, base string, proxyCPU func() (time.Duration, error)) {
			if !ms.waitIdle(15 * time.Second) {
				progress("warning: mirrors still busy before %s", name)
			}
			ms.reset()
			before, indexesBefore := ms.sent(), ms.indexSent()
			var cpu0, cpu1 time.Duration
			var cpuErr error
			if proxyCPU != nil {
				cpu0, cpuErr = proxyCPU()
			}
			out := runWorkload(machines, cs.parallel, func(int) string { return base }, deadline)
			if proxyCPU != nil && cpuErr == nil {
				cpu1, cpuErr = proxyCPU()
			}
			if cpuErr != nil {
				progress("warning: %s: %v", name, cpuErr)
			} else {
				out.cpu += cpu1 - cpu0
			}
			after := ms.sent()
			// What the proxy still fetches once the clients are done
			// (a cache fill, a corroborating copy) is upstream too.
			if !ms.waitIdle(15 * time.Second) {
				progress("warning: mirrors still busy 15s after %s's run", name)
			}
			var upstream int64
			for i, n := range ms.sent() {
				upstream += n - before[i]
			}
			var all, top int64
			for i := range after {
				d := after[i] - before[i]
				all += d
				if i < c.TopK {
					top += d
				}
			}
			rd := runData{
				Run: run, Position: pos, Wall: out.wall.Seconds(), Censored: out.censored,
				Good: out.good, Received: out.received, Files: c.Files, Done: out.done,
				Failures: out.failures, GaveUp: out.lost, Unfinished: c.Files - out.done - out.lost - out.corrupt, Corrupt: out.corrupt,
				Series: out.series, CPU: out.cpu.Seconds(),
				Upstream: upstream, UpstreamIndexes: ms.indexSent() - indexesBefore,
				CacheFiles: out.cacheFiles, CacheBytes: out.cacheBytes,
			}
			for i, d := range out.machineWalls {
				rd.MachineWalls = append(rd.MachineWalls, d.Seconds())
				rd.MachineDBs = append(rd.MachineDBs, out.machineDBs[i].Seconds())
			}
			pos++
			if t := (out.wall - out.dbsDone).Seconds(); t > 0 {
				rd.PackageRate = float64(out.received-out.dbsReceived) / t
			}
			if all > 0 {
				rd.TopShare = float64(top) / float64(all)
			}
			if sc.degradeAt > 0 {
				d, ok := recovery(out.series, sc.degradeAt, or.after, out.wall)
				rd.Recovery, rd.Recovered = d.Seconds(), ok
				if !ok {
					rd.Recovery = (out.wall - sc.degradeAt).Seconds()
				}
			}
			c.Runs[name] = append(c.Runs[name], rd)
			if o.verbose {
				progress("  run %d %-18s %s", run+1, name, rd.summary(or.seconds, c.TopK))
				if c.SameSet {
					progress("  run %d %-18s %s", run+1, "", rd.lanSummary(c.OneMachine))
				}
			}
		}
		// refractor-cache runs refractor with a LAN cache in a fresh
		// directory, in a process of its own: this process's pools share
		// what they learn of a mirror, and refractor's would make it warm.
		// Its storage is fresh too (nothing restored).
		runCached := func(name string) error {
			dir, err := os.MkdirTemp(o.tempDir, "lan-cache-")
			if err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			defer os.RemoveAll(dir)
			routes := refractorRoute(ms.bases(), cacheOptions(o.refractorOpts, dir))
			rp, err := startProxyChild(name, routes, o.logFile)
			if err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			time.Sleep(poolSettle)
			runOne(name, rp.base, rp.cpu)
			// A fill whose last byte the clients have may still be
			// syncing before it takes its place; stopping Caddy then
			// would lose it from the count on disk.
			settleStart := time.Now()
			if !fillsSettled(filepath.Join(dir, "cache"), 10*time.Second) {
				progress("warning: %s: cache fills still in flight 10s after the run", name)
			}
			settled := time.Since(settleStart)
			if err := rp.stop(); err != nil {
				progress("warning: %s's process: %v", name, err)
			}
			rs := c.Runs[name]
			rd := &rs[len(rs)-1]
			rd.OnDiskFiles, rd.OnDiskBytes = cachedOnDisk(filepath.Join(dir, "cache"))
			if o.verbose {
				progress("  run %d %-18s kept on disk: %d files, %.1f MiB (fills settled %.2f s after the mirrors were idle)",
					run+1, "", rd.OnDiskFiles, float64(rd.OnDiskBytes)/mib, settled.Seconds())
			}
			return nil
		}
		for _, name := range order {
			if name == "refractor-cache" {
				if err := runCached(name); err != nil {
					ms.close()
					return nil, err
				}
				continue
			}
			var base string
			switch name {
			case "direct-first":
				base = ms.bases()[0]
			case "direct-best":
				base = ms.servers[0].Base() // the fastest at the start
			default:
				base = "http://" + addrs[name] + "/"
			}
			runOne(name, base, nil)
			if name != "refractor" {
				continue
			}
			ended := time.Now()
			var rp *restoredProxy
			if restored {
				// The child restores at its start, before refractor-warm runs
				// (what that teaches the pool is saved too): both start
				// from what refractor's run learned.
				if !waitRecord(store, ended, recordWait) {
					progress("warning: refractor's learned state was not saved within %v of its run; refractor-restored restores an older record, or none", recordWait)
				}
				if rp, err = startRestored(refRoutes, o.logFile); err != nil {
					ms.close()
					return nil, fmt.Errorf("refractor-restored: %w", err)
				}
				time.Sleep(poolSettle)
			}
			if warm {
				runOne("refractor-warm", base, nil)
			}
			if rp != nil {
				runOne("refractor-restored", rp.base, rp.cpu)
				if err := rp.stop(); err != nil {
					progress("warning: refractor-restored's process: %v", err)
				}
			}
		}
		if !ms.waitIdle(15 * time.Second) {
			progress("warning: mirrors still busy at the end of run %d", run+1)
		}
		ms.close()
	}
	return c, nil
}

func (r runData) summary(oracle float64, topK int) string {
	mark := ""
	if r.Censored {
		mark = ">"
	}
	s := fmt.Sprintf("%s%.2f s  %.1f MiB/s  x%.2f oracle  %d/%d files  failures %d  corrupt %d  top-%d share %.0f%%  cpu %.2f s  packages at %.1f MiB/s",
		mark, r.Wall, float64(r.Good)/mib/r.Wall, r.Wall/oracle, r.Done, r.Files, r.Failures, r.Corrupt, topK, 100*r.TopShare, r.CPU, r.PackageRate/mib)
	if r.Recovery != 0 || r.Recovered {
		m := ""
		if !r.Recovered {
			m = ">"
		}
		s += fmt.Sprintf("  recovery %s%.1f s", m, r.Recovery)
	}
	return s
}

func (r runData) lanSummary(oneMachine int64) string {
	slowest, mean := machineTimes(r)
	return fmt.Sprintf("machines: slowest %.2f s, mean %.2f s (%s; databases by %s)  upstream %.1f MiB (x%.2f one machine's bytes; databases %.1f MiB)  from the cache %d files, %.1f MiB",
		slowest, mean, joinSeconds(r.MachineWalls), joinSeconds(r.MachineDBs), float64(r.Upstream)/mib, float64(r.Upstream)/float64(oneMachine),
		float64(r.UpstreamIndexes)/mib, r.CacheFiles, float64(r.CacheBytes)/mib)
}

// machineTimes are the slowest machine's time and the machines' mean.
func machineTimes(r runData) (slowest, mean float64) {
	for _, w := range r.MachineWalls {
		slowest = max(slowest, w)
		mean += w
	}
	if n := len(r.MachineWalls); n > 0 {
		mean /= float64(n)
	}
	return slowest, mean
}

func joinSeconds(xs []float64) string {
	var out []string
	for _, x := range xs {
		out = append(out, fmt.Sprintf("%.2f", x))
	}
	return strings.Join(out, " ")
}

// cacheMinFree is refractor-cache's min_free: small, so that a busy disk
// does not turn the cache off.
const cacheMinFree = 16 * mib

// cacheOptions are the refractor options extra with a LAN cache in
// dir/cache and a file-system storage in dir/storage (these two override
// extra's), so that the pool restores nothing.
func cacheOptions(extra map[string]any, dir string) map[string]any {
	opts := map[string]any{}
	maps.Copy(opts, extra)
	opts["cache"] = map[string]any{"dir": filepath.Join(dir, "cache"), "min_free": cacheMinFree}
	opts["storage"] = map[string]any{"module": "file_system", "root": filepath.Join(dir, "storage")}
	return opts
}

// fillsSettled waits, up to limit, until the cache directory has no fill
// in flight (its tmp/ is empty).
func fillsSettled(dir string, limit time.Duration) bool {
	deadline := time.Now().Add(limit)
	for {
		if left, err := os.ReadDir(filepath.Join(dir, "tmp")); err != nil || len(left) == 0 {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// cachedOnDisk counts the complete files under a cache directory
// (sha256/xx/...), and their bytes.
func cachedOnDisk(dir string) (files int, bytes int64) {
	_ = filepath.WalkDir(filepath.Join(dir, "sha256"), func(_ string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		if fi, err := d.Info(); err == nil {
			files++
			bytes += fi.Size()
		}
		return nil
	})
	return files, bytes
}

func firstNonNil[T any](xs ...[]T) []T {
	for _, x := range xs {
		if x != nil {
			return x
		}
	}
	return nil
}
