package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddy-refractor/refractor/internal/mirrorsim"
)

// fileRef is a file a client downloads.
type fileRef struct {
	name string
	size int64
	file mirrorsim.File // to check its bytes
}

func ref(f mirrorsim.File) fileRef { return fileRef{f.Name, f.Size, f} }

// machine is one client machine: it fetches the databases one after the
// other, then its packages with `parallel` downloads at a time, as pacman
// -Syu does with ParallelDownloads.
type machine struct {
	dbs      []fileRef
	packages []fileRef
}

// outcome is what one contender's run of the workload did.
type outcome struct {
	wall     time.Duration // until the last download ended, or the deadline
	censored bool          // the deadline stopped it
	good     int64         // bytes of files downloaded and checked
	received int64         // every body byte received, failed attempts too
	files    int
	done     int
	failures int // failed attempts (error, bad status, broken body)
	lost     int // files that failed every attempt
	corrupt  int // files whose bytes were wrong, or short but ended cleanly
	series   []int64
	cpu      time.Duration // this process's CPU time during the run
	// dbsDone is when the last machine had its databases (or gave up on
	// them), and dbsReceived the bytes received by then.
	dbsDone     time.Duration
	dbsReceived int64
	// machineWalls is when each machine had every file (the deadline if
	// it stopped the machine).
	machineWalls []time.Duration
	// machineDBs is when each machine had its databases.
	machineDBs []time.Duration
	// cacheFiles and cacheBytes are the files downloaded whole from
	// responses that said they came from refractor's LAN cache
	// (Refractor-Mirror: cache), and their bytes.
	cacheFiles int
	cacheBytes int64
}

// counters are what the downloads of a run add up as they go.
type counters struct {
	received   atomic.Int64 // every body byte
	cacheFiles atomic.Int64 // checked files whose response came from the cache
	cacheBytes atomic.Int64
}

// mirrorHeader is refractor's response header naming the mirror, or
// "cache" for its LAN cache.
const (
	mirrorHeader = "Refractor-Mirror"
	fromCache    = "cache"
)

// maxAttempts is how many times a client tries a file.
const maxAttempts = 3

// clientStall: a download that receives nothing for this long fails, as
// pacman's (libcurl's) low-speed limit does.
const clientStall = 10 * time.Second

// sampleTick is the period of the throughput series.
const sampleTick = 100 * time.Millisecond

// runWorkload downloads every machine's files from base(machine index)
// until done or the deadline, checking every byte.
func runWorkload(machines []machine, parallel int, base func(int) string, deadline time.Duration) outcome {
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	var (
		cnt      counters
		received = &cnt.received
		mu       sync.Mutex
		out      outcome
	)
	out.machineWalls = make([]time.Duration, len(machines))
	out.machineDBs = make([]time.Duration, len(machines))
	start, cpu0 := time.Now(), cpuTime()
	stopSampler := make(chan struct{})
	samplerDone := make(chan []int64)
	go func() {
		t := time.NewTicker(sampleTick)
		defer t.Stop()
		series := []int64{0}
		for {
			select {
			case <-t.C:
				series = append(series, received.Load())
			case <-stopSampler:
				series = append(series, received.Load())
				samplerDone <- series
				return
			}
		}
	}()

	record := func(f fileRef, r fetchResult) {
		mu.Lock()
		defer mu.Unlock()
		out.files++
		out.failures += r.failures
		switch {
		case r.corrupt:
			out.corrupt++
		case r.ok:
			out.done++
			out.good += f.size
		case !r.cut:
			out.lost++
		}
	}
	var wg sync.WaitGroup
	for i, m := range machines {
		wg.Go(func() {
			tr := &http.Transport{
				MaxIdleConnsPerHost: parallel + 1,
				DisableCompression:  true,
				ReadBufferSize:      64 << 10,
				IdleConnTimeout:     30 * time.Second,
			}
			defer tr.CloseIdleConnections()
			client := &http.Client{Transport: tr}
			b := base(i)
			for _, db := range m.dbs {
				record(db, fetchFile(ctx, client, b, db, &cnt))
			}
			mu.Lock()
			out.dbsDone, out.dbsReceived = time.Since(start), received.Load()
			out.machineDBs[i] = out.dbsDone
			mu.Unlock()
			files := make(chan fileRef)
			var inner sync.WaitGroup
			for range parallel {
				inner.Go(func() {
					for f := range files {
						record(f, fetchFile(ctx, client, b, f, &cnt))
					}
				})
			}
			for _, f := range m.packages {
				files <- f
			}
			close(files)
			inner.Wait()
			took := time.Since(start)
			if ctx.Err() != nil {
				took = deadline
			}
			mu.Lock()
			out.machineWalls[i] = took
			mu.Unlock()
		})
	}
	wg.Wait()
	out.wall, out.cpu = time.Since(start), cpuTime()-cpu0
	out.censored = ctx.Err() != nil
	if out.censored {
		out.wall = deadline
	}
	out.cacheFiles, out.cacheBytes = int(cnt.cacheFiles.Load()), cnt.cacheBytes.Load()
	close(stopSampler)
	out.series = <-samplerDone
	out.received = received.Load()
	return out
}

type fetchResult struct {
	ok       bool
	corrupt  bool
	cut      bool // the deadline stopped it
	failures int
}

// fetchFile downloads one file, retrying failures, and checks its bytes.
func fetchFile(ctx context.Context, client *http.Client, base string, f fileRef, cnt *counters) fetchResult {
	var r fetchResult
	for range maxAttempts {
		if ctx.Err() != nil {
			r.cut = true
			return r
		}
		err := fetchOnce(ctx, client, base+f.name, f, cnt)
		switch {
		case err == nil:
			r.ok = true
			return r
		case errors.Is(err, errCorrupt):
			r.corrupt = true
			return r
		case ctx.Err() != nil: // the deadline, not a failure
			r.cut = true
			return r
		}
		r.failures++
	}
	return r
}

var errCorrupt = errors.New("corrupt")

func fetchOnce(ctx context.Context, client *http.Client, url string, f fileRef, cnt *counters) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	stall := time.AfterFunc(clientStall, cancel)
	defer stall.Stop()
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	check := f.file.Checker(0)
	buf := bufPool.Get().(*[]byte)
	defer bufPool.Put(buf)
	for {
		stall.Reset(clientStall)
		n, err := resp.Body.Read(*buf)
		if n > 0 {
			cnt.received.Add(int64(n))
			_, _ = check.Write((*buf)[:n])
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			if !check.OK() {
				return errCorrupt
			}
			return err
		}
	}
	if !check.OK() || check.Written() != f.size {
		// Wrong bytes, or a short file that ended as if complete.
		return errCorrupt
	}
	if resp.Header.Get(mirrorHeader) == fromCache {
		cnt.cacheFiles.Add(1)
		cnt.cacheBytes.Add(f.size)
	}
	return nil
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 128<<10); return &b }}
