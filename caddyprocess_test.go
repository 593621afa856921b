package refractor

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"
	"testing"
	"time"
)

// Tests that need what only separate processes show (a restart, instances
// that share a storage) run real Caddy processes: internal/testcaddy, built
// once per test run, with the race detector when the tests have it.

// goHome is the environment the go command had before TestMain moved HOME
// and the XDG directories (its build and module caches live under them).
var goHome = []string{
	"HOME=" + os.Getenv("HOME"),
	"XDG_CONFIG_HOME=" + os.Getenv("XDG_CONFIG_HOME"),
	"XDG_CACHE_HOME=" + os.Getenv("XDG_CACHE_HOME"),
}

// testcaddyBinary builds internal/testcaddy once.
var testcaddyBinary = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "refractor-testcaddy-")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "caddy")
	args := []string{"build", "-o", bin}
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, s := range info.Settings {
			if s.Key == "-race" && s.Value == "true" {
				args = append(args, "-race")
			}
		}
	}
	cmd := exec.Command("go", append(args, "./internal/testcaddy")...)
	cmd.Env = append(os.Environ(), goHome...) // the go command's caches, not TestMain's home
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("building internal/testcaddy: %v\n%s", err, out)
	}
	return bin, nil
})

// caddyProcess is one Caddy process serving refractor under /archlinux/ on
// its own HTTP port, with its own admin port and home (its data directory,
// hence its instance ID, and its default storage).
type caddyProcess struct {
	home  string
	admin string // host:port
	http  string // host:port
	cmd   *exec.Cmd
	out   *syncBuffer
	done  chan struct{}
}

// syncBuffer is a bytes.Buffer a process writes and a test reads.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// freePort returns a port on 127.0.0.1 that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// caddyfileFor is a Caddyfile with admin on adminPort and the refractor
// block body under /archlinux/ on httpPort, all on 127.0.0.1. $SELF in the
// block is that site's URL of the block (for peer_url).
func caddyfileFor(adminPort, httpPort int, refractorBlock string) string {
	refractorBlock = strings.ReplaceAll(refractorBlock, "$SELF", fmt.Sprintf("http://127.0.0.1:%d/archlinux/", httpPort))
	return fmt.Sprintf(`{
	admin 127.0.0.1:%d
	persist_config off
	default_bind 127.0.0.1
	grace_period 1s
}
http://:%d {
	handle_path /archlinux/* {
		refractor {
%s
		}
	}
}
`, adminPort, httpPort, refractorBlock)
}

// startCaddyProcess runs Caddy with home as its HOME and XDG directories,
// serving refractorBlock; it returns once the config is loaded, and stops
// the process when the test ends.
func startCaddyProcess(t *testing.T, home, refractorBlock string) *caddyProcess {
	t.Helper()
	bin, err := testcaddyBinary()
	if err != nil {
		t.Fatal(err)
	}
	adminPort, httpPort := freePort(t), freePort(t)
	file := filepath.Join(t.TempDir(), "Caddyfile")
	if err := os.WriteFile(file, []byte(caddyfileFor(adminPort, httpPort, refractorBlock)), 0o600); err != nil {
		t.Fatal(err)
	}
	p := &caddyProcess{
		home: home, admin: fmt.Sprintf("127.0.0.1:%d", adminPort), http: fmt.Sprintf("127.0.0.1:%d", httpPort),
		out: &syncBuffer{}, done: make(chan struct{}),
	}
	p.cmd = exec.Command(bin, "run", "--config", file, "--adapter", "caddyfile")
	p.cmd.Env = append(os.Environ(), "HOME="+home, "XDG_DATA_HOME="+home, "XDG_CONFIG_HOME="+home)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.stop(t)
		if t.Failed() {
			t.Logf("output of the Caddy process with home %s:\n%s", home, tail(p.out.String(), 8<<10))
		}
	})
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get("http://" + p.admin + "/config/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p
			}
		}
		select {
		case <-p.done:
			t.Fatalf("Caddy exited at start:\n%s", tail(p.out.String(), 8<<10))
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("Caddy's admin API did not answer within 60s:\n%s", tail(p.out.String(), 8<<10))
		}
	}
}

// stop interrupts the process, as systemd or Ctrl-C does, and waits for it
// to exit (Caddy cleans its modules up first); it kills it after 30s.
func (p *caddyProcess) stop(t *testing.T) {
	t.Helper()
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(os.Interrupt)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
		t.Errorf("Caddy did not exit within 30s of an interrupt")
	}
}

// url is the URL of a path under the process's refractor.
func (p *caddyProcess) url(rel string) string { return "http://" + p.http + "/archlinux/" + rel }

// pools returns the process's pools from its admin API.
func (p *caddyProcess) pools(t *testing.T) []PoolStatus {
	t.Helper()
	resp, err := http.Get("http://" + p.admin + "/refractor/pools")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out []PoolStatus
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatal(err)
	}
	return out
}

// reload loads a new refractor block into the running process.
func (p *caddyProcess) reload(t *testing.T, refractorBlock string) {
	t.Helper()
	var adminPort, httpPort int
	fmt.Sscanf(strings.TrimPrefix(p.admin, "127.0.0.1:"), "%d", &adminPort)
	fmt.Sscanf(strings.TrimPrefix(p.http, "127.0.0.1:"), "%d", &httpPort)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+p.admin+"/load",
		strings.NewReader(caddyfileFor(adminPort, httpPort, refractorBlock)))
	req.Header.Set("Content-Type", "text/caddyfile")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var msg bytes.Buffer
		_, _ = msg.ReadFrom(resp.Body)
		t.Fatalf("reload: %s: %s", resp.Status, msg.String())
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}
