package refractor

import (
	"context"
	"fmt"
	"sync"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyevents"

	"github.com/caddy-refractor/refractor/pool"
)

// Caddy events refractor emits when its pool changes, with data
// {pool, mirror, score, reason} (score in bytes per second). Subscribe to
// them in the events app, such as `events { on refractor.mirror_resigned
// exec ... }` with an events handler module.
const (
	EventMirrorJoined   = "refractor.mirror_joined"
	EventMirrorResigned = "refractor.mirror_resigned"
	EventMirrorEvicted  = "refractor.mirror_evicted"
	// EventMirrorLied: a mirror served a file whose bytes do not match
	// the repository's index (reason "lied", score 0); it is evicted.
	EventMirrorLied = "refractor.mirror_lied"
)

// eventQueueSize bounds the events waiting to be emitted; more are dropped
// (and counted) rather than held against the pool.
const eventQueueSize = 256

// mirrorEvent is an event waiting to be emitted.
type mirrorEvent struct {
	name   string
	mirror string
	score  float64
	reason string
}

// eventQueue hands events from the pool, which may hold its lock, to one
// goroutine that emits them: Caddy runs event handlers synchronously, and a
// handler must never stall the pool.
type eventQueue struct {
	pool    string
	ch      chan mirrorEvent
	dropped func()

	ctx     caddy.Context
	app     *caddyevents.App
	started chan struct{} // closed when the config this queue belongs to runs
	stop    chan struct{}
	done    chan struct{}
	once    sync.Once
}

// newEventQueue returns a queue for the pool named poolName's events; they
// are emitted once start is called. dropped is called for each event the
// full queue turns away.
func newEventQueue(poolName string, dropped func()) *eventQueue {
	return &eventQueue{pool: poolName, ch: make(chan mirrorEvent, eventQueueSize), dropped: dropped}
}

// push queues an event without ever blocking.
func (q *eventQueue) push(e mirrorEvent) {
	select {
	case q.ch <- e:
	default:
		q.dropped()
	}
}

// start begins emitting the queued events through the events app of ctx
// once Caddy reports the config started: the events app binds its
// subscriptions only when it starts, and the pool's first workers join
// during Provision. Without a configured events app nothing could observe
// the events, so they are only queued, then dropped.
func (q *eventQueue) start(ctx caddy.Context) error {
	app := eventsApp(ctx)
	if app == nil {
		return nil
	}
	q.ctx, q.app = ctx, app
	q.started, q.stop, q.done = make(chan struct{}), make(chan struct{}), make(chan struct{})
	if err := app.On("started", startedSignal{q.started}); err != nil {
		return fmt.Errorf("subscribing to Caddy's started event: %w", err)
	}
	go q.run()
	return nil
}

// startedSignal is an events handler that closes a channel at the first
// event it handles.
type startedSignal struct{ ch chan struct{} }

// Handle closes s.ch, once.
func (s startedSignal) Handle(context.Context, caddy.Event) error {
	select {
	case <-s.ch:
	default:
		close(s.ch)
	}
	return nil
}

func (q *eventQueue) run() {
	defer close(q.done)
	select {
	case <-q.started:
	case <-q.stop:
		return
	case <-q.ctx.Done():
		return
	}
	for {
		select {
		case e := <-q.ch:
			q.emit(e)
		case <-q.stop:
			return
		case <-q.ctx.Done():
			return
		}
	}
}

func (q *eventQueue) emit(e mirrorEvent) {
	q.app.Emit(q.ctx, e.name, map[string]any{
		"pool":   q.pool,
		"mirror": e.mirror,
		"score":  e.score,
		"reason": e.reason,
	})
}

// close stops the emitting goroutine and waits for it. Events still queued
// are dropped: the config they belong to is going away.
func (q *eventQueue) close() {
	if q.stop == nil {
		return
	}
	q.once.Do(func() {
		close(q.stop)
		<-q.done
	})
}

// eventsApp returns the events app of ctx if the config has one.
func eventsApp(ctx caddy.Context) *caddyevents.App {
	v, err := ctx.AppIfConfigured("events")
	if err != nil {
		return nil
	}
	app, _ := v.(*caddyevents.App)
	return app
}

// leaveEvent names the event for a mirror leaving the pool for reason, or
// "" for reasons that are no event (the pool shutting down).
func leaveEvent(reason string) string {
	switch reason {
	case pool.ReasonResigned:
		return EventMirrorResigned
	case pool.ReasonEvicted, pool.ReasonLied:
		return EventMirrorEvicted
	}
	return ""
}
