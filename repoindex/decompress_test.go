package repoindex

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"hash/crc64"
	"io"
	"math"
	"os"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

// textSample is compressible text of about n bytes.
func textSample(n int) []byte {
	var b bytes.Buffer
	for i := 0; b.Len() < n; i++ {
		fmt.Fprintf(&b, "Package: sample-%d\nVersion: %d.%d-1\nSHA256: %x\n\n", i, i%7, i%13, sha256.Sum256([]byte{byte(i), byte(i >> 8)}))
	}
	return b.Bytes()[:n]
}

// readAll decompresses data with lim.
func readAll(data []byte, lim Limits) ([]byte, error) {
	rc, err := Decompress(bytes.NewReader(data), lim)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(rc)
}

func TestDecompress(t *testing.T) {
	for _, size := range []int{0, 1, 4096, 1 << 20} {
		data := textSample(size)
		for _, format := range formats {
			t.Run(fmt.Sprintf("%s/%d", format, size), func(t *testing.T) {
				c, ok := compress(t, format, data)
				if !ok {
					t.Skipf("cannot write %s here", format)
				}
				got, err := readAll(c, Limits{})
				if err != nil || !bytes.Equal(got, data) {
					t.Fatalf("got %d bytes, %v; want the %d bytes compressed", len(got), err, len(data))
				}
			})
		}
	}
}

// Input without a known magic passes through, however short.
func TestDecompressPassesThrough(t *testing.T) {
	for _, data := range []string{"", "a", "\x1f", "BZ", "\xfd7zXZ", "%FILENAME%\nx\n", "Package: x\n"} {
		got, err := readAll([]byte(data), Limits{})
		if err != nil || string(got) != data {
			t.Errorf("Decompress(%q) = %q, %v", data, got, err)
		}
	}
}

// Concatenated streams (gzip members, zstd frames, xz streams with stream
// padding, bzip2 streams) are all read, as the tools do.
func TestDecompressConcatenated(t *testing.T) {
	a, b := textSample(1000), []byte("and a second stream\n")
	for _, format := range formats[1:] {
		t.Run(format, func(t *testing.T) {
			ca, ok := compress(t, format, a)
			if !ok {
				t.Skipf("cannot write %s here", format)
			}
			cb, _ := compress(t, format, b)
			joined := append(bytes.Clone(ca), cb...)
			if format == "xz" {
				joined = append(append(bytes.Clone(ca), 0, 0, 0, 0), cb...)
			}
			got, err := readAll(joined, Limits{})
			if want := append(bytes.Clone(a), b...); err != nil || !bytes.Equal(got, want) {
				t.Fatalf("got %q…, %v", got[:min(len(got), 40)], err)
			}
		})
	}
	// A zstd skippable frame first is still zstd.
	z, _ := compress(t, "zstd", b)
	skip := append([]byte{0x5e, 0x2a, 0x4d, 0x18, 3, 0, 0, 0, 'a', 'b', 'c'}, z...)
	if got, err := readAll(skip, Limits{}); err != nil || !bytes.Equal(got, b) {
		t.Errorf("zstd after a skippable frame: %q, %v", got, err)
	}
}

// bzip2 decoding is tested on a file bzip2 wrote (testdata/lines.bz2, the
// output of bzip2Lines), so that it is tested where the bzip2 command is
// missing too.
func bzip2Lines() []byte {
	var b bytes.Buffer
	for i := range 3000 {
		fmt.Fprintf(&b, "line %d of the bzip2 sample\n", i)
	}
	return b.Bytes()
}

func TestDecompressBzip2File(t *testing.T) {
	c, err := os.ReadFile("testdata/lines.bz2")
	must(t, err)
	got, err := readAll(c, Limits{})
	if err != nil || !bytes.Equal(got, bzip2Lines()) {
		t.Fatalf("got %d bytes, %v", len(got), err)
	}
	if _, err := readAll(c[:len(c)-10], Limits{}); err == nil {
		t.Error("a truncated bzip2 file decompressed without an error")
	}
}

// The xz command's output decodes: all check types, presets, several blocks
// (with their sizes in the block headers), several streams.
func TestDecompressXZTool(t *testing.T) {
	skipWithout(t, "xz")
	data := textSample(256 << 10)
	for _, args := range [][]string{
		{}, {"-0"}, {"-9e"}, {"--check=none"}, {"--check=crc32"}, {"--check=sha256"},
		{"-T2", "--block-size=32KiB"}, {"--block-list=1KiB,10KiB,100KiB", "--check=crc32"},
		{"--lzma2=preset=1,dict=4KiB"}, {"--lzma2=preset=6,dict=64MiB"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			c, _ := runFilter(t, data, "xz", append([]string{"-c"}, args...)...)
			got, err := readAll(c, Limits{})
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("got %d bytes, %v", len(got), err)
			}
		})
	}
	big, _ := runFilter(t, []byte("x"), "xz", "-c", "--lzma2=dict=65MiB")
	if _, err := readAll(big, Limits{}); !errors.Is(err, ErrLimit) {
		t.Errorf("xz with a 65 MiB dictionary: %v, want ErrLimit", err)
	}
}

// Truncated compressed input is an error, wherever it is cut.
func TestDecompressTruncated(t *testing.T) {
	data := textSample(16 << 10)
	inputs := map[string][]byte{}
	for _, format := range formats[1:] {
		if c, ok := compress(t, format, data); ok {
			inputs[format] = c
		}
	}
	if c, ok := runFilter(t, data, "xz", "-c", "-T2", "--block-size=4KiB", "--check=sha256"); ok {
		inputs["xz blocks"] = c
	}
	inputs["xz handmade"] = xzFile(xzCheckCRC64, 22, []byte("one"), nil, textSample(70000))
	for name, c := range inputs {
		t.Run(name, func(t *testing.T) {
			step := max(1, len(c)/100)
			for cut := 6; cut < len(c); cut++ {
				if cut > 100 && cut < len(c)-100 && cut%step != 0 {
					continue // every byte near the ends, a hundred in between
				}
				if got, err := readAll(c[:cut], Limits{}); err == nil {
					t.Fatalf("cut at %d of %d: %d bytes and no error", cut, len(c), len(got))
				}
			}
		})
	}
}

// Past MaxDecompressed bytes, reads fail with ErrLimit, having returned
// exactly MaxDecompressed bytes.
func TestDecompressLimit(t *testing.T) {
	zeros := make([]byte, 100<<20)
	bomb, _ := compress(t, "zstd", zeros)
	t.Logf("100 MiB of zeros is %d bytes of zstd", len(bomb))
	lim := Limits{MaxDecompressed: 1 << 20}
	got, err := readAll(bomb, lim)
	if !errors.Is(err, ErrLimit) || len(got) != 1<<20 {
		t.Fatalf("zstd bomb: %d bytes, %v; want 1 MiB and ErrLimit", len(got), err)
	}
	// Below the limit, more than the window comes out whole.
	z, _ := compress(t, "zstd", zeros[:maxWindow+1])
	if got, err := readAll(z, Limits{}); err != nil || len(got) != maxWindow+1 {
		t.Fatalf("zstd at the default limit: %d bytes, %v; want all %d", len(got), err, maxWindow+1)
	}
	huge := Limits{MaxDecompressed: math.MaxInt64, MaxField: math.MaxInt}
	if got, err := readAll(z, huge); err != nil || len(got) != maxWindow+1 {
		t.Fatalf("zstd at the largest limit: %d bytes, %v; want all %d", len(got), err, maxWindow+1)
	}
	for _, format := range formats {
		t.Run(format, func(t *testing.T) {
			for _, n := range []int{1 << 20, 1<<20 + 1, 4 << 20} {
				c, ok := compress(t, format, zeros[:n])
				if !ok {
					t.Skipf("cannot write %s here", format)
				}
				got, err := readAll(c, lim)
				if n == 1<<20 && (err != nil || len(got) != n) {
					t.Errorf("%d bytes at a limit of %d: %d bytes, %v", n, 1<<20, len(got), err)
				}
				if n > 1<<20 && (!errors.Is(err, ErrLimit) || len(got) != 1<<20) {
					t.Errorf("%d bytes at a limit of %d: %d bytes, %v; want ErrLimit", n, 1<<20, len(got), err)
				}
			}
		})
	}
}

// A zstd frame asking for a window over maxWindow is refused.
func TestDecompressZstdWindow(t *testing.T) {
	frame := func(windowLog byte) []byte {
		// No content size, a window of 1<<windowLog, one raw block "x".
		return []byte{0x28, 0xb5, 0x2f, 0xfd, 0x00, (windowLog - 10) << 3, 0x09, 0x00, 0x00, 'x'}
	}
	if got, err := readAll(frame(26), Limits{}); err != nil || string(got) != "x" {
		t.Errorf("64 MiB window: %q, %v", got, err)
	}
	if got, err := readAll(frame(27), Limits{}); !errors.Is(err, ErrLimit) {
		t.Errorf("128 MiB window: %q, %v; want ErrLimit", got, err)
	}
}

// An xz block asking for a dictionary over maxWindow is refused before it is
// allocated.
func TestDecompressXZDictionary(t *testing.T) {
	for _, tc := range []struct {
		code  byte
		limit bool
	}{{0, false}, {22, false}, {28, false}, {29, true}, {39, true}, {40, true}} {
		_, err := readAll(xzFile(xzCheckCRC32, tc.code, []byte("data")), Limits{})
		if limited := errors.Is(err, ErrLimit); limited != tc.limit || (err != nil && !tc.limit) {
			t.Errorf("dictionary code %d: %v, want ErrLimit %v", tc.code, err, tc.limit)
		}
	}
	huge := Limits{MaxDecompressed: math.MaxInt64}
	if got, err := readAll(xzFile(xzCheckCRC32, 28, []byte("a"), []byte("b")), huge); err != nil || string(got) != "ab" {
		t.Errorf("the largest limit: %q, %v", got, err)
	}
	// One dictionary serves every block: many blocks cost no more.
	blocks := make([][]byte, 16641)
	if _, err := readAll(xzFile(xzCheckNone, 28, blocks...), Limits{MaxDecompressed: 1 << 20}); err != nil {
		t.Errorf("16641 blocks of a 64 MiB dictionary: %v", err)
	}
}

// Corrupt xz containers are errors.
func TestDecompressXZCorrupt(t *testing.T) {
	good := xzFile(xzCheckSHA256, 20, []byte("hello"), []byte("world"))
	if got, err := readAll(good, Limits{}); err != nil || string(got) != "helloworld" {
		t.Fatalf("handmade xz: %q, %v", got, err)
	}
	for i := 6; i < len(good); i++ {
		bad := bytes.Clone(good)
		bad[i] ^= 0x40
		if got, err := readAll(bad, Limits{}); err == nil {
			t.Errorf("byte %d flipped: %q and no error", i, got)
		}
	}
	if _, err := readAll(append(bytes.Clone(good), 0, 0), Limits{}); err == nil {
		t.Error("stream padding of 2 bytes: no error")
	}
	if _, err := readAll(append(bytes.Clone(good), 1, 2, 3, 4), Limits{}); err == nil {
		t.Error("garbage after the stream: no error")
	}
}

// Close frees the zstd decoder's goroutines, and reading after it fails.
func TestDecompressClose(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	for _, format := range []string{"zstd", "gzip", "xz", "plain"} {
		c, _ := compress(t, format, textSample(64<<10))
		rc, err := Decompress(bytes.NewReader(c), Limits{})
		must(t, err)
		if _, err := rc.Read(make([]byte, 100)); err != nil {
			t.Fatal(err)
		}
		must(t, rc.Close())
		if _, err := rc.Read(make([]byte, 100)); err == nil {
			t.Errorf("%s: read after Close did not fail", format)
		}
	}
	if _, err := Decompress(bytes.NewReader([]byte{0x1f, 0x8b, 0, 0}), Limits{}); err == nil {
		t.Error("a broken gzip header: no error")
	}
}

// Check types of the handmade xz files.
const (
	xzCheckNone   = 0x00
	xzCheckCRC32  = 0x01
	xzCheckCRC64  = 0x04
	xzCheckSHA256 = 0x0a
)

// xzFile writes an xz stream by hand, one block for each of blocks, each with
// the dictionary size code dict and holding its data in uncompressed LZMA2
// chunks.
func xzFile(check byte, dict byte, blocks ...[]byte) []byte {
	le32 := func(v uint32) []byte { return binary.LittleEndian.AppendUint32(nil, v) }
	flags := []byte{0, check}
	out := append(append(bytes.Clone(xzMagic), flags...), le32(crc32.ChecksumIEEE(flags))...)
	var index []byte
	for _, data := range blocks {
		hdr := []byte{2, 0, 0x21, 1, dict, 0, 0, 0}
		hdr = append(hdr, le32(crc32.ChecksumIEEE(hdr))...)
		var comp []byte
		for i, chunk := range chunks(data, 1<<16) {
			ctl := byte(2)
			if i == 0 {
				ctl = 1 // the first chunk resets the dictionary
			}
			comp = append(comp, ctl, byte((len(chunk)-1)>>8), byte(len(chunk)-1))
			comp = append(comp, chunk...)
		}
		comp = append(comp, 0)
		out = append(append(out, hdr...), comp...)
		out = append(out, make([]byte, -len(comp)&3)...)
		var sum []byte
		switch check {
		case xzCheckCRC32:
			sum = le32(crc32.ChecksumIEEE(data))
		case xzCheckCRC64:
			sum = binary.LittleEndian.AppendUint64(nil, crc64.Checksum(data, crc64.MakeTable(crc64.ECMA)))
		case xzCheckSHA256:
			s := sha256.Sum256(data)
			sum = s[:]
		}
		out = append(out, sum...)
		index = binary.AppendUvarint(index, uint64(len(hdr)+len(comp)+len(sum)))
		index = binary.AppendUvarint(index, uint64(len(data)))
	}
	index = append(binary.AppendUvarint([]byte{0}, uint64(len(blocks))), index...)
	index = append(index, make([]byte, -len(index)&3)...)
	index = append(index, le32(crc32.ChecksumIEEE(index))...)
	out = append(out, index...)
	foot := append(le32(uint32(len(index)/4-1)), flags...)
	return append(append(append(out, le32(crc32.ChecksumIEEE(foot))...), foot...), 'Y', 'Z')
}

// chunks splits b into pieces of at most n bytes; none if b is empty.
func chunks(b []byte, n int) [][]byte {
	var out [][]byte
	for len(b) > 0 {
		k := min(n, len(b))
		out = append(out, b[:k])
		b = b[k:]
	}
	return out
}
