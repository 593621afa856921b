package pool

import (
	"context"
	"fmt"
	"io"
	"time"
)

// meter reads a mirror's body, counting its bytes and the time spent
// waiting for them (not the time spent handing them to the client). It fails
// the transfer when no byte arrives for the stall timeout, or when, over a
// stall timeout's worth of waiting, bytes arrive slower than minRate.
// A meter is used by one goroutine.
type meter struct {
	r       io.Reader
	n       int64
	busy    time.Duration
	stall   time.Duration
	cancel  context.CancelCauseFunc
	timer   *time.Timer
	minRate float64 // bytes per second; 0: no check

	// The current trickle check period: bytes and busy time at its start.
	periodBytes int64
	periodBusy  time.Duration
}

func (m *meter) Read(b []byte) (int, error) {
	if m.timer == nil {
		m.timer = time.AfterFunc(m.stall, func() { m.cancel(errStalled) })
	} else {
		m.timer.Reset(m.stall)
	}
	began := time.Now()
	n, err := m.r.Read(b)
	m.busy += time.Since(began)
	m.timer.Stop()
	m.n += int64(n)
	if span := m.busy - m.periodBusy; m.minRate > 0 && span >= m.stall {
		if rate := float64(m.n-m.periodBytes) / span.Seconds(); rate < m.minRate && err == nil {
			m.cancel(errTrickle)
			return n, fmt.Errorf("%w: %.0f B/s", errTrickle, rate)
		}
		m.periodBytes, m.periodBusy = m.n, m.busy
	}
	return n, err
}

func (m *meter) stop() {
	if m.timer != nil {
		m.timer.Stop()
	}
}
