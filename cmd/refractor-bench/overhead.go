package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/caddy-refractor/refractor/internal/mirrorsim"
)

// The proxy overhead is measured against one fast, unthrottled upstream
// that runs in a child process (this program, started again with
// upstreamEnv set), so that the CPU and memory this process uses are the
// proxy's and the clients' only. The clients' own share is measured by the
// direct contender and subtracted.

const upstreamEnv = "REFRACTOR_BENCH_UPSTREAM"

// heapProfileDir, if set, receives a heap profile at the end of each slow
// clients test.
var heapProfileDir string

type overheadOptions struct {
	big        string
	medium     string
	streams    int
	slow       int
	hold       time.Duration
	runs       int
	bigSize    int64
	medSize    int64
	tests      string
	contenders string
}

func (o *overheadOptions) register() {
	flag.StringVar(&o.big, "overhead-big", "2GiB", "size of the file of the single-stream test")
	flag.StringVar(&o.medium, "overhead-medium", "32MiB", "size of the file each concurrent stream downloads")
	flag.IntVar(&o.streams, "overhead-streams", 64, "concurrent streams")
	flag.IntVar(&o.slow, "overhead-slow", 1000, "slow clients of the memory test")
	flag.DurationVar(&o.hold, "overhead-hold", 2*time.Second, "how long the slow clients stay connected once all are served")
	flag.StringVar(&o.tests, "overhead-tests", "single,streams,slow", "overhead tests to run")
	flag.StringVar(&o.contenders, "overhead-contenders", strings.Join(overheadContenders, ","), "overhead contenders to run (direct is the baseline the proxy CPU is computed from)")
	flag.StringVar(&heapProfileDir, "heapprofile-dir", "", "write a heap profile at the end of each slow-clients test into this directory")
	flag.IntVar(&o.runs, "overhead-runs", 3, "runs of the overhead tests (results are medians)")
}

func (o *overheadOptions) quick() {
	o.big, o.medium, o.streams, o.slow, o.hold, o.runs = "256MiB", "16MiB", 16, 200, time.Second, 1
}

type overheadResult struct {
	Test      string  `json:"test"`
	Contender string  `json:"contender"`
	Run       int     `json:"run"`
	Bytes     int64   `json:"bytes"`
	Wall      float64 `json:"wall_seconds"`
	CPU       float64 `json:"cpu_seconds"` // this process: proxy and clients
	InFlight  int     `json:"in_flight,omitempty"`
	RSSBase   int64   `json:"rss_base_bytes,omitempty"`
	RSSPeak   int64   `json:"rss_peak_bytes,omitempty"`
	LiveBase  int64   `json:"live_base_bytes,omitempty"` // Go heap and stacks in use after a GC
	Live      int64   `json:"live_bytes,omitempty"`
	PeekLive  int64   `json:"peek_live_bytes,omitempty"` // of Live, refractor's body blocks (its peek and what waits for the client)
	StackBase int64   `json:"stack_base_bytes,omitempty"`
	Stack     int64   `json:"stack_bytes,omitempty"` // of Live, goroutine stacks
	Errors    int     `json:"errors"`
}

// upstream is the child process serving the files.
type upstream struct {
	*child
	url string // http://127.0.0.1:port
}

func startUpstream(big, medium int64) (*upstream, error) {
	c, err := startChild(fmt.Sprintf("%s=%d,%d", upstreamEnv, big, medium))
	if err != nil {
		return nil, fmt.Errorf("upstream child: %w", err)
	}
	return &upstream{child: c, url: c.ready}, nil
}

// workerPrefix lets one upstream appear as many mirrors to refractor, whose
// pool takes each mirror URL once: /w0001/repo/... is /repo/....
var workerPrefix = regexp.MustCompile(`^/w[0-9]+/`)

// runUpstreamChild is the upstream child's main: it serves the overhead
// files without any cap and exits when its stdin closes.
func runUpstreamChild() {
	var big, medium int64
	if _, err := fmt.Sscanf(os.Getenv(upstreamEnv), "%d,%d", &big, &medium); err != nil {
		fatal(fmt.Errorf("upstream child: %w", err))
	}
	m := mirrorsim.New(mirrorsim.Config{Tree: mirrorsim.NewList(
		mirrorsim.GeneratedFile("big.pkg.tar.zst", big),
		mirrorsim.GeneratedFile("medium.pkg.tar.zst", medium),
	), Chunk: 256 << 10})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/_active" {
			fmt.Fprintln(w, m.Active())
			return
		}
		if loc := workerPrefix.FindStringIndex(r.URL.Path); loc != nil {
			r.URL.Path = "/" + r.URL.Path[loc[1]:]
		}
		m.ServeHTTP(w, r)
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fatal(err)
	}
	srv := &http.Server{Handler: h}
	go func() { _ = srv.Serve(ln) }()
	fmt.Printf("http://%s\n", ln.Addr())
	_, _ = io.Copy(io.Discard, os.Stdin)
	_ = srv.Close()
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// rss reads VmRSS (or another field) of this process, in bytes.
func procStatus(field string) int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			f := strings.Fields(v)
			if len(f) > 0 {
				n, _ := strconv.ParseInt(f[0], 10, 64)
				return n << 10
			}
		}
	}
	return 0
}

var overheadContenders = []string{"refractor", "reverse_proxy", "direct"}

func runOverhead(o options, report *jsonReport) error {
	oo := o.overhead
	var err error
	if oo.bigSize, err = mirrorsim.ParseSize(oo.big); err != nil {
		return err
	}
	if oo.medSize, err = mirrorsim.ParseSize(oo.medium); err != nil {
		return err
	}
	up, err := startUpstream(oo.bigSize, oo.medSize)
	if err != nil {
		return err
	}
	defer up.stop()

	// One worker per concurrent request, and some to spare for retries
	// (a peek that times out on a loaded machine moves to another worker).
	workers := max(oo.streams, oo.slow) + 16
	var results []overheadResult
	for run := range oo.runs {
		// A fresh config (and pool) for every run. refractor gets one
		// worker per concurrent request the tests make: a worker serves
		// one transfer at a time, and a pool takes each mirror URL once,
		// so the upstream appears under as many URLs.
		var mirrors []string
		for i := range workers {
			mirrors = append(mirrors, fmt.Sprintf("%s/w%04d/repo/", up.url, i))
		}
		opts := map[string]any{"workers": workers, "sync_file": "off"}
		for k, v := range o.refractorOpts {
			opts[k] = v
		}
		addrs := map[string]string{"refractor": freeAddr(), "reverse_proxy": freeAddr()}
		err := loadCaddy([]proxyServer{
			{"refractor", addrs["refractor"], refractorRoute(mirrors, opts)},
			{"reverse_proxy", addrs["reverse_proxy"], reverseProxyRoute([]string{hostPort(up.url)}, "random")},
		}, o.logFile)
		if err != nil {
			return err
		}
		time.Sleep(500 * time.Millisecond)
		contenders := split(oo.contenders)
		n := len(contenders)
		order := append(slices.Clone(contenders[run%n:]), contenders[:run%n]...)
		base := func(name string) string {
			if name == "direct" {
				return up.url + "/repo/"
			}
			return "http://" + addrs[name] + "/"
		}
		for _, test := range split(oo.tests) {
			for _, name := range order {
				var r overheadResult
				switch test {
				case "single":
					r = throughputTest(base(name), "big.pkg.tar.zst", 1, oo.bigSize)
				case "streams":
					r = throughputTest(base(name), "medium.pkg.tar.zst", oo.streams, oo.medSize)
				case "slow":
					r = slowTest(base(name)+"big.pkg.tar.zst", oo.slow, oo.hold, up)
				}
				r.Test, r.Contender, r.Run = test, name, run
				results = append(results, r)
				if o.verbose {
					progress("  overhead run %d %-8s %-13s %.2f s, %.0f MiB/s, cpu %.2f s, rss +%.1f MiB, %d in flight, %d errors",
						run+1, test, name, r.Wall, float64(r.Bytes)/mib/r.Wall, r.CPU,
						float64(r.RSSPeak-r.RSSBase)/mib, r.InFlight, r.Errors)
				}
			}
		}
	}
	report.Overhead = results
	printOverhead(os.Stdout, oo, results)
	return nil
}

// throughputTest downloads file `streams` times at once from base and
// measures the wall time and this process's CPU time.
func throughputTest(base, file string, streams int, size int64) overheadResult {
	settle()
	tr := &http.Transport{MaxIdleConnsPerHost: streams, DisableCompression: true, ReadBufferSize: 64 << 10}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	var mu sync.Mutex
	var r overheadResult
	cpu0, start := cpuTime(), time.Now()
	var wg sync.WaitGroup
	for range streams {
		wg.Go(func() {
			n, err := download(client, base+file)
			mu.Lock()
			defer mu.Unlock()
			r.Bytes += n
			if err != nil || n != size {
				r.Errors++
			}
		})
	}
	wg.Wait()
	r.Wall, r.CPU = time.Since(start).Seconds(), (cpuTime() - cpu0).Seconds()
	return r
}

func download(client *http.Client, url string) (int64, error) {
	resp, err := client.Get(url)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("status %d", resp.StatusCode)
	}
	buf := bufPool.Get().(*[]byte)
	defer bufPool.Put(buf)
	return io.CopyBuffer(io.Discard, struct{ io.Reader }{resp.Body}, *buf)
}

// settle collects garbage and returns free memory to the OS, so that each
// measurement starts from the same place.
func settle() {
	runtime.GC()
	runtime.GC() // sync.Pools keep their contents for one cycle
	debug.FreeOSMemory()
}

// liveBytes is the Go heap and stacks in use, after collections that also
// empty sync.Pools, and the stacks alone.
func liveBytes() (live, stacks int64) {
	runtime.GC()
	runtime.GC() // sync.Pools keep their contents for one cycle: not in use
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc + m.StackInuse), int64(m.StackInuse)
}

// liveAllocatedBy estimates, from the heap profile, the bytes in use that
// were allocated by a function whose name contains fn.
// Call it right after liveBytes: the profile is as of the last completed
// collection.
func liveAllocatedBy(fn string) int64 {
	var recs []runtime.MemProfileRecord
	n, _ := runtime.MemProfile(nil, true)
	for {
		recs = make([]runtime.MemProfileRecord, n+50)
		var ok bool
		if n, ok = runtime.MemProfile(recs, true); ok {
			recs = recs[:n]
			break
		}
	}
	rate := float64(runtime.MemProfileRate)
	var total float64
	for _, rec := range recs {
		found := false
		frames := runtime.CallersFrames(rec.Stack())
		for {
			f, more := frames.Next()
			if strings.Contains(f.Function, fn) {
				found = true
				break
			}
			if !more {
				break
			}
		}
		if !found || rec.InUseObjects() == 0 {
			continue
		}
		// Undo the sampling, as pprof does.
		size := float64(rec.AllocBytes) / float64(max(rec.AllocObjects, 1))
		scale := 1.0
		if rate > 1 {
			scale = 1 / (1 - math.Exp(-size/rate))
		}
		total += float64(rec.InUseBytes()) * scale
	}
	return int64(total)
}

// slowTest opens n connections that each request url and then read a
// kilobyte a second, with a small receive buffer, and measures this
// process's peak resident memory while all of them are in flight.
func slowTest(url string, n int, hold time.Duration, up *upstream) overheadResult {
	settle()
	var r overheadResult
	r.RSSBase = procStatus("VmRSS")
	r.LiveBase, r.StackBase = liveBytes()
	stopSampling := make(chan struct{})
	sampled := make(chan int64)
	go func() {
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		var p int64
		for {
			select {
			case <-t.C:
				p = max(p, procStatus("VmRSS"))
			case <-stopSampling:
				sampled <- max(p, procStatus("VmRSS"))
				return
			}
		}
	}()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dialer := &net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		return c.Control(func(fd uintptr) {
			_ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 8<<10)
		})
	}}
	host := strings.TrimPrefix(url, "http://")
	host, path, _ := strings.Cut(host, "/")
	var mu sync.Mutex
	started := make(chan bool, n)
	var wg sync.WaitGroup
	cpu0, start := cpuTime(), time.Now()
	for range n {
		wg.Go(func() {
			conn, err := dialer.DialContext(ctx, "tcp", host)
			if err != nil {
				started <- false
				return
			}
			defer conn.Close()
			go func() { <-ctx.Done(); conn.Close() }()
			fmt.Fprintf(conn, "GET /%s HTTP/1.1\r\nHost: %s\r\n\r\n", path, host)
			buf := make([]byte, 1024)
			got, err := conn.Read(buf)
			ok := err == nil && strings.HasPrefix(string(buf[:got]), "HTTP/1.1 200")
			started <- ok
			mu.Lock()
			r.Bytes += int64(got)
			mu.Unlock()
			if !ok {
				return
			}
			t := time.NewTicker(time.Second)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
				}
				k, err := conn.Read(buf)
				mu.Lock()
				r.Bytes += int64(k)
				mu.Unlock()
				if err != nil {
					return
				}
			}
		})
	}
	for range n {
		if <-started {
			r.InFlight++
		} else {
			r.Errors++
		}
	}
	time.Sleep(hold)
	close(stopSampling)
	r.RSSPeak = <-sampled
	r.Live, r.Stack = liveBytes()
	r.PeekLive = liveAllocatedBy("allocBlock")
	if heapProfileDir != "" {
		if f, err := os.Create(filepath.Join(heapProfileDir, fmt.Sprintf("heap-slow-%s.pprof", strings.NewReplacer(":", "_", "/", "_").Replace(host)))); err == nil {
			_ = pprof.WriteHeapProfile(f)
			f.Close()
		}
	}
	r.Wall, r.CPU = time.Since(start).Seconds(), (cpuTime() - cpu0).Seconds()
	cancel()
	wg.Wait()
	// Let the proxy and upstream notice the clients have gone.
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get(up.url + "/_active")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if strings.TrimSpace(string(b)) == "0" {
				break
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return r
}

func printOverhead(w io.Writer, oo overheadOptions, results []overheadResult) {
	get := func(test, name string) []overheadResult {
		var out []overheadResult
		for _, r := range results {
			if r.Test == test && r.Contender == name {
				out = append(out, r)
			}
		}
		return out
	}
	med := func(rs []overheadResult, f func(overheadResult) float64) float64 {
		var xs []float64
		for _, r := range rs {
			xs = append(xs, f(r))
		}
		m, _ := median(xs, nil)
		return m
	}
	const gib = 1 << 30
	rate := func(r overheadResult) float64 { return float64(r.Bytes) / mib / r.Wall }
	cpuPerGiB := func(r overheadResult) float64 { return r.CPU / (float64(r.Bytes) / gib) }
	// The proxy's own CPU: this run's CPU per GiB less the direct
	// download's in the same run (the clients' share).
	proxyCPU := func(test string, r overheadResult) float64 {
		for _, d := range get(test, "direct") {
			if d.Run == r.Run {
				return cpuPerGiB(r) - cpuPerGiB(d)
			}
		}
		return 0
	}
	errs := func(rs []overheadResult) int {
		n := 0
		for _, r := range rs {
			n += r.Errors
		}
		return n
	}
	// ran reports whether the test has results (-overhead-tests may leave
	// it out).
	ran := func(test string) bool {
		for _, name := range overheadContenders {
			if len(get(test, name)) > 0 {
				return true
			}
		}
		return false
	}
	runs := 0
	for _, t := range []string{"single", "streams", "slow"} {
		runs = max(runs, len(get(t, "direct")))
	}
	fmt.Fprintf(w, "### Proxy overhead\n\n")
	fmt.Fprintf(w, "One unthrottled upstream in a child process; Caddy and the clients in this process. Median of %d runs.\n", runs)
	fmt.Fprintf(w, "CPU is this process's (Getrusage) over the test; \"proxy CPU\" subtracts the direct download's (the clients' share) in the same run.\n\n")
	for _, t := range []struct{ test, title string }{
		{"single", fmt.Sprintf("single stream of a %s file", oo.big)},
		{"streams", fmt.Sprintf("%d concurrent streams of a %s file", oo.streams, oo.medium)},
	} {
		if !ran(t.test) {
			continue
		}
		fmt.Fprintf(w, "%s:\n\n| contender | MiB/s | (min-max) | x reverse_proxy | CPU s/GiB | proxy CPU s/GiB | x reverse_proxy | errors |\n|---|---:|---:|---:|---:|---:|---:|---:|\n", t.title)
		rpRate := med(get(t.test, "reverse_proxy"), rate)
		rpCPU := med(get(t.test, "reverse_proxy"), func(r overheadResult) float64 { return proxyCPU(t.test, r) })
		for _, name := range overheadContenders {
			rs := get(t.test, name)
			if len(rs) == 0 {
				continue
			}
			pc := med(rs, func(r overheadResult) float64 { return proxyCPU(t.test, r) })
			ratio := "-"
			if name != "direct" && rpCPU > 0 {
				ratio = fmt.Sprintf("%.2f", pc/rpCPU)
			}
			lo, hi := math.Inf(1), 0.0
			for _, r := range rs {
				lo, hi = min(lo, rate(r)), max(hi, rate(r))
			}
			fmt.Fprintf(w, "| %s | %.0f | %.0f-%.0f | %.2f | %.3f | %.3f | %s | %d |\n", name, med(rs, rate), lo, hi, med(rs, rate)/rpRate,
				med(rs, cpuPerGiB), pc, ratio, errs(rs))
		}
		fmt.Fprintln(w)
	}
	if !ran("slow") {
		return
	}
	fmt.Fprintf(w, "%d slow clients (8 KiB receive buffer, reading 1 KiB a second), held %v once all are served:\n\n", oo.slow, oo.hold)
	fmt.Fprintf(w, "| contender | in flight | peak RSS growth MiB | per request KiB | proxy per request KiB | live heap per request KiB | proxy live per request KiB | of which stacks KiB | of which body blocks KiB | beyond the blocks KiB | errors |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	perReq := func(r overheadResult) float64 {
		return float64(r.RSSPeak-r.RSSBase) / 1024 / float64(max(r.InFlight, 1))
	}
	livePer := func(r overheadResult) float64 { return float64(r.Live-r.LiveBase) / 1024 / float64(max(r.InFlight, 1)) }
	directPer, directLive := med(get("slow", "direct"), perReq), med(get("slow", "direct"), livePer)
	for _, name := range overheadContenders {
		rs := get("slow", name)
		if len(rs) == 0 {
			continue
		}
		p, l := med(rs, perReq), med(rs, livePer)
		peek := med(rs, func(r overheadResult) float64 { return float64(r.PeekLive) / 1024 / float64(max(r.InFlight, 1)) })
		stack := med(rs, func(r overheadResult) float64 {
			return float64(r.Stack-r.StackBase) / 1024 / float64(max(r.InFlight, 1))
		})
		proxy, proxyLive, peekCol, beyond := "-", "-", "-", "-"
		if name != "direct" {
			proxy, proxyLive = fmt.Sprintf("%.0f", p-directPer), fmt.Sprintf("%.0f", l-directLive)
			peekCol, beyond = fmt.Sprintf("%.0f", peek), fmt.Sprintf("%.0f", l-directLive-peek)
		}
		fmt.Fprintf(w, "| %s | %.0f | %.0f | %.0f | %s | %.0f | %s | %.0f | %s | %s | %d |\n", name, med(rs, func(r overheadResult) float64 { return float64(r.InFlight) }),
			med(rs, func(r overheadResult) float64 { return float64(r.RSSPeak-r.RSSBase) / mib }), p, proxy, l, proxyLive, stack, peekCol, beyond, errs(rs))
	}
	fmt.Fprintf(w, "\nper request: this process's peak RSS growth (VmRSS sampled every 20 ms) per in-flight request; live heap: Go heap and stacks in use after a GC at the end of the hold.\n"+
		"proxy: less the direct clients' own (%.0f KiB RSS, %.0f KiB live). body blocks: live bytes of refractor's body blocks (allocBlock, from the heap profile):\n"+
		"the peek, then what waits for the client; a transfer whose client stalls drops its queued blocks and fetches them again later.\n"+
		"beyond the blocks: proxy live per request less the body blocks.\n\n", directPer, directLive)
}
