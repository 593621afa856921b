package pool

import (
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Bodies travel in blocks from the pool of their size: a body smaller than
// a small block takes one of those (the many small files of a package set),
// everything else full blocks, the size of a copy buffer.
const (
	smallBlockSize = 4 << 10
	blockSize      = 32 << 10
)

var blockPools = [2]sync.Pool{
	{New: func() any { return allocBlock(smallBlockSize, 0) }},
	{New: func() any { return allocBlock(blockSize, 1) }},
}

// allocBlock makes a block of class; the benchmark finds the blocks in a
// heap profile by this name.
func allocBlock(size, class int) *block { return &block{buf: make([]byte, size), class: class} }

// block is a piece of a body on its way to the client.
type block struct {
	buf    []byte
	n      int           // bytes in buf
	class  int           // index in blockPools
	budget *atomic.Int64 // if set, counts the block until it is released
}

// newBlock returns an empty block for a body of size bytes (-1: unknown).
func newBlock(size int64) *block {
	class := 1
	if size >= 0 && size <= smallBlockSize {
		class = 0
	}
	b := blockPools[class].Get().(*block)
	b.n = 0
	return b
}

func (b *block) full() bool   { return b.n == len(b.buf) }
func (b *block) free() []byte { return b.buf[b.n:] }
func (b *block) data() []byte { return b.buf[:b.n] }

// charge counts b in budget until it is released.
func (b *block) charge(budget *atomic.Int64) {
	b.budget = budget
	budget.Add(int64(len(b.buf)))
}

func (b *block) release() {
	if b.budget != nil {
		b.budget.Add(-int64(len(b.buf)))
		b.budget = nil
	}
	blockPools[b.class].Put(b)
}

func releaseBlocks(bs []*block) {
	for _, b := range bs {
		b.release()
	}
}

// sink writes a committed response body to the client from a goroutine of
// its own, so that a transfer whose client is slow is never stuck in a write
// while holding a worker: the transfer (the sink's only producer) queues
// blocks, the sink writes them in order and releases each one as it reaches
// the client.
type sink struct {
	w       http.ResponseWriter
	written atomic.Int64 // bytes written to the client
	// check, if set before the first offer, sees each block before it is
	// written, in the writer goroutine; an error stops the sink with it,
	// the block unwritten (verify.go).
	check func([]byte) error

	mu      sync.Mutex // a leaf lock: nothing else is locked while it is held
	queue   []*block   // not yet written, in order
	queued  int64      // bytes in queue
	writing bool       // a write to the client is under way
	wrote   time.Time  // when the write under way began
	dryAt   time.Time  // when the writer last ran out of data
	err     error      // the client's write error, if any
	closing bool       // no more blocks: write the queue and stop
	abort   bool       // stop without writing the queue
	running bool       // the writer goroutine was started

	wake chan struct{} // buffered: the writer has something to do
	room chan struct{} // buffered: the queue shrank, or the writer stopped
	done chan struct{} // closed when the writer goroutine returns
}

func newSink(w http.ResponseWriter) *sink {
	return &sink{
		w:     w,
		dryAt: time.Now(),
		wake:  make(chan struct{}, 1),
		room:  make(chan struct{}, 1),
		done:  make(chan struct{}),
	}
}

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// offer queues b unless the sink is full (fullLocked), or whatever the
// queue holds if force is set, and reports whether it did. It fails once
// the client has gone.
func (s *sink) offer(b *block, force bool) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return false, s.err
	}
	if !force && s.fullLocked() {
		return false, nil
	}
	if !s.running {
		s.running = true
		go s.run()
	}
	s.queue = append(s.queue, b)
	s.queued += int64(b.n)
	signal(s.wake)
	return true, nil
}

// clientBound is how long the writer has had data to write without a
// pause, which is how long the client, not the mirror, has been holding
// the transfer back; 0 if the writer is waiting for data.
func (s *sink) clientBound() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.idleLocked() {
		return 0
	}
	return time.Since(s.dryAt)
}

// starving reports whether the writer waits for data.
func (s *sink) starving() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.idleLocked()
}

// idleLocked reports whether everything queued has been written. s.mu
// must be held.
func (s *sink) idleLocked() bool { return len(s.queue) == 0 && !s.writing }

// queueBlocks is how many blocks may wait for a client that keeps up, so
// that the mirror's reader and the client's writer rarely wait for each
// other. Until the client has taken provenFast bytes (more than socket
// buffers hold for a client that does not read), one block may wait: many
// slow clients arriving at once then hold little.
const (
	queueBlocks = 4
	provenFast  = 512 << 10
)

// queueRoom is how many blocks may wait now. s.mu must be held.
func (s *sink) queueRoom() int {
	if s.written.Load() < provenFast {
		return 1
	}
	return queueBlocks
}

// readAheadStall: while a write to the client has been blocked this long,
// the client is slow, and reading ahead of it would only hold memory.
const readAheadStall = 10 * time.Millisecond

// full reports whether the sink wants no block now: the queue is full, or
// the write under way shows a slow client. It returns the
// client's error, if any.
func (s *sink) full() (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.fullLocked(), s.err
}

func (s *sink) fullLocked() bool { return len(s.queue) >= s.queueRoom() || s.slowLocked() }

// slow reports whether the write under way shows a slow client.
func (s *sink) slow() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.slowLocked()
}

func (s *sink) slowLocked() bool { return s.stalledLocked() >= readAheadStall }

// writeStalled is how long the write under way has been blocked, or 0.
func (s *sink) writeStalled() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stalledLocked()
}

func (s *sink) stalledLocked() time.Duration {
	if !s.writing {
		return 0
	}
	return time.Since(s.wrote)
}

// backlog is how many bytes wait in the queue.
func (s *sink) backlog() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.queued
}

// dropQueued releases the queued blocks unwritten and returns how many
// bytes they held; the block being written, if any, goes on.
func (s *sink) dropQueued() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.dropLocked()
}

// dropLocked releases the queued blocks and returns how many bytes they
// held. s.mu must be held.
func (s *sink) dropLocked() int64 {
	n := s.queued
	releaseBlocks(s.queue)
	s.queue, s.queued = nil, 0
	return n
}

// waitRoom returns when the queue shrinks, the writer stops, done or stop
// is closed, or timeout fires (nil: never).
func (s *sink) waitRoom(done, stop <-chan struct{}, timeout <-chan time.Time) {
	select {
	case <-s.room:
	case <-done:
	case <-stop:
	case <-timeout:
	}
}

// drained reports whether everything queued has been written, or the
// client's error.
func (s *sink) drained() (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return false, s.err
	}
	return s.idleLocked(), nil
}

// close stops the writer once it has written the queue (abort: at once,
// dropping the queue) and waits for it. It returns the client's error, if
// any.
func (s *sink) close(abort bool) error {
	s.mu.Lock()
	s.closing = true
	s.abort = s.abort || abort
	if !s.running {
		s.dropLocked()
		s.mu.Unlock()
		return nil
	}
	signal(s.wake)
	if s.abort && s.writing {
		// A write to a client that does not read may never return: end
		// it, the connection is being aborted anyway.
		_ = http.NewResponseController(s.w).SetWriteDeadline(time.Now())
	}
	s.mu.Unlock()
	<-s.done
	return s.err
}

// run is the writer goroutine.
func (s *sink) run() {
	defer close(s.done)
	defer signal(s.room)
	s.mu.Lock()
	for {
		for len(s.queue) == 0 || s.abort || s.err != nil {
			if s.closing || s.err != nil || s.abort {
				s.dropLocked()
				s.mu.Unlock()
				return
			}
			s.dryAt = time.Now()
			s.mu.Unlock()
			signal(s.room) // the producer may wait for the queue to drain
			<-s.wake
			s.mu.Lock()
		}
		b := s.queue[0]
		s.queue[0] = nil
		s.queue = s.queue[1:]
		s.queued -= int64(b.n)
		s.writing, s.wrote = true, time.Now()
		s.mu.Unlock()
		signal(s.room)

		var n int
		err := error(nil)
		if s.check != nil {
			err = s.check(b.data())
		}
		if err == nil {
			n, err = s.w.Write(b.data())
		}
		s.written.Add(int64(n))
		b.release()

		s.mu.Lock()
		s.writing = false
		if err != nil {
			s.err = err
		}
	}
}
