package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
)

// refractor-restored is a pool restarted from storage: right after
// refractor's cold run, a new process (this program, started again with
// restoredEnv set) runs refractor with the same handler configuration,
// storage included, and so restores what refractor's run learned before
// its pool recruits. It has the same Caddy instance ID, whose file is in
// the data directory it inherits (privateCaddyDirs).

const restoredEnv = "REFRACTOR_BENCH_RESTORED"

// saveInterval is how often refractor saves what it learned when
// refractor-restored is to restore it.
const saveInterval = "1s"

// recordWait is how long the record of refractor's cold run may take to be
// written.
const recordWait = 10 * time.Second

// storedOptions are the refractor options extra, with a file-system
// storage at root saved every saveInterval (these two override extra's).
func storedOptions(extra map[string]any, root string) map[string]any {
	opts := map[string]any{}
	maps.Copy(opts, extra)
	opts["storage"] = map[string]any{"module": "file_system", "root": root}
	opts["save_interval"] = saveInterval
	return opts
}

// waitRecord waits, up to limit, until a record of refractor's learned
// state under the storage root was written after since.
func waitRecord(root string, since time.Time, limit time.Duration) bool {
	deadline := time.Now().Add(limit)
	for {
		files, _ := filepath.Glob(filepath.Join(root, "refractor", "learned", "own", "*.json"))
		for _, f := range files {
			if fi, err := os.Stat(f); err == nil && fi.ModTime().After(since) {
				return true
			}
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// restoredConfig is what the restored child runs: refractor's routes, and
// where its logs go. refractor-cache's child is the same program with its
// own routes and server name.
type restoredConfig struct {
	Name    string `json:"name,omitempty"` // the Caddy server's; default refractor-restored
	Routes  []any  `json:"routes"`
	LogFile string `json:"log_file,omitempty"`
}

// restoredProxy is the child process running refractor-restored.
type restoredProxy struct {
	*child
	base string // http://127.0.0.1:port/
}

// startRestored starts a child process that runs Caddy with routes, and
// waits until it serves. If logFile is set, the child's logs go to it with
// ".restored" appended.
func startRestored(routes []any, logFile string) (*restoredProxy, error) {
	return startProxyChild("refractor-restored", routes, logFile)
}

// startProxyChild starts a child process that runs Caddy with one server,
// named name, with routes, and waits until it serves. If logFile is set,
// the child's logs go to it with name's suffix after "refractor-"
// appended (.restored, .cache).
func startProxyChild(name string, routes []any, logFile string) (*restoredProxy, error) {
	if logFile != "" {
		logFile += "." + strings.TrimPrefix(name, "refractor-")
	}
	b, err := json.Marshal(restoredConfig{Name: name, Routes: routes, LogFile: logFile})
	if err != nil {
		return nil, fmt.Errorf("encoding its config: %w", err)
	}
	c, err := startChild(restoredEnv + "=" + string(b))
	if err != nil {
		return nil, fmt.Errorf("%s child: %w", name, err)
	}
	return &restoredProxy{child: c, base: c.ready}, nil
}

// cpu asks the child for its CPU time so far.
func (r *restoredProxy) cpu() (time.Duration, error) {
	if _, err := fmt.Fprintln(r.stdin); err != nil {
		return 0, fmt.Errorf("asking the restored child for its CPU time: %w", err)
	}
	line, err := r.stdout.ReadString('\n')
	if err != nil {
		return 0, fmt.Errorf("reading the restored child's CPU time: %w", err)
	}
	ns, err := strconv.ParseInt(strings.TrimSpace(line), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("reading the restored child's CPU time: %w", err)
	}
	return time.Duration(ns), nil
}

// runRestoredChild is the restored child's main: it runs Caddy with one
// server, on a fresh port, with the routes it was given, and prints its
// base URL. Each line it then reads on stdin asks for its CPU time, which
// it prints; when stdin closes, it stops Caddy (which saves what its pool
// learned) and exits.
func runRestoredChild() {
	var cfg restoredConfig
	if err := json.Unmarshal([]byte(os.Getenv(restoredEnv)), &cfg); err != nil {
		fatal(fmt.Errorf("restored child: decoding its config: %w", err))
	}
	addr := freeAddr()
	name := cfg.Name
	if name == "" {
		name = "refractor-restored"
	}
	if err := loadCaddy([]proxyServer{{name, addr, cfg.Routes}}, cfg.LogFile); err != nil {
		fatal(fmt.Errorf("restored child: %w", err))
	}
	fmt.Printf("http://%s/\n", addr)
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		fmt.Println(int64(cpuTime()))
	}
	if err := caddy.Stop(); err != nil {
		fatal(fmt.Errorf("restored child: stopping caddy: %w", err))
	}
}
