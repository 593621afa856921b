package repoindex

import (
	"bufio"
	"bytes"
	"compress/bzip2"
	"errors"
	"fmt"
	"io"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/therootcompany/xz"
)

// maxWindow bounds the history a compressed stream may make the decoder
// keep: the zstd window and the xz dictionary. 64 MiB is what xz -9 and
// zstd -21 use; larger ones are refused as over a limit.
const maxWindow = 64 << 20

var (
	zstdMagic  = []byte{0x28, 0xb5, 0x2f, 0xfd}
	gzipMagic  = []byte{0x1f, 0x8b}
	xzMagic    = []byte{0xfd, '7', 'z', 'X', 'Z', 0x00}
	bzip2Magic = []byte("BZh")
)

// Decompress returns a reader of r's decompressed bytes: the format is
// detected from the magic bytes (zstd, gzip, xz, bzip2; anything else passes
// through unchanged), at most lim.MaxDecompressed bytes are returned, beyond
// which reads fail with an error wrapping ErrLimit. Truncated compressed
// input gives an error, never a silent short read. A zstd window or an xz
// dictionary over 64 MiB is refused with an error wrapping ErrLimit too.
// Close frees the decoder; it does not close r.
func Decompress(r io.Reader, lim Limits) (io.ReadCloser, error) {
	lim = lim.orDefault()
	br := bufio.NewReader(r)
	magic, err := br.Peek(len(xzMagic))
	if err != nil && err != io.EOF {
		return nil, fmt.Errorf("read index: %w", err)
	}
	d := &decoder{left: lim.MaxDecompressed, max: lim.MaxDecompressed}
	switch {
	case bytes.HasPrefix(magic, zstdMagic) || zstdSkippable(magic):
		z, err := zstd.NewReader(br,
			zstd.WithDecoderConcurrency(1),
			zstd.WithDecoderLowmem(true),
			zstd.WithDecoderMaxWindow(maxWindow),
			zstd.WithDecoderMaxMemory(maxWindow))
		if err != nil {
			return nil, fmt.Errorf("open zstd: %w", err)
		}
		d.r, d.what, d.close = z, "decompress zstd", z.Close
	case bytes.HasPrefix(magic, gzipMagic):
		z, err := gzip.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("open gzip: %w", err)
		}
		d.r, d.what, d.close = z, "decompress gzip", func() { z.Close() }
	case bytes.HasPrefix(magic, xzMagic):
		// Unlike github.com/ulikunitz/xz's reader, which allocates
		// whatever dictionary a block header asks for (up to 4 GiB), this
		// port of XZ Embedded refuses one over maxWindow.
		x, err := xz.NewReader(br, maxWindow)
		if err != nil {
			return nil, fmt.Errorf("open xz: %w", limitErr(err))
		}
		d.r, d.what = x, "decompress xz"
	case bytes.HasPrefix(magic, bzip2Magic):
		d.r, d.what = bzip2.NewReader(br), "decompress bzip2"
	default:
		d.r, d.what = br, "read index"
	}
	return d, nil
}

// zstdSkippable reports whether magic starts a zstd skippable frame.
func zstdSkippable(magic []byte) bool {
	return len(magic) >= 4 && magic[0]&0xf0 == 0x50 && bytes.Equal(magic[1:4], []byte{0x2a, 0x4d, 0x18})
}

// decoder is the ReadCloser Decompress returns: it counts what its decoder
// gives and fails past max bytes.
type decoder struct {
	r         io.Reader
	what      string // context for errors
	close     func()
	left, max int64
	err       error // sticky
}

var errClosed = errors.New("read after close")

func (d *decoder) Read(p []byte) (int, error) {
	if d.err != nil {
		return 0, d.err
	}
	if int64(len(p)) > d.left {
		p = p[:d.left+1] // a byte more than allowed tells whether there is more
	}
	n, err := d.r.Read(p)
	if int64(n) > d.left {
		n, d.left = int(d.left), 0
		d.err = fmt.Errorf("%s: over %d bytes: %w", d.what, d.max, ErrLimit)
		return n, d.err
	}
	d.left -= int64(n)
	if err != nil && err != io.EOF {
		d.err = fmt.Errorf("%s: %w", d.what, limitErr(err))
		return n, d.err
	}
	return n, err
}

// limitErr marks a decoder's error for a window or dictionary too large as
// over a limit.
func limitErr(err error) error {
	if errors.Is(err, zstd.ErrWindowSizeExceeded) || errors.Is(err, zstd.ErrDecoderSizeExceeded) || errors.Is(err, xz.ErrMemlimit) {
		return fmt.Errorf("%w: %w", ErrLimit, err)
	}
	return err
}

// Close frees the decoder (a zstd decoder holds goroutines and memory until
// closed). It does not close the underlying reader.
func (d *decoder) Close() error {
	if d.close != nil {
		d.close()
		d.close = nil
	}
	d.err = errClosed
	return nil
}
