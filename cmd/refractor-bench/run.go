package main

import (
	"fmt"
	"os"
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
		default:
			return fmt.Errorf("unknown scenario %q", name)
		}
		tree := mirrorsim.Arch(mirrorsim.ArchConfig{Total: sc.total, Large: sc.large, Seed: o.seed})
		cnames := o.clients
		if limited {
			cnames = []string{clients}
		}
		for _, cname := range cnames {
			var cs clientSetup
			switch cname {
			case "one":
				cs = oneClient
			case "lan":
				cs = lan
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
	c := &cell{
		Scenario: sc.name, About: sc.about, Clients: cs.name,
		Contenders: o.contenders, Runs: map[string][]runData{},
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
		for _, name := range o.contenders {
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
			return slices.Contains(o.contenders, name) && slices.Contains(rotating, "refractor") && sc.degradeAt == 0
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
		for _, name := range o.contenders {
			addr := freeAddr()
			switch name {
			case "refractor":
				refRoutes = refractorRoute(ms.bases(), refOpts)
				servers = append(servers, proxyServer{name, addr, refRoutes})
			case "rp-random":
				servers = append(servers, proxyServer{name, addr, reverseProxyRoute(ms.hostPorts(), "random")})
			case "rp-least_conn":
				servers = append(servers, proxyServer{name, addr, reverseProxyRoute(ms.hostPorts(), "least_conn")})
			case "direct-first", "direct-best", "refractor-warm", "refractor-restored":
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
			before := ms.sent()
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
			}
		}
		for _, name := range order {
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
