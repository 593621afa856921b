package main

import (
	"cmp"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"os"
	"strings"

	"github.com/caddyserver/caddy/v2"
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/caddy-refractor/refractor"
)

// A proxy contender is one Caddy server, on its own port, in the one Caddy
// config that runs in this process.
type proxyServer struct {
	name   string
	addr   string // 127.0.0.1:port
	routes []any
}

// refractorRoute is refractor over the mirrors, with its defaults unless
// extra (a JSON object) overrides some options.
func refractorRoute(mirrors []string, extra map[string]any) []any {
	h := map[string]any{
		"handler":  "refractor",
		"provider": map[string]any{"source": "static", "mirrors": mirrors},
	}
	maps.Copy(h, extra)
	return []any{map[string]any{"handle": []any{h}}}
}

// reverseProxyRoute is Caddy's reverse_proxy over the mirrors' host:ports
// with a load-balancing policy. The mirrors serve under /repo/, and
// reverse_proxy's upstreams are host:ports without a path, so a rewrite
// adds the prefix first; the upstream's own Host is sent, as public mirrors
// need (header_up Host {upstream_hostport}).
func reverseProxyRoute(upstreams []string, policy string) []any {
	var ups []any
	for _, u := range upstreams {
		ups = append(ups, map[string]any{"dial": u})
	}
	return []any{map[string]any{"handle": []any{
		map[string]any{"handler": "rewrite", "uri": "/repo{http.request.uri}"},
		map[string]any{
			"handler":        "reverse_proxy",
			"upstreams":      ups,
			"load_balancing": map[string]any{"selection_policy": map[string]any{"policy": policy}},
			"headers": map[string]any{"request": map[string]any{"set": map[string]any{
				"Host": []string{"{http.reverse_proxy.upstream.hostport}"},
			}}},
		},
	}}}
}

// logLevel is the level of the logs written to -log; REFRACTOR_BENCH_LOG_LEVEL
// (e.g. DEBUG, to see every ranking decision and move) changes it.
var logLevel = cmp.Or(os.Getenv("REFRACTOR_BENCH_LOG_LEVEL"), "INFO")

// loadCaddy replaces the running Caddy config with one server for each
// proxy contender. Admin is off and nothing is persisted; logs go to
// logFile, or nowhere.
func loadCaddy(servers []proxyServer, logFile string) error {
	srv := map[string]any{}
	for _, s := range servers {
		srv[s.name] = map[string]any{
			"listen":          []string{s.addr},
			"automatic_https": map[string]any{"disable": true},
			"routes":          s.routes,
		}
	}
	writer := map[string]any{"output": "discard"}
	if logFile != "" {
		writer = map[string]any{"output": "file", "filename": logFile}
	}
	cfg := map[string]any{
		"admin":   map[string]any{"disabled": true, "config": map[string]any{"persist": false}},
		"logging": map[string]any{"logs": map[string]any{"default": map[string]any{"writer": writer, "level": logLevel}}},
		"apps":    map[string]any{"http": map[string]any{"grace_period": 1, "servers": srv}},
	}
	b, err := json.Marshal(cfg)
	if err != nil {
		return err
	}
	if err := caddy.Load(b, true); err != nil {
		return fmt.Errorf("loading caddy config: %w", err)
	}
	return nil
}

// freeAddr returns a free 127.0.0.1 port.
func freeAddr() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// privateCaddyDirs points Caddy's config and data directories at a temp
// dir, so the benchmark leaves nothing in the home directory, and returns
// it.
func privateCaddyDirs() (dir string, cleanup func()) {
	dir, err := os.MkdirTemp("", "refractor-bench-")
	if err != nil {
		panic(err)
	}
	os.Setenv("XDG_CONFIG_HOME", dir)
	os.Setenv("XDG_DATA_HOME", dir)
	return dir, func() { os.RemoveAll(dir) }
}

// hostPort strips the scheme and path of a URL.
func hostPort(u string) string {
	u = strings.TrimPrefix(u, "http://")
	h, _, _ := strings.Cut(u, "/")
	return h
}
