package mirrorsim

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestContentIsDeterministicAndSeekable(t *testing.T) {
	const name, size = "core/os/x86_64/a-1-1-x86_64.pkg.tar.zst", 300<<10 + 13
	all := Generate(name, size)
	if !bytes.Equal(all, Generate(name, size)) {
		t.Fatal("two generations differ")
	}
	if bytes.Equal(all[:4096], Generate("other", 4096)) {
		t.Fatal("two files have the same content")
	}
	r := NewReader(name, size)
	for _, off := range []int64{0, 1, 7, 8, 65535, 65536, 65537, 200001, size - 3} {
		if _, err := r.Seek(off, io.SeekStart); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, 70000)
		n, err := io.ReadFull(r, got)
		if err != nil && err != io.ErrUnexpectedEOF {
			t.Fatal(err)
		}
		if want := all[off:min(off+70000, size)]; !bytes.Equal(got[:n], want) {
			t.Fatalf("bytes from offset %d differ from the whole file's", off)
		}
	}
	if n, err := r.ReadAt(make([]byte, 10), size); n != 0 || err != io.EOF {
		t.Fatalf("ReadAt past the end: %d, %v", n, err)
	}
}

func TestCheckerFindsMisplacedBytes(t *testing.T) {
	const name = "x.pkg.tar.zst"
	all := Generate(name, 1<<20)
	c := NewChecker(name, 100)
	_, _ = c.Write(all[100:5000])
	_, _ = c.Write(all[5000:])
	if !c.OK() || c.Written() != 1<<20-100 {
		t.Fatalf("a right body: OK %v, written %d", c.OK(), c.Written())
	}
	for _, shift := range []int{1, 8, 64 << 10, 128 << 10} {
		c := NewChecker(name, 0)
		_, _ = c.Write(all[shift : shift+200<<10])
		if c.OK() {
			t.Errorf("bytes shifted by %d passed", shift)
		}
	}
	other := Generate("y.pkg.tar.zst", 1<<20)
	c = NewChecker(name, 0)
	_, _ = c.Write(other)
	if c.OK() || c.Bad() != 0 {
		t.Errorf("another file's bytes: OK %v, first bad byte %d", c.OK(), c.Bad())
	}
}

func TestArchTree(t *testing.T) {
	tree := Arch(ArchConfig{Total: 256 << 20, Seed: 1})
	if again := Arch(ArchConfig{Total: 256 << 20, Seed: 1}); fmt.Sprint(again.Files()) != fmt.Sprint(tree.Files()) {
		t.Fatal("the same config gave two trees")
	}
	var total, large int64
	small := 0
	for _, f := range tree.Packages() {
		total += f.Size
		large = max(large, f.Size)
		if f.Size <= smallMax {
			small++
		}
	}
	if total < 250<<20 || total > 256<<20 || large != 64<<20 || small < 100 {
		t.Errorf("packages: %d bytes, largest %d, %d small", total, large, small)
	}
	for _, name := range []string{"core/os/x86_64/core.db", "lastsync"} {
		if _, ok := tree.Lookup(name); !ok {
			t.Errorf("no %s", name)
		}
	}
}

func serve(t *testing.T, c Config) *Server {
	t.Helper()
	s, err := Listen("127.0.0.1:0", New(c))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestRangeHeadAndNotFound(t *testing.T) {
	const name = "core/os/x86_64/big.pkg.tar.zst"
	s := serve(t, Config{Tree: NewList(GeneratedFile(name, 5<<20))})
	all := Generate(name, 5<<20)

	req, _ := http.NewRequest(http.MethodGet, s.Base()+name, nil)
	req.Header.Set("Range", "bytes=1000000-1999999")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(body, all[1000000:2000000]) {
		t.Fatalf("Range: status %d, %d bytes", resp.StatusCode, len(body))
	}

	resp, err = http.Head(s.Base() + name)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.ContentLength != 5<<20 || resp.Header.Get("Last-Modified") == "" {
		t.Fatalf("HEAD: status %d, length %d", resp.StatusCode, resp.ContentLength)
	}

	for _, path := range []string{s.Base() + "nope", s.URL + "/" + name} {
		resp, err = http.Get(path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s: status %d, want 404", path, resp.StatusCode)
		}
	}
	if s.Requests() != 4 {
		t.Errorf("%d requests counted, want 4", s.Requests())
	}
}

// The cap is a ceiling: a capped mirror can be slower than its rate on a
// busy machine, never faster.
func TestRateCapIsShared(t *testing.T) {
	const name, size, rate = "f.pkg.tar.zst", 48 << 10, 128 << 10
	s := serve(t, Config{Tree: NewList(GeneratedFile(name, size)), Rate: rate})
	start := time.Now()
	done := make(chan error)
	for range 2 {
		go func() {
			resp, err := http.Get(s.Base() + name)
			if err == nil {
				_, err = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			done <- err
		}()
	}
	for range 2 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	// 96 KiB at 128 KiB/s, less the bucket's burst (rate/20).
	least := time.Duration(int64(2*size-rate/20) * int64(time.Second) / rate)
	if d := time.Since(start); d < least {
		t.Errorf("two downloads took %v, faster than the shared cap allows (%v)", d, least)
	}
}

func TestScheduleAndFaults(t *testing.T) {
	const name = "f.pkg.tar.zst"
	s := serve(t, Config{
		Tree:     NewList(GeneratedFile(name, 1<<20)),
		Rate:     10 << 20,
		Schedule: []Step{{At: 20 * time.Millisecond, Rate: 1 << 20, Latency: time.Millisecond}},
	})
	s.StartSchedule()
	deadline := time.Now().Add(5 * time.Second)
	for s.Rate() != 1<<20 {
		if time.Now().After(deadline) {
			t.Fatalf("rate still %d after the scheduled step", s.Rate())
		}
		time.Sleep(5 * time.Millisecond)
	}
	s.StartSchedule()
	if s.Rate() != 10<<20 {
		t.Fatalf("StartSchedule did not reset the rate: %d", s.Rate())
	}

	s.SetRate(0)
	s.SetFault(ShortBody, "", 1000)
	resp, err := http.Get(s.Base() + name)
	if err != nil {
		t.Fatal(err)
	}
	n, err := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err == nil || n >= 1<<20 {
		t.Fatalf("short body: %d bytes, error %v; want a short read and an error", n, err)
	}
	s.SetFault(Status500, "other", 0)
	resp, err = http.Get(s.Base() + name)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("a fault for another path struck: status %d", resp.StatusCode)
	}
}

func TestListenOnlyOnLoopback(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:0", ":0", "192.0.2.1:0"} {
		if s, err := Listen(addr, New(Config{Tree: Files{}})); err == nil {
			s.Close()
			t.Errorf("Listen(%q) succeeded", addr)
		} else if !strings.Contains(err.Error(), "loopback") {
			t.Errorf("Listen(%q): %v", addr, err)
		}
	}
}

func TestBytesSentMatching(t *testing.T) {
	tree := NewList(GeneratedFile("a.db", 1000), GeneratedFile("b.pkg.tar.zst", 3000))
	s, err := Listen("127.0.0.1:0", New(Config{Tree: tree}))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, name := range []string{"a.db", "b.pkg.tar.zst", "b.pkg.tar.zst", "missing"} {
		resp, err := http.Get(s.Base() + name)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	isDB := func(name string) bool { return strings.HasSuffix(name, ".db") }
	if got := s.BytesSentMatching(isDB); got != 1000 {
		t.Errorf("bytes of a.db: %d, want 1000", got)
	}
	if got := s.BytesSentMatching(func(string) bool { return true }); got != 7000 || got != s.BytesSent() {
		t.Errorf("bytes of every file: %d (BytesSent %d), want 7000", got, s.BytesSent())
	}
}
