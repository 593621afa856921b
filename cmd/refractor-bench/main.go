// Command refractor-bench measures refractor against Caddy's reverse_proxy
// and direct downloads, side by side in one process, over simulated mirrors
// (internal/mirrorsim) on 127.0.0.1. See BENCHMARKS.md for the method.
//
//	refractor-bench                  # the scenarios, 3 runs each, then the proxy overhead
//	refractor-bench -quick           # a one-minute smoke run
//	refractor-bench -mode overhead   # only the proxy overhead
//
// Each run of a scenario starts fresh mirrors (new ports, so refractor's
// pool learns from scratch) and a fresh Caddy config with one server per
// proxy contender; the contenders then run one after another over the same
// mirrors, in an order rotated from run to run. refractor-warm and
// refractor-restored follow refractor's run: its pool again, and a new
// process that restored from storage what that run learned.
// refractor-cache, in the lan scenario, is refractor with its LAN cache,
// in a process of its own (so that its pool does not learn from
// refractor's) with a fresh cache directory. Results are medians over the
// runs.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/caddy-refractor/refractor/internal/mirrorsim"
)

type options struct {
	runs           int
	mode           string
	scenarios      []string
	clients        []string
	contenders     []string
	total          int64
	degradeTotal   int64
	degradeAt      time.Duration
	deadlineFactor float64
	minDeadline    time.Duration
	maxDeadline    time.Duration
	staticDeadline time.Duration
	bigfileSize    int64
	bigDeadline    time.Duration
	lanTotal       int64
	lanDeadline    time.Duration
	degradeWatch   time.Duration
	seed           uint64
	refractorOpts  map[string]any
	logFile        string
	jsonFile       string
	verbose        bool
	tempDir        string // private to this run, removed at its end
	overhead       overheadOptions
}

// defaultContenders are the contenders of a scenario that names none of
// its own (the lan scenario runs refractor and refractor-cache).
var defaultContenders = []string{"refractor", "refractor-warm", "refractor-restored", "rp-random", "rp-least_conn", "direct-first", "direct-best"}

func main() {
	if os.Getenv(upstreamEnv) != "" {
		runUpstreamChild()
		return
	}
	if os.Getenv(restoredEnv) != "" {
		runRestoredChild()
		return
	}
	var (
		o          options
		quick      = flag.Bool("quick", false, "a one-minute smoke run: one run, smaller workloads, fewer cells")
		scenarios  = flag.String("scenarios", "static,degrade/one,flaky/one,bigfile/one,lan/cache", "scenarios to run (static, degrade, flaky, bigfile, lan), each with every -clients setup (lan: cache) or, as static/one, with one")
		clients    = flag.String("clients", "one,lan", "client setups: one (1 client x 5 downloads), lan (4 clients x 5, sharing the packages), cache (4 machines x 5, each every package)")
		contenders = flag.String("contenders", "", "contenders to run, in every scenario (default: "+strings.Join(defaultContenders, ",")+"; in the lan scenario refractor,refractor-cache)")
		total      = flag.String("total", "128MiB", "package bytes of the static and flaky scenarios")
		degTotal   = flag.String("degrade-total", "384MiB", "package bytes of the degrade scenario")
		bigSize    = flag.String("bigfile-size", "200MiB", "size of the bigfile scenario's one package")
		lanTotal   = flag.String("lan-total", "82MiB", "package bytes of the lan scenario (each machine downloads them all)")
		refOpts    = flag.String("refractor", "", `extra refractor handler options, as JSON (e.g. {"window":5})`)
		cpuProfile = flag.String("cpuprofile", "", "write a CPU profile of the whole run to this file")
	)
	flag.IntVar(&o.runs, "runs", 3, "runs of each scenario (results are medians)")
	flag.StringVar(&o.mode, "mode", "all", "scenarios, overhead, or all")
	flag.DurationVar(&o.staticDeadline, "static-deadline", 20*time.Second, "least deadline of the static scenario with one client, the headline comparison")
	flag.DurationVar(&o.bigDeadline, "bigfile-deadline", 60*time.Second, "deadline of the bigfile scenario, long enough for direct-best")
	flag.DurationVar(&o.lanDeadline, "lan-deadline", 60*time.Second, "least deadline of the lan scenario, long enough for refractor without its cache")
	flag.DurationVar(&o.degradeWatch, "degrade-watch", 9*time.Second, "the degrade scenario's deadline is this long after the degradation")
	flag.DurationVar(&o.degradeAt, "degrade-at", 3*time.Second, "when the fast mirrors degrade, after each contender starts")
	flag.Float64Var(&o.deadlineFactor, "deadline-factor", 6, "a contender's run stops at this many times the oracle's time")
	flag.DurationVar(&o.minDeadline, "min-deadline", 8*time.Second, "least deadline of a contender's run")
	flag.DurationVar(&o.maxDeadline, "max-deadline", 15*time.Second, "most deadline of a contender's run")
	flag.Uint64Var(&o.seed, "seed", 1, "seed of the tree, the mirror list orders and the download orders")
	flag.StringVar(&o.logFile, "log", "", "write Caddy's logs to this file (refractor-restored's process's to this file with .restored appended)")
	flag.StringVar(&o.jsonFile, "json", "", "write every run's raw results to this file")
	flag.BoolVar(&o.verbose, "v", false, "print each contender's run as it ends")
	o.overhead.register()
	flag.Parse()

	o.scenarios = split(*scenarios)
	o.clients = split(*clients)
	o.contenders = split(*contenders)
	var err error
	if o.total, err = mirrorsim.ParseSize(*total); err != nil {
		fatal(err)
	}
	if o.degradeTotal, err = mirrorsim.ParseSize(*degTotal); err != nil {
		fatal(err)
	}
	if o.bigfileSize, err = mirrorsim.ParseSize(*bigSize); err != nil {
		fatal(err)
	}
	if o.lanTotal, err = mirrorsim.ParseSize(*lanTotal); err != nil {
		fatal(err)
	}
	if *refOpts != "" {
		if err := json.Unmarshal([]byte(*refOpts), &o.refractorOpts); err != nil {
			fatal(fmt.Errorf("-refractor: %w", err))
		}
	}
	if *quick {
		// Smaller defaults; flags given explicitly still win.
		set := map[string]bool{}
		flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
		quickly := func(name string, apply func()) {
			if !set[name] {
				apply()
			}
		}
		quickly("runs", func() { o.runs = 1 })
		quickly("total", func() { o.total = 48 * mib })
		quickly("degrade-total", func() { o.degradeTotal = 96 * mib })
		quickly("bigfile-size", func() { o.bigfileSize = 32 * mib })
		quickly("degrade-at", func() { o.degradeAt = 1500 * time.Millisecond })
		quickly("lan-total", func() { o.lanTotal = 24 * mib })
		quickly("lan-deadline", func() { o.lanDeadline = 20 * time.Second })
		quickly("scenarios", func() { o.scenarios = []string{"static/one", "degrade/one", "flaky/one", "bigfile/one", "lan/cache"} })
		quickly("min-deadline", func() { o.minDeadline = 3 * time.Second })
		quickly("max-deadline", func() { o.maxDeadline = 5 * time.Second })
		quickly("static-deadline", func() { o.staticDeadline = 5 * time.Second })
		quickly("degrade-watch", func() { o.degradeWatch = 3 * time.Second })
		quickly("bigfile-deadline", func() { o.bigDeadline = 8 * time.Second })
		o.overhead.quick()
	}
	var cleanup func()
	o.tempDir, cleanup = privateCaddyDirs()
	defer cleanup()
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			fatal(err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			fatal(err)
		}
		defer pprof.StopCPUProfile()
	}

	printMachine(os.Stdout)
	report := &jsonReport{}
	if o.mode == "scenarios" || o.mode == "all" {
		if err := runScenarios(o, report); err != nil {
			fatal(err)
		}
	}
	if o.mode == "overhead" || o.mode == "all" {
		if err := runOverhead(o, report); err != nil {
			fatal(err)
		}
	}
	_ = caddy.Stop()
	if o.jsonFile != "" {
		b, _ := json.MarshalIndent(report, "", "  ")
		if err := os.WriteFile(o.jsonFile, b, 0o644); err != nil {
			fatal(err)
		}
	}
}

func split(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "refractor-bench:", err)
	os.Exit(1)
}

func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, time.Now().Format("15:04:05 ")+format+"\n", args...)
}

// printMachine describes the machine the numbers come from.
func printMachine(w io.Writer) {
	cpu := "unknown"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				cpu = strings.TrimSpace(v)
				break
			}
		}
	}
	commit := "unknown"
	if out, err := exec.Command("git", "describe", "--always", "--dirty").Output(); err == nil {
		commit = strings.TrimSpace(string(out))
	}
	fmt.Fprintf(w, "machine: %d CPUs (GOMAXPROCS %d), %s, %s %s/%s; commit %s; %s\n\n",
		runtime.NumCPU(), runtime.GOMAXPROCS(0), cpu, runtime.Version(), runtime.GOOS, runtime.GOARCH,
		commit, time.Now().UTC().Format(time.RFC3339))
}
