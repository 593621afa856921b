package refractor

import (
	"fmt"
	"os"
	"strconv"
	"testing"
)

// Ports of the in-process Caddy that the integration tests drive; only this
// package starts one. REFRACTOR_TEST_PORT_BASE moves them, so that two
// checkouts can run their tests at once.
var adminPort, httpPort, httpsPort = testPorts()

func testPorts() (admin, http, https int) {
	base := 2999
	if v, err := strconv.Atoi(os.Getenv("REFRACTOR_TEST_PORT_BASE")); err == nil && v > 0 {
		base = v
	}
	return base, base + 1, base + 2
}

func TestMain(m *testing.M) {
	// Caddy writes autosave.json and its local CA under these.
	dir, err := os.MkdirTemp("", "refractor-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Setenv("XDG_CONFIG_HOME", dir)
	os.Setenv("XDG_DATA_HOME", dir)
	os.Setenv("HOME", dir)
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}
