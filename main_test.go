package refractor

import (
	"fmt"
	"os"
	"testing"
)

// Ports of the in-process Caddy that the integration tests drive; only this
// package starts one.
const (
	adminPort = 2999
	httpPort  = 9080
	httpsPort = 9443
)

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
