// Command refractor-demo is the client side of `make demo`: it downloads
// the package set of a mirrorsim tree through a refractor server, as a
// pacman -Syu with parallel downloads would, shows the progress, and prints
// how the pool ranks its mirrors as it converges: from Caddy's admin API
// (GET /refractor/pools) when it has that route, otherwise from the
// Refractor-Mirror header of each response.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/signal"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/caddy-refractor/refractor/internal/mirrorsim"
)

func main() {
	var (
		base     = flag.String("url", "http://127.0.0.1:18080/archlinux/", "refractor's base URL")
		admin    = flag.String("admin", "", "Caddy's admin address, such as http://127.0.0.1:2019 (for GET /refractor/pools)")
		total    = flag.String("total", "512MiB", "the mirrors' -total")
		seed     = flag.Uint64("seed", 1, "the mirrors' -seed")
		parallel = flag.Int("parallel", 5, "parallel downloads")
		rounds   = flag.Int("rounds", 3, "how many times the package set is downloaded (as by several machines in turn)")
		mirrors  = flag.String("mirrors", "", "mirrorsim's log, to show each mirror's true speed")
		every    = flag.Duration("every", 2*time.Second, "how often the ranking is printed")
		caddyLog = flag.String("caddy-log", "", "Caddy's JSON log file, to follow mirrors joining and leaving the pool")
	)
	flag.Parse()
	size, err := mirrorsim.ParseSize(*total)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	d := &demo{base: *base, admin: strings.TrimSuffix(*admin, "/"), caps: readCaps(*mirrors), seen: map[string]*seen{},
		logPath: *caddyLog, members: map[string]bool{}}
	tree := mirrorsim.Arch(mirrorsim.ArchConfig{Total: size, Seed: *seed})
	if err := d.run(ctx, tree, *parallel, *rounds, *every); err != nil && ctx.Err() == nil {
		fmt.Fprintln(os.Stderr, "refractor-demo:", err)
		os.Exit(1)
	}
}

// readCaps reads "mirror N: URL  X MiB/s" lines of mirrorsim's log.
func readCaps(path string) map[string]string {
	caps := map[string]string{}
	f, err := os.Open(path)
	if err != nil {
		return caps
	}
	defer f.Close()
	re := regexp.MustCompile(`^mirror\s+\d+: (\S+)\s+(.*)$`)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if m := re.FindStringSubmatch(sc.Text()); m != nil {
			rate, rest, _ := strings.Cut(m[2], ",")
			if _, deg, ok := strings.Cut(rest, "degrades to "); ok {
				rate += " (then " + deg + ")"
			}
			caps[m[1]] = rate
		}
	}
	return caps
}

type demo struct {
	base  string
	admin string
	caps  map[string]string

	bytes atomic.Int64
	mu    sync.Mutex
	seen  map[string]*seen // by mirror, from response headers

	logPath   string
	logOffset int64
	members   map[string]bool // the pool's mirrors, from Caddy's log
}

// seen is what the responses tell of a mirror.
type seen struct {
	files int
	bytes int64
	busy  time.Duration
	last  time.Time
}

func (d *demo) run(ctx context.Context, tree *mirrorsim.List, parallel, rounds int, every time.Duration) error {
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: parallel + 1, DisableCompression: true}}
	var want int64
	pkgs := tree.Packages()
	for _, p := range pkgs {
		want += p.Size
	}
	var dbs []mirrorsim.File // refractor learns the packages' hashes from them
	for _, name := range []string{"core/os/x86_64/core.db", "extra/os/x86_64/extra.db"} {
		if db, ok := tree.Lookup(name); ok {
			dbs = append(dbs, db)
		}
	}
	fmt.Printf("downloading %d packages (%.0f MiB) through %s, %d at a time, %d rounds\n\n",
		len(pkgs), float64(want)/(1<<20), d.base, parallel, rounds)

	for round := 1; round <= rounds; round++ {
		start := time.Now()
		d.bytes.Store(0)
		var done, failed atomic.Int64
		ticker := time.NewTicker(time.Second)
		stopTicker := make(chan struct{})
		var tick sync.WaitGroup
		tick.Go(func() {
			defer ticker.Stop()
			last := time.Now()
			for {
				select {
				case <-stopTicker:
					return
				case now := <-ticker.C:
					got := d.bytes.Load()
					fmt.Printf("round %d  %5.1f s  %4.0f/%.0f MiB  %5.1f MiB/s  %d/%d files  %d failed\n",
						round, now.Sub(start).Seconds(), float64(got)/(1<<20), float64(want)/(1<<20),
						float64(got)/(1<<20)/now.Sub(start).Seconds(), done.Load(), len(pkgs), failed.Load())
					if now.Sub(last) >= every {
						d.printRanking(ctx)
						last = now
					}
				}
			}
		})
		for _, db := range dbs {
			if err := d.fetch(ctx, client, db); err != nil {
				failed.Add(1)
			}
		}
		order := slices.Clone(pkgs)
		rand.New(rand.NewPCG(uint64(round), 3)).Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
		files := make(chan mirrorsim.File)
		var wg sync.WaitGroup
		for range parallel {
			wg.Go(func() {
				for f := range files {
					if err := d.fetch(ctx, client, f); err != nil {
						failed.Add(1)
						if ctx.Err() == nil {
							fmt.Printf("  %s: %v\n", f.Name, err)
						}
					} else {
						done.Add(1)
					}
				}
			})
		}
	feed:
		for _, f := range order {
			select {
			case files <- f:
			case <-ctx.Done():
				break feed
			}
		}
		close(files)
		wg.Wait()
		close(stopTicker)
		tick.Wait()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		el := time.Since(start)
		fmt.Printf("\nround %d done: %d files, %.0f MiB in %.1f s, %.1f MiB/s, %d failed, every byte checked\n",
			round, done.Load(), float64(d.bytes.Load())/(1<<20), el.Seconds(), float64(d.bytes.Load())/(1<<20)/el.Seconds(), failed.Load())
		d.printRanking(ctx)
		fmt.Println()
	}
	return nil
}

// fetch downloads one file and checks every byte.
func (d *demo) fetch(ctx context.Context, client *http.Client, f mirrorsim.File) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, d.base+f.Name, nil)
	if err != nil {
		return err
	}
	start := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %s", resp.Status)
	}
	checker := f.Checker(0)
	n, err := io.Copy(io.MultiWriter(checker, counter{&d.bytes}), resp.Body)
	if err != nil {
		return err
	}
	if n != f.Size || !checker.OK() {
		return fmt.Errorf("corrupt: %d bytes, first wrong byte at %d", n, checker.Bad())
	}
	m := resp.Header.Get("Refractor-Mirror")
	d.mu.Lock()
	s := d.seen[m]
	if s == nil {
		s = &seen{}
		d.seen[m] = s
	}
	s.files++
	s.bytes += n
	s.busy += time.Since(start)
	s.last = time.Now()
	d.mu.Unlock()
	return nil
}

type counter struct{ n *atomic.Int64 }

func (c counter) Write(p []byte) (int, error) { c.n.Add(int64(len(p))); return len(p), nil }

// poolStatus is the part of GET /refractor/pools the demo shows.
type poolStatus struct {
	Name    string `json:"name"`
	Workers []struct {
		Mirror   string  `json:"mirror"`
		Score    float64 `json:"score"`
		Samples  int     `json:"samples"`
		Ranked   bool    `json:"ranked"`
		Requests int64   `json:"requests"`
		Failures int64   `json:"failures"`
	} `json:"workers"`
	Rotations []struct {
		Mirror string    `json:"mirror"`
		Reason string    `json:"reason"`
		Score  float64   `json:"score"`
		Time   time.Time `json:"time"`
	} `json:"rotations"`
}

func (d *demo) printRanking(ctx context.Context) {
	if d.admin != "" {
		if pools, err := d.pools(ctx); err == nil {
			for _, p := range pools {
				fmt.Printf("  pool %s (admin API):\n", p.Name)
				for i, w := range p.Workers {
					state := "ranked"
					if !w.Ranked {
						state = "on trial"
					}
					fmt.Printf("    %d. %-34s %6.1f MiB/s  %-8s %3d samples  %4d requests  %d failures  true cap %s\n",
						i+1, w.Mirror, w.Score/(1<<20), state, w.Samples, w.Requests, w.Failures, d.capOf(w.Mirror))
				}
				for _, r := range p.Rotations {
					fmt.Printf("    rotation %s: %s %s at %.1f MiB/s (true cap %s)\n",
						r.Time.Format("15:04:05"), r.Mirror, r.Reason, r.Score/(1<<20), d.capOf(r.Mirror))
				}
			}
			return
		}
	}
	// No admin route: follow the pool's joins and leaves in Caddy's log,
	// and rank its mirrors by what the responses say.
	events := d.followLog()
	d.mu.Lock()
	defer d.mu.Unlock()
	type row struct {
		mirror string
		s      seen
	}
	var rows []row
	for m, s := range d.seen {
		if d.logPath == "" || d.members[m] {
			rows = append(rows, row{m, *s})
		}
	}
	for m := range d.members {
		if d.seen[m] == nil {
			rows = append(rows, row{m, seen{}})
		}
	}
	rate := func(s seen) float64 {
		if s.busy <= 0 {
			return 0
		}
		return float64(s.bytes) / s.busy.Seconds()
	}
	slices.SortFunc(rows, func(a, b row) int {
		ra, rb := rate(a.s), rate(b.s)
		switch {
		case ra > rb:
			return -1
		case ra < rb:
			return 1
		}
		return strings.Compare(a.mirror, b.mirror)
	})
	fmt.Println("  the pool's mirrors, by the throughput their responses showed here (no admin API; latency included):")
	for i, r := range rows {
		last := "never used"
		if !r.s.last.IsZero() {
			last = fmt.Sprintf("last used %v ago", time.Since(r.s.last).Round(100*time.Millisecond))
		}
		fmt.Printf("    %2d. %-34s %6.1f MiB/s  %4d files  %6.0f MiB  %-20s true cap %s\n",
			i+1, r.mirror, rate(r.s)/(1<<20), r.s.files, float64(r.s.bytes)/(1<<20), last, d.capOf(r.mirror))
	}
	for _, e := range events {
		fmt.Println("   ", e)
	}
}

// followLog reads the lines Caddy logged since the last call and returns
// the pool's joins and leaves, keeping track of its members.
func (d *demo) followLog() []string {
	if d.logPath == "" {
		return nil
	}
	f, err := os.Open(d.logPath)
	if err != nil {
		return nil
	}
	defer f.Close()
	if _, err := f.Seek(d.logOffset, io.SeekStart); err != nil {
		return nil
	}
	var events []string
	r := bufio.NewReader(f)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			break // a partial line is read again next time
		}
		d.logOffset += int64(len(line))
		var e struct {
			TS     float64 `json:"ts"`
			Msg    string  `json:"msg"`
			Mirror string  `json:"mirror"`
			Reason string  `json:"reason"`
			Score  float64 `json:"score_bps"`
		}
		if json.Unmarshal([]byte(line), &e) != nil {
			continue
		}
		at := time.Unix(0, int64(e.TS*1e9)).Format("15:04:05.0")
		switch e.Msg {
		case "mirror joined the pool":
			d.mu.Lock()
			d.members[e.Mirror] = true
			d.mu.Unlock()
			events = append(events, fmt.Sprintf("%s joined: %s (true cap %s)", at, e.Mirror, d.capOf(e.Mirror)))
		case "mirror left the pool":
			d.mu.Lock()
			delete(d.members, e.Mirror)
			d.mu.Unlock()
			events = append(events, fmt.Sprintf("%s %s at %.1f MiB/s: %s (true cap %s)", at, e.Reason, e.Score/(1<<20), e.Mirror, d.capOf(e.Mirror)))
		}
	}
	return events
}

func (d *demo) capOf(mirror string) string {
	if c, ok := d.caps[mirror]; ok {
		return c
	}
	return "?"
}

func (d *demo) pools(ctx context.Context) ([]poolStatus, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, d.admin+"/refractor/pools", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("status %s", resp.Status)
	}
	var pools []poolStatus
	if err := json.NewDecoder(resp.Body).Decode(&pools); err != nil {
		return nil, err
	}
	return pools, nil
}
