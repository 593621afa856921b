package filecache

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func content(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7) + seed
	}
	return b
}

// put fills the store with data through a fill, in chunks.
func put(t *testing.T, s *Store, data []byte) Sum {
	t.Helper()
	sum := sha256.Sum256(data)
	f, leader, err := s.Begin(sum, int64(len(data)))
	if err != nil || !leader {
		t.Fatalf("Begin: leader %v, %v", leader, err)
	}
	f.Start(time.Unix(1700000000, 0), int64(len(data)))
	for off := 0; off < len(data); off += 1000 {
		if _, err := f.Write(data[off:min(off+1000, len(data))]); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Finish(nil); err != nil {
		t.Fatal(err)
	}
	f.Release()
	return sum
}

func open(t *testing.T, dir string, opts Options) *Store {
	t.Helper()
	s, err := Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// Readers that join a fill before its first byte and in its middle both
// read the whole file as it is written; the file is then in the store.
func TestReadersFollowAGrowingFile(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	data := content(100_000, 1)
	sum := sha256.Sum256(data)
	f, _, err := s.Begin(sum, int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	if again, leader, _ := s.Begin(sum, int64(len(data))); again != f || leader {
		t.Fatal("a second Begin did not join the fill in flight")
	}
	got := make(chan []byte, 2)
	read := func() {
		r := f.NewReader(context.Background())
		defer r.Close()
		b, err := io.ReadAll(r)
		if err != nil {
			t.Error(err)
		}
		got <- b
	}
	go read()
	f.Start(time.Time{}, f.Size())
	f.Write(data[:50_000])
	go read()
	f.Write(data[50_000:])
	if err := f.Finish(nil); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if b := <-got; !bytes.Equal(b, data) {
			t.Errorf("a reader got %d bytes, not the file", len(b))
		}
	}
	file, info, ok := s.Get(sum, int64(len(data)))
	if !ok || info.Size() != int64(len(data)) {
		t.Fatal("the complete file is not in the store")
	}
	file.Close()
	if st := s.Stats(); st.Files != 1 || st.Size != int64(len(data)) || st.Filling != 0 || st.Reserved != 0 {
		t.Errorf("stats %+v", st)
	}
}

// A request that joined a fill reads it whole even if the fill ends, and
// its file is closed by the writer, before the request's reader opens.
func TestAJoinerReadsAFillThatEndedFirst(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	data := content(10_000, 11)
	sum := sha256.Sum256(data)
	f, _, _ := s.Begin(sum, int64(len(data)))
	joined, _, _ := s.Begin(sum, int64(len(data)))
	f.Start(time.Time{}, f.Size())
	f.Write(data)
	f.Finish(nil)
	f.Release() // the leader's own request is done

	r := joined.NewReader(context.Background())
	b, err := io.ReadAll(r)
	r.Close()
	joined.Release()
	if err != nil || !bytes.Equal(b, data) {
		t.Errorf("the joiner read %d bytes, %v", len(b), err)
	}
}

// A fill whose bytes are not the promised ones, or that fails, leaves
// nothing behind; a reader behind a failed fill gets its error.
func TestFailedFillsLeaveNothing(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Options{})
	data := content(10_000, 2)
	sum := sha256.Sum256(data)

	f, _, _ := s.Begin(sum, int64(len(data)))
	f.Start(time.Time{}, f.Size())
	wrong := bytes.Clone(data)
	wrong[5000] ^= 1
	f.Write(wrong)
	if err := f.Finish(nil); err == nil {
		t.Error("a file of another hash was committed")
	}

	f, _, _ = s.Begin(sum, int64(len(data)))
	f.Start(time.Time{}, f.Size())
	f.Write(data[:4000])
	r := f.NewReader(context.Background())
	defer r.Close()
	cause := errors.New("mirror gone")
	f.Finish(cause)
	b, err := io.ReadAll(r)
	if len(b) != 4000 || !errors.Is(err, cause) || !errors.Is(r.Err(), cause) {
		t.Errorf("reader of a failed fill: %d bytes, %v", len(b), err)
	}

	if s.Has(sum) {
		t.Error("the store has the file")
	}
	if left, _ := os.ReadDir(filepath.Join(dir, "tmp")); len(left) != 0 {
		t.Errorf("left in tmp: %v", left)
	}
}

// A store opened again finds its files, in their order of use, and
// removes what fills left behind.
func TestReopenFindsFilesAndCleansLeftovers(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Options{})
	a, b := content(1000, 3), content(1000, 4)
	sa, sb := put(t, s, a), put(t, s, b)
	time.Sleep(10 * time.Millisecond) // distinct use times, whatever the clock's resolution
	f, _, _ := s.Get(sa, 1000)        // a used after b
	f.Close()
	os.WriteFile(filepath.Join(dir, "tmp", "fill-123"), []byte("half a file"), 0o644)

	s = open(t, dir, Options{MaxSize: 2000})
	if left, _ := os.ReadDir(filepath.Join(dir, "tmp")); len(left) != 0 {
		t.Errorf("leftovers not removed: %v", left)
	}
	if !s.Has(sa) || !s.Has(sb) {
		t.Fatal("the reopened store lost its files")
	}
	put(t, s, content(1000, 5)) // evicts the least recently used: b
	if !s.Has(sa) || s.Has(sb) {
		t.Errorf("after a restart, eviction took a (used last): has a %v, has b %v", s.Has(sa), s.Has(sb))
	}
}

// MaxSize counts fills in flight: a file that cannot fit is not cached,
// and one that can makes room by evicting.
func TestMaxSizeBoundsFilesAndFills(t *testing.T) {
	s := open(t, t.TempDir(), Options{MaxSize: 2500})
	put(t, s, content(1000, 6))
	put(t, s, content(1000, 7))
	if _, _, err := s.Begin(sha256.Sum256(content(3000, 8)), 3000); err == nil {
		t.Error("a file over max_size was begun")
	}
	data := content(1000, 9)
	f, _, err := s.Begin(sha256.Sum256(data), 1000)
	if err != nil {
		t.Fatal(err)
	}
	if st := s.Stats(); st.Size+st.Reserved > 2500 || st.Evicted != 1 {
		t.Errorf("stats %+v: want one eviction to make room", st)
	}
	f.Start(time.Time{}, f.Size())
	f.Write(data)
	f.Finish(nil)
	if st := s.Stats(); st.Size > 2500 || st.Files != 2 {
		t.Errorf("stats %+v", st)
	}
}

// A write the disk refuses fails the fill and is counted.
func TestWriteErrorsFailTheFill(t *testing.T) {
	s := open(t, t.TempDir(), Options{CreateTemp: func(dir, pattern string) (File, error) {
		f, err := os.CreateTemp(dir, pattern)
		return refusing{f}, err
	}})
	data := content(100, 10)
	f, _, _ := s.Begin(sha256.Sum256(data), 100)
	if _, err := f.Write(data); err == nil {
		t.Fatal("a refused write succeeded")
	}
	if err := f.Finish(errors.New("write failed")); err == nil || s.Has(sha256.Sum256(data)) {
		t.Error("the failed fill was kept")
	}
	if st := s.Stats(); st.WriteErrors != 1 {
		t.Errorf("write errors %d, want 1", st.WriteErrors)
	}
}

type refusing struct{ *os.File }

func (refusing) Write([]byte) (int, error) { return 0, errors.New("no space left on device") }

// min_free counts the bytes the fills in flight have yet to write: two
// fills that together would take the disk below it are not both begun.
func TestMinFreeCountsWhatFillsOwe(t *testing.T) {
	dir := t.TempDir()
	free, ok := freeSpace(dir)
	if !ok {
		t.Skip("free space is unknown here")
	}
	s := open(t, dir, Options{MinFree: free / 4})
	size := free / 2 // one fits above min_free, two do not
	if _, _, err := s.Begin(Sum{1}, size); err != nil {
		t.Fatalf("the first fill: %v", err)
	}
	if _, _, err := s.Begin(Sum{2}, size); err == nil {
		t.Error("a second fill was begun though both would take the disk below min_free")
	}
}

// A pending fill takes its size at Start and its hash when the caller
// learns it: kept only with a hash promised, and only if the bytes are it.
func TestPendingFills(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	data := content(5000, 12)
	sum := sha256.Sum256(data)
	for _, tc := range []struct {
		name    string
		promise *Sum
		kept    bool
	}{
		{"no hash learned", nil, false},
		{"the wrong hash", &Sum{9}, false},
		{"its hash", &sum, true},
	} {
		f, leader, err := s.BeginPending(Sum{0xee, byte(len(tc.name))})
		if err != nil || !leader || f.Size() != -1 || !f.Pending() {
			t.Fatalf("%s: BeginPending: leader %v, size %d, %v", tc.name, leader, f.Size(), err)
		}
		r := f.NewReader(context.Background())
		if err := f.Start(time.Time{}, int64(len(data))); err != nil {
			t.Fatal(err)
		}
		f.Write(data)
		if tc.promise != nil {
			f.Expect(*tc.promise)
		}
		err = f.Finish(nil)
		if b, rerr := io.ReadAll(r); rerr != nil || !bytes.Equal(b, data) {
			t.Errorf("%s: a reader got %d bytes, %v", tc.name, len(b), rerr)
		}
		r.Close()
		f.Release()
		if (err == nil) != tc.kept || s.Has(sum) != tc.kept {
			t.Errorf("%s: Finish %v, kept %v; want kept %v", tc.name, err, s.Has(sum), tc.kept)
		}
	}
	if st := s.Stats(); st.WriteErrors != 0 || st.Reserved != 0 {
		t.Errorf("stats %+v: a file that is not the promised one is no write error, and nothing stays reserved", st)
	}
}

// A pending fill may never be kept: it takes only the room there is,
// evicting nothing, and a Start after its Finish reserves nothing.
func TestPendingFillsEvictNothing(t *testing.T) {
	s := open(t, t.TempDir(), Options{MaxSize: 10000})
	kept := put(t, s, content(6000, 13))
	f, _, _ := s.BeginPending(Sum{0xee})
	if err := f.Start(time.Time{}, 6000); err == nil {
		t.Error("a pending fill that does not fit started")
	}
	if !s.Has(kept) {
		t.Error("a pending fill evicted a cached file")
	}
	f.Finish(errors.New("no room"))
	f.Release()

	g, _, _ := s.BeginPending(Sum{0xef})
	g.Finish(errors.New("gone"))
	if err := g.Start(time.Time{}, 100); err == nil {
		t.Error("a finished fill started")
	}
	g.Release()
	if st := s.Stats(); st.Reserved != 0 || st.Filling != 0 {
		t.Errorf("stats %+v: nothing may stay reserved", st)
	}
}
