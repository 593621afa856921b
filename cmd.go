package refractor

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/dustin/go-humanize"
	"github.com/spf13/cobra"

	"github.com/caddy-refractor/refractor/pool"
)

func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "refractor",
		Usage: "[--address <interface>] [--config <path> [--adapter <name>]] [--watch[=<seconds>]]",
		Short: "Shows the mirror pools of a running refractor",
		Long: `
Prints every refractor pool of the running Caddy instance as a table: each
worker's mirror, state (on trial or ranked, and whether it is busy), score in
MiB/s, samples, requests, bytes received, failures and when it joined; then
the provider's status and the mirrors that left the pool lately, and why;
then each LAN cache: its files and size, hits and misses, and the bytes it
kept from crossing the Internet.

It reads the admin API's /refractor/pools and /refractor/cache. The admin address is --address if
given, else the one in --config, else Caddy's default (localhost:2019).

--watch refreshes the view every 2 seconds, --watch=N every N seconds, until
interrupted.`,
		CobraFunc: func(cmd *cobra.Command) {
			cmd.Flags().String("address", "", "The address of the admin API, if not the default")
			cmd.Flags().StringP("config", "c", "", "Configuration file to read the admin address from, if --address is not used")
			cmd.Flags().StringP("adapter", "a", "", "Name of config adapter to apply (when --config is used)")
			cmd.Flags().IntP("watch", "w", 0, "Refresh every N seconds (bare --watch: 2)")
			cmd.Flags().Lookup("watch").NoOptDefVal = "2"
			cmd.Args = func(_ *cobra.Command, args []string) error {
				if len(args) > 0 {
					return fmt.Errorf("unexpected argument %q (for another refresh interval, write --watch=%s)", args[0], args[0])
				}
				return nil
			}
			cmd.RunE = caddycmd.WrapCommandFuncForCobra(cmdRefractor)
		},
	})
}

// cmdRefractor is the `caddy refractor` command.
func cmdRefractor(fl caddycmd.Flags) (int, error) {
	addr, err := caddycmd.DetermineAdminAPIAddress(fl.String("address"), nil, fl.String("config"), fl.String("adapter"))
	if err != nil {
		return exitFailed, fmt.Errorf("finding the admin API: %w", err)
	}
	every := fl.Int("watch")
	if every < 0 {
		return exitFailed, fmt.Errorf("--watch: %d seconds is not an interval", every)
	}
	if every == 0 {
		pools, err := fetchPools(addr)
		if err != nil {
			return exitFailed, err
		}
		renderPools(os.Stdout, pools, time.Now())
		renderCaches(os.Stdout, fetchCaches(addr))
		return 0, nil
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	tick := time.NewTicker(time.Duration(every) * time.Second)
	defer tick.Stop()
	for {
		var b strings.Builder
		b.WriteString("\033[H\033[2J") // home, clear screen
		fmt.Fprintf(&b, "refractor at %s, every %ds (Ctrl-C stops)  %s\n\n", addr, every, time.Now().Format(time.TimeOnly))
		if pools, err := fetchPools(addr); err != nil {
			fmt.Fprintf(&b, "%v\n", err) // Caddy may be restarting: keep watching
		} else {
			renderPools(&b, pools, time.Now())
			renderCaches(&b, fetchCaches(addr))
		}
		_, _ = io.WriteString(os.Stdout, b.String())
		select {
		case <-tick.C:
		case <-ctx.Done():
			return 0, nil
		}
	}
}

// exitFailed is the exit status of a command that failed.
const exitFailed = 1

// fetchPools asks the admin API at addr for the pools.
func fetchPools(addr string) ([]PoolStatus, error) {
	resp, err := caddycmd.AdminAPIRequest(addr, http.MethodGet, "/refractor/pools", nil, nil)
	if err != nil {
		return nil, fmt.Errorf("asking the admin API at %s: %w", addr, err)
	}
	defer resp.Body.Close()
	var pools []PoolStatus
	if err := json.NewDecoder(resp.Body).Decode(&pools); err != nil {
		return nil, fmt.Errorf("reading the admin API's answer: %w", err)
	}
	return pools, nil
}

// fetchCaches asks the admin API at addr for the caches; an instance
// without any, or one from before caches, has none to show.
func fetchCaches(addr string) []CacheStatus {
	resp, err := caddycmd.AdminAPIRequest(addr, http.MethodGet, "/refractor/cache", nil, nil)
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	var caches []CacheStatus
	if json.NewDecoder(resp.Body).Decode(&caches) != nil {
		return nil
	}
	return caches
}

// renderCaches prints one paragraph per cache directory, as GET
// /refractor/cache returns them.
func renderCaches(w io.Writer, caches []CacheStatus) {
	b := func(n int64) string { return humanize.IBytes(uint64(max(n, 0))) }
	for _, c := range caches {
		bound := "no max_size"
		if c.MaxSize > 0 {
			bound = "of " + b(c.MaxSize)
		}
		fmt.Fprintf(w, "\ncache %s: %d files, %s %s (min_free %s), %d filling\n", c.Dir, c.Files, b(c.Size), bound, b(c.MinFree), c.Filling)
		fmt.Fprintf(w, "  %d hits, %d misses; %s served, %s of it not from the Internet; %d evicted, %d write errors\n",
			c.Hits, c.Misses, b(c.ServedBytes), b(c.SavedBytes), c.Evicted, c.WriteErrors)
		if c.PeerServedBytes > 0 {
			fmt.Fprintf(w, "  %s served to peers\n", b(c.PeerServedBytes))
		}
	}
}

// maxShownRotations is how many of a pool's latest rotations are printed.
const maxShownRotations = 10

// renderPools prints pools, as GET /refractor/pools returns them, as
// tables; times are shown relative to now.
func renderPools(w io.Writer, pools []PoolStatus, now time.Time) {
	if len(pools) == 0 {
		fmt.Fprintln(w, "no refractor pool is running")
		return
	}
	for i, p := range pools {
		if i > 0 {
			fmt.Fprintln(w)
		}
		fmt.Fprintf(w, "pool %s: %d workers, %d busy, %d queued\n", p.Name, len(p.Workers), p.Active, p.Queued)
		t := table{right: []bool{false, false, true, true, true, true, true, true, false}}
		t.add("MIRROR", "STATE", "MiB/s", "SAMPLES", "REQUESTS", "BYTES", "FAILURES", "JOINED", "SAMPLES FROM")
		// Mirrors first, then peers (other refractors' caches), each
		// best first.
		workers := slices.Clone(p.Workers)
		slices.SortStableFunc(workers, func(a, b WorkerStatus) int { return cmpBool(a.Peer, b.Peer) })
		for _, wk := range workers {
			state := wk.State
			if wk.Peer {
				state = "peer " + state
			}
			if wk.Busy {
				state += " busy"
			}
			t.add(wk.Mirror, state, fmt.Sprintf("%.1f", wk.Score/(1<<20)), strconv.Itoa(wk.Samples),
				strconv.FormatInt(wk.Requests, 10), humanize.IBytes(uint64(max(wk.Bytes, 0))),
				strconv.FormatInt(wk.Failures, 10), ago(now, wk.Joined), samplesFrom(wk.From, now))
		}
		t.write(w, "  ")

		provider := "provider: last fetch " + ago(now, p.Provider.LastFetch)
		if p.Provider.LastError != "" {
			provider += fmt.Sprintf("; last error %s: %s", ago(now, p.Provider.ErrorTime), p.Provider.LastError)
		}
		fmt.Fprintln(w, "  "+provider)

		if len(p.Rotations) == 0 {
			fmt.Fprintln(w, "  no rotations yet")
			continue
		}
		shown := p.Rotations[max(len(p.Rotations)-maxShownRotations, 0):]
		fmt.Fprintf(w, "  recent rotations (%d of %d, newest first):\n", len(shown), len(p.Rotations))
		rt := table{right: []bool{true, false, false, true}}
		for j := len(shown) - 1; j >= 0; j-- {
			r := shown[j]
			rt.add(ago(now, r.Time), r.Reason, r.Mirror, fmt.Sprintf("%.1f MiB/s", r.Score/(1<<20)))
		}
		rt.write(w, "    ")
	}
}

// cmpBool orders false before true.
func cmpBool(a, b bool) int { return int(btoi(a)) - int(btoi(b)) }

func btoi(b bool) int8 {
	if b {
		return 1
	}
	return 0
}

// samplesFrom says where a worker's samples come from, and how old the
// newest of each source is: "12 local 2s ago, 8 restored 2h07m ago".
func samplesFrom(from map[string]pool.SampleSource, now time.Time) string {
	var parts []string
	for _, src := range []string{"local", "restored", "shared"} {
		if f := from[src]; f.Samples > 0 {
			parts = append(parts, fmt.Sprintf("%d %s %s", f.Samples, src, ago(now, f.Newest)))
		}
	}
	return strings.Join(parts, ", ")
}

// ago is how long before now t was, briefly: "42s ago", "5m07s ago",
// "3h02m ago", "2d04h ago"; "never" for the zero time.
func ago(now, t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	d := max(now.Sub(t), 0).Round(time.Second)
	s := int64(d / time.Second)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", s)
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds ago", s/60, s%60)
	case d < 24*time.Hour:
		return fmt.Sprintf("%dh%02dm ago", s/3600, s%3600/60)
	}
	return fmt.Sprintf("%dd%02dh ago", s/86400, s%86400/3600)
}

// table lays out rows in columns, each left- or right-aligned.
type table struct {
	right []bool // by column: align right
	rows  [][]string
}

func (t *table) add(cells ...string) { t.rows = append(t.rows, cells) }

// write prints the table, each line after indent, columns two spaces apart.
func (t *table) write(w io.Writer, indent string) {
	var widths []int
	for _, row := range t.rows {
		for i, c := range row {
			if i == len(widths) {
				widths = append(widths, 0)
			}
			widths[i] = max(widths[i], utf8.RuneCountInString(c))
		}
	}
	for _, row := range t.rows {
		var b strings.Builder
		b.WriteString(indent)
		for i, c := range row {
			pad := strings.Repeat(" ", widths[i]-utf8.RuneCountInString(c))
			if i > 0 {
				b.WriteString("  ")
			}
			if i < len(t.right) && t.right[i] {
				b.WriteString(pad + c)
			} else if i < len(row)-1 {
				b.WriteString(c + pad)
			} else {
				b.WriteString(c) // no trailing blanks
			}
		}
		fmt.Fprintln(w, strings.TrimRight(b.String(), " ")) // an empty last cell
	}
}
