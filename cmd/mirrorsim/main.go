// Command mirrorsim runs simulated package mirrors on 127.0.0.1, all serving
// the same generated Arch Linux-like tree (core/os/x86_64/core.db, lastsync
// and packages), each with its own bandwidth cap, first-byte latency,
// optional degradation and faults. It prints the mirrors' base URLs, one a
// line, and runs until SIGINT or SIGTERM.
//
//	mirrorsim -n 12 -speeds geometric:512KiB-32MiB -total 1GiB
//	mirrorsim -n 3 -speeds 1MiB,8MiB,32MiB -degrade-at 30s -degrade-to 1MiB
package main

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/caddy-refractor/refractor/internal/mirrorsim"
)

func main() {
	var (
		n            = flag.Int("n", 8, "number of mirrors")
		speeds       = flag.String("speeds", "geometric:512KiB-32MiB", "bandwidth caps: geometric:LO-HI, or a comma-separated list (unlimited or 0: no cap)")
		latency      = flag.Duration("latency", 20*time.Millisecond, "first-byte latency of every mirror (each mirror gets between 1x and 2x of it)")
		total        = flag.String("total", "1GiB", "about how many bytes of packages the tree holds")
		large        = flag.String("large", "", "size of the one large package (default: total/4, at most 160MiB)")
		host         = flag.String("host", "127.0.0.1", "loopback address to listen on")
		portBase     = flag.Int("port", 0, "port of the first mirror, the others following it (0: free ports)")
		shuffle      = flag.Bool("shuffle", true, "list the mirrors in a random order rather than slowest first")
		seed         = flag.Uint64("seed", 1, "seed of the tree and of the shuffle")
		degradeAt    = flag.Duration("degrade-at", 0, "when the fastest mirrors degrade (0: never)")
		degradeTo    = flag.String("degrade-to", "512KiB", "the rate they degrade to")
		degradeCount = flag.Int("degrade-count", 1, "how many of the fastest mirrors degrade")
		flaky        = flag.Float64("flaky", 0, "probability that a request to a flaky mirror meets a random fault")
		flakyList    = flag.String("flaky-mirrors", "", "comma-separated ranks of flaky mirrors, 1 the fastest (default: every third)")
		prefix       = flag.String("prefix", mirrorsim.DefaultPrefix, "path under which the tree is served")
	)
	flag.Parse()
	if err := run(*n, *speeds, *latency, *total, *large, *host, *portBase, *shuffle, *seed,
		*degradeAt, *degradeTo, *degradeCount, *flaky, *flakyList, *prefix); err != nil {
		fmt.Fprintln(os.Stderr, "mirrorsim:", err)
		os.Exit(1)
	}
}

func run(n int, speedSpec string, latency time.Duration, totalSpec, largeSpec, host string, portBase int,
	shuffle bool, seed uint64, degradeAt time.Duration, degradeSpec string, degradeCount int,
	flaky float64, flakyList, prefix string) error {
	rates, err := mirrorsim.ParseSpeeds(speedSpec, n)
	if err != nil {
		return err
	}
	total, err := mirrorsim.ParseSize(totalSpec)
	if err != nil {
		return err
	}
	var largeSize int64
	if largeSpec != "" {
		if largeSize, err = mirrorsim.ParseSize(largeSpec); err != nil {
			return err
		}
	}
	degradeTo, err := mirrorsim.ParseSize(degradeSpec)
	if err != nil {
		return err
	}
	tree := mirrorsim.Arch(mirrorsim.ArchConfig{Total: total, Large: largeSize, Seed: seed})

	// rank[i] is mirror i's rank by speed, 1 the fastest.
	order := make([]int, n)
	for i := range order {
		order[i] = i
	}
	rank := make([]int, n)
	for i := range rank {
		rank[i] = 1
		for j := range rates {
			if faster(rates[j], rates[i]) || (rates[j] == rates[i] && j > i) {
				rank[i]++
			}
		}
	}
	flakyRank := map[int]bool{}
	if flaky > 0 {
		if flakyList == "" {
			for r := 2; r <= n; r += 3 {
				flakyRank[r] = true
			}
		}
		for _, f := range strings.Split(flakyList, ",") {
			if f = strings.TrimSpace(f); f == "" {
				continue
			}
			r, err := strconv.Atoi(f)
			if err != nil || r < 1 || r > n {
				return fmt.Errorf("flaky-mirrors: bad rank %q", f)
			}
			flakyRank[r] = true
		}
	}
	if shuffle {
		rand.New(rand.NewPCG(seed, 7)).Shuffle(n, func(i, j int) { order[i], order[j] = order[j], order[i] })
	}

	var servers []*mirrorsim.Server
	defer func() {
		for _, s := range servers {
			_ = s.Close()
		}
	}()
	for k, i := range order {
		c := mirrorsim.Config{
			Tree:    tree,
			Prefix:  prefix,
			Rate:    rates[i],
			Latency: latency + time.Duration(int64(latency)*int64(i%5)/4),
		}
		if degradeAt > 0 && rank[i] <= degradeCount {
			c.Schedule = []mirrorsim.Step{{At: degradeAt, Rate: degradeTo, Latency: c.Latency}}
		}
		if flakyRank[rank[i]] {
			c.Flaky = flaky
		}
		port := 0
		if portBase > 0 {
			port = portBase + k
		}
		s, err := mirrorsim.Listen(net.JoinHostPort(host, strconv.Itoa(port)), mirrorsim.New(c))
		if err != nil {
			return err
		}
		s.StartSchedule()
		servers = append(servers, s)
		note := ""
		if c.Schedule != nil {
			note += fmt.Sprintf(", degrades to %s at %v", mirrorsim.FormatRate(degradeTo), degradeAt)
		}
		if c.Flaky > 0 {
			note += fmt.Sprintf(", flaky (%.0f%%)", 100*c.Flaky)
		}
		fmt.Fprintf(os.Stderr, "mirror %2d: %s  %s, latency %v%s\n", k+1, s.Base(), mirrorsim.FormatRate(c.Rate), c.Latency, note)
		fmt.Println(s.Base())
	}
	fmt.Fprintf(os.Stderr, "serving %d packages (%.0f MiB) on %d mirrors; Ctrl-C stops\n",
		len(tree.Packages()), float64(tree.Size())/(1<<20), n)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	<-ctx.Done()
	shutdown, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for _, s := range servers {
		_ = s.Shutdown(shutdown)
	}
	servers = nil
	return nil
}

// faster reports whether rate a is faster than b (0 is unlimited).
func faster(a, b int64) bool {
	switch {
	case a == b:
		return false
	case a == 0:
		return true
	case b == 0:
		return false
	}
	return a > b
}
