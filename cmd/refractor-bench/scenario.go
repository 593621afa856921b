package main

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/caddy-refractor/refractor/internal/mirrorsim"
)

// scenario is a set of simulated mirrors and a package set to download.
type scenario struct {
	name  string
	about string
	rates []int64 // bytes per second of each mirror at the start, fastest first
	// latency of mirror i (first byte)
	latency func(i int) time.Duration
	total   int64 // bytes of packages in the tree
	large   int64 // bytes of the one large package (0: mirrorsim.Arch's default)
	// ranges: a download may take Range requests from this many mirrors
	// at once (refractor's split), so the oracle lets it use the sum of
	// the ranges fastest caps; 0: one mirror per download.
	ranges int
	// leastDeadline, if set, is the least deadline of every cell, over
	// -max-deadline.
	leastDeadline time.Duration
	// degradation: the degradeCount fastest mirrors drop to degradeTo at
	// degradeAt after each contender starts.
	degradeAt    time.Duration
	degradeTo    int64
	degradeCount int
	// flaky[i] is the probability that a request to mirror i meets a
	// random fault.
	flaky map[int]float64
	// clients are the scenario's client setups when -scenarios names it
	// alone (nil: -clients).
	clients []string
	// contenders are the scenario's contenders unless -contenders is
	// given (nil: defaultContenders).
	contenders []string
}

// clientSetup is how many client machines download, each with how many
// parallel downloads.
type clientSetup struct {
	name     string
	machines int
	parallel int
	// same: every machine downloads every package, in the same order (a
	// LAN of identical machines), instead of a share of them.
	same bool
}

var (
	oneClient = clientSetup{"1 client x 5", 1, 5, false}
	lan       = clientSetup{"LAN 4 clients x 5", 4, 5, false}
	lanSame   = clientSetup{"4 machines x 5, each every package", 4, 5, true}
)

const mib = 1 << 20

func defaultLatency(i int) time.Duration { return time.Duration(10+10*(i%3)) * time.Millisecond }

func staticScenario(total int64) scenario {
	return scenario{
		name:    "static",
		about:   "12 mirrors, static caps 0.5 to 32 MiB/s (geometric)",
		rates:   geometricDesc(12, mib/2, 32*mib),
		latency: defaultLatency,
		total:   total,
	}
}

func degradeScenario(total int64, at time.Duration) scenario {
	s := staticScenario(total)
	s.name = "degrade"
	s.degradeAt, s.degradeTo, s.degradeCount = at, mib/2, 3
	s.about = fmt.Sprintf("as static; the 3 fastest (32, 22, 15 MiB/s) drop to 0.5 MiB/s %v after the start", at)
	return s
}

func flakyScenario(total int64) scenario {
	s := staticScenario(total)
	s.name = "flaky"
	s.flaky = map[int]float64{1: 0.25, 4: 0.25, 7: 0.25, 10: 0.25}
	s.about = "as static; mirrors ranked 2, 5, 8, 11 by speed fail 25% of requests (500, 404, resets, hangs, short bodies)"
	return s
}

// bigfileScenario is one package of size bytes (and the databases) over
// mirrors of mixed speeds: can one download go faster than the fastest
// mirror?
func bigfileScenario(size int64, deadline time.Duration) scenario {
	return scenario{
		name:  "bigfile",
		about: "12 mirrors, static caps 0.25 to 12 MiB/s (12, 8, 6, 4, 3, 2, 1.5, 1, 0.75, 0.5, 0.35, 0.25); one package, which the oracle splits over the 4 fastest",
		rates: []int64{
			12 * mib, 8 * mib, 6 * mib, 4 * mib, 3 * mib, 2 * mib,
			3 * mib / 2, mib, 3 * mib / 4, mib / 2, 35 * mib / 100, mib / 4,
		},
		latency:       defaultLatency,
		total:         size,
		large:         size,
		ranges:        4,
		leastDeadline: deadline,
	}
}

// lanScenario is issue 15's LAN: machines that each download the same
// packages at once, over mirrors slow enough that a LAN cache matters.
// Its client setup is lanSame, its contenders refractor with and without
// the cache.
func lanScenario(total int64, deadline time.Duration) scenario {
	return scenario{
		name:          "lan",
		about:         "8 mirrors, static caps 0.5 to 8 MiB/s (geometric); every machine fetches the databases, then every package, in the same order (pacman -Syw on identical machines)",
		rates:         geometricDesc(8, mib/2, 8*mib),
		latency:       defaultLatency,
		total:         total,
		leastDeadline: deadline,
		clients:       []string{"cache"},
		contenders:    []string{"refractor", "refractor-cache"},
	}
}

func geometricDesc(n int, lo, hi int64) []int64 {
	r := mirrorsim.Geometric(n, lo, hi)
	slices.Reverse(r)
	return r
}

// mirrorSet is the running mirrors of one run: index i is the scenario's
// mirror i (fastest first); order is the list order given to everyone.
type mirrorSet struct {
	servers []*mirrorsim.Server
	order   []int
}

func (sc scenario) start(tree mirrorsim.Tree, seed uint64) (*mirrorSet, error) {
	ms := &mirrorSet{}
	for i, r := range sc.rates {
		c := mirrorsim.Config{Tree: tree, Rate: r, Latency: sc.latency(i), Flaky: sc.flaky[i]}
		if sc.degradeAt > 0 && i < sc.degradeCount {
			c.Schedule = []mirrorsim.Step{{At: sc.degradeAt, Rate: sc.degradeTo, Latency: c.Latency}}
		}
		s, err := mirrorsim.Listen("127.0.0.1:0", mirrorsim.New(c))
		if err != nil {
			ms.close()
			return nil, err
		}
		ms.servers = append(ms.servers, s)
	}
	ms.order = rand.New(rand.NewPCG(seed, 99)).Perm(len(sc.rates))
	return ms, nil
}

func (ms *mirrorSet) close() {
	for _, s := range ms.servers {
		_ = s.Close()
	}
}

// bases are the mirrors' base URLs in list order.
func (ms *mirrorSet) bases() []string {
	var out []string
	for _, i := range ms.order {
		out = append(out, ms.servers[i].Base())
	}
	return out
}

// hostPorts are the mirrors' host:ports in list order.
func (ms *mirrorSet) hostPorts() []string {
	var out []string
	for _, i := range ms.order {
		out = append(out, ms.servers[i].Addr())
	}
	return out
}

// reset restarts every mirror's schedule (and so its starting rate, with a
// fresh token bucket) for the next contender.
func (ms *mirrorSet) reset() {
	for _, s := range ms.servers {
		s.StartSchedule()
	}
}

// waitIdle waits until no mirror is serving a request, up to limit.
func (ms *mirrorSet) waitIdle(limit time.Duration) bool {
	deadline := time.Now().Add(limit)
	for {
		busy := false
		for _, s := range ms.servers {
			if s.Active() > 0 {
				busy = true
			}
		}
		if !busy {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// indexSent is the body bytes the mirrors have sent of the databases.
func (ms *mirrorSet) indexSent() int64 {
	var n int64
	for _, s := range ms.servers {
		n += s.BytesSentMatching(isIndex)
	}
	return n
}

func isIndex(name string) bool { return strings.HasSuffix(name, ".db") }

func (ms *mirrorSet) sent() []int64 {
	out := make([]int64, len(ms.servers))
	for i, s := range ms.servers {
		out[i] = s.BytesSent()
	}
	return out
}

// plan splits the package set among the machines: each fetches the
// database, then its share of the packages (round robin over a shuffled
// order, the same for every contender of a run), or, with cs.same, every
// package in that order.
func plan(tree *mirrorsim.List, cs clientSetup, seed uint64) []machine {
	pkgs := tree.Packages()
	rand.New(rand.NewPCG(seed, 5)).Shuffle(len(pkgs), func(i, j int) { pkgs[i], pkgs[j] = pkgs[j], pkgs[i] })
	var dbs []fileRef
	for _, name := range []string{"core/os/x86_64/core.db", "extra/os/x86_64/extra.db"} {
		if db, ok := tree.Lookup(name); ok {
			dbs = append(dbs, ref(db))
		}
	}
	ms := make([]machine, cs.machines)
	for i := range ms {
		ms[i].dbs = dbs
	}
	for i, p := range pkgs {
		if cs.same {
			for j := range ms {
				ms[j].packages = append(ms[j].packages, ref(p))
			}
			continue
		}
		m := &ms[i%cs.machines]
		m.packages = append(m.packages, ref(p))
	}
	return ms
}

// onceEach is the workload as a perfect LAN cache sees it upstream: every
// machine's databases (indexes are not cached), and the first machine's
// packages only (the others have the same).
func onceEach(ms []machine) []machine {
	out := make([]machine, len(ms))
	for i, m := range ms {
		out[i].dbs = m.dbs
	}
	if len(ms) > 0 {
		out[0].packages = ms[0].packages
	}
	return out
}

// oracle is the best time the mirrors' caps allow for the workload: the
// database phase (every machine fetches the databases at once) and the package
// phase, each one first-byte latency plus the bytes over the sum of the
// fastest caps that as many downloads as run at once can use (a download
// uses one mirror, or sc.ranges), and never less than the largest package
// over the caps one download can use. Faulty mirrors are left out (a
// perfect balancer avoids them); a degradation changes the caps at its
// time.
type oracle struct {
	seconds float64
	rate    float64 // bytes per second in the package phase, before any degradation
	after   float64 // after the degradation, or 0
	// download is the sum of the caps one download can use (the
	// fastest, or the sc.ranges fastest).
	download float64
}

func (sc scenario) oracle(ms []machine, cs clientSetup) oracle {
	healthy := func(degraded bool) []float64 {
		var caps []float64
		for i, r := range sc.rates {
			if sc.flaky[i] > 0 {
				continue
			}
			if degraded && i < sc.degradeCount {
				r = sc.degradeTo
			}
			caps = append(caps, float64(r))
		}
		slices.Sort(caps)
		slices.Reverse(caps)
		return caps
	}
	topSum := func(caps []float64, k int) float64 {
		var s float64
		for _, c := range caps[:min(k, len(caps))] {
			s += c
		}
		return s
	}
	lat := sc.latency(0).Seconds()
	for i := range sc.rates {
		lat = min(lat, sc.latency(i).Seconds())
	}
	caps := healthy(false)
	var dbBytes, pkgBytes, largest float64
	pkgs := 0
	for _, m := range ms {
		for _, db := range m.dbs {
			dbBytes += float64(db.size)
		}
		for _, p := range m.packages {
			pkgBytes += float64(p.size)
			largest = max(largest, float64(p.size))
		}
		pkgs += len(m.packages)
	}
	perDownload := max(sc.ranges, 1)
	k := min(cs.machines*cs.parallel, max(pkgs, 1)) * perDownload
	o := oracle{rate: topSum(caps, k), download: topSum(caps, perDownload)}
	dbTime := lat + dbBytes/topSum(caps, cs.machines)
	pkgTime := lat + max(pkgBytes/o.rate, largest/o.download)
	if sc.degradeAt > 0 {
		o.after = topSum(healthy(true), k)
		t := sc.degradeAt.Seconds()
		if dbTime+pkgTime > t {
			// What is left at the degradation goes at the new rate.
			left := pkgBytes - max(t-dbTime-lat, 0)*o.rate
			pkgTime = t - dbTime + max(left/o.after, 0)
		}
	}
	o.seconds = dbTime + pkgTime
	return o
}

// recovery is how long after the degradation the contender's throughput
// took to come back within 1.5x of the new oracle rate: the start of the
// first one-second window after the degradation whose rate, and the next
// window's (if the run lasted that long), reach after/1.5. ok is false if
// it never did.
func recovery(series []int64, at time.Duration, after float64, end time.Duration) (time.Duration, bool) {
	target := after / 1.5
	win := int(time.Second / sampleTick)
	rate := func(i int) float64 { // bytes per second over the window starting at tick i
		j := min(i+win, len(series)-1)
		if j <= i {
			return 0
		}
		return float64(series[j]-series[i]) / (float64(j-i) * sampleTick.Seconds())
	}
	endTick := int(end / sampleTick)
	for i := int(at / sampleTick); i+win < len(series); i++ {
		if rate(i) < target {
			continue
		}
		if i+2*win >= endTick || rate(i+win) >= target {
			return time.Duration(i)*sampleTick - at, true
		}
	}
	return 0, false
}
