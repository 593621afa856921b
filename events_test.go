package refractor

import (
	"context"
	"slices"
	"strconv"
	"sync"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/caddy-refractor/refractor/internal/testmirror"
	"github.com/caddy-refractor/refractor/pool"
)

func init() {
	caddy.RegisterModule(eventRecorder{})
}

// eventRecorder is a test-only events handler that keeps every event it is
// given in recordedEvents.
type eventRecorder struct{}

// recordedEvents are the events eventRecorder handled.
var recordedEvents struct {
	sync.Mutex
	events []caddy.Event
}

// CaddyModule returns the Caddy module information.
func (eventRecorder) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "events.handlers.refractor_test_recorder",
		New: func() caddy.Module { return new(eventRecorder) },
	}
}

// Handle records e.
func (eventRecorder) Handle(_ context.Context, e caddy.Event) error {
	recordedEvents.Lock()
	defer recordedEvents.Unlock()
	recordedEvents.events = append(recordedEvents.events, e)
	return nil
}

// UnmarshalCaddyfile takes no options.
func (*eventRecorder) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the handler's name
	return nil
}

// eventsOf returns the recorded events named name from the pool poolName.
func eventsOf(name, poolName string) []caddy.Event {
	recordedEvents.Lock()
	defer recordedEvents.Unlock()
	var out []caddy.Event
	for _, e := range recordedEvents.events {
		if e.Name() == name && e.Data["pool"] == poolName {
			out = append(out, e)
		}
	}
	return out
}

// TestEventsOnJoinAndResign: a subscriber of the events app sees each mirror
// join, and the slow one resign, with the documented data.
func TestEventsOnJoinAndResign(t *testing.T) {
	files := testFiles()
	slow, fast, spare := testmirror.New(t, files), testmirror.New(t, files), testmirror.New(t, files)
	slow.SetRate(512 << 10)
	const poolName = "events-resign"
	tester := startSites(t, `
	events {
		on refractor.mirror_joined refractor_test_recorder
		on refractor.mirror_resigned refractor_test_recorder
		on refractor.mirror_evicted refractor_test_recorder
	}
`, `
http://localhost:`+strconv.Itoa(httpPort)+` {
	handle_path /archlinux/* {
		refractor {
`+resignationConfig(poolName, slow, fast, spare)+`
		}
	}
}
`)
	waitFor(t, "join events of the first two mirrors", func() bool { return len(eventsOf(EventMirrorJoined, poolName)) >= 2 })
	r := driveUntilResigned(t, tester, poolName, files)

	waitFor(t, "a resign event", func() bool { return len(eventsOf(EventMirrorResigned, poolName)) > 0 })
	e := eventsOf(EventMirrorResigned, poolName)[0]
	if e.Data["mirror"] != r.Mirror || e.Data["reason"] != pool.ReasonResigned || e.Data["score"] != r.Score {
		t.Errorf("resign event data %v, want mirror %s, reason %s, score %v", e.Data, r.Mirror, pool.ReasonResigned, r.Score)
	}
	if origin := e.Origin(); origin == nil || origin.CaddyModule().ID != "http.handlers.refractor" {
		t.Errorf("event origin %v, want the refractor handler", origin)
	}
	// The replacement joins too.
	waitFor(t, "the replacement's join event", func() bool { return len(eventsOf(EventMirrorJoined, poolName)) >= 3 })
	var joined []string
	for _, e := range eventsOf(EventMirrorJoined, poolName) {
		joined = append(joined, e.Data["mirror"].(string))
		if e.Data["reason"] != "joined" {
			t.Errorf("join event reason %v, want joined", e.Data["reason"])
		}
	}
	for _, m := range []string{slow.Base(), fast.Base(), spare.Base()} {
		if !slices.Contains(joined, m) {
			t.Errorf("no join event for %s (got %v)", m, joined)
		}
	}
	if got := eventsOf(EventMirrorEvicted, poolName); len(got) != 0 {
		t.Errorf("%d evict events, want none", len(got))
	}
}
