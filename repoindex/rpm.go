package repoindex

import (
	"bufio"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"
)

// RPM repositories (dnf, zypper): repodata/repomd.xml lists the metadata
// files with their sizes and hashes, and the primary metadata it lists
// gives every package's. Both are XML, read a token at a time.

// maxXMLDepth bounds the nesting of elements: primary's deepest is 5
// (metadata, package, format, rpm:provides, rpm:entry). Deeper input is
// refused with an error wrapping ErrLimit.
const maxXMLDepth = 64

// ParseRepomd parses an RPM repository's repodata/repomd.xml and calls fn
// for each data file whose checksum is SHA-256: its location href,
// relative to the repository root (the directory holding repodata/), its
// size and its hash. Data files with another checksum type, or lacking a
// location, size or checksum, with a malformed size or hash, with an href
// that is empty, absolute or contains "..", or with an xml:base (the file
// lives elsewhere), are skipped. An error from fn stops the parse and is
// returned as it is.
func ParseRepomd(r io.Reader, lim Limits, fn func(href string, e Entry) error) error {
	lim = lim.orDefault()
	in := &decoder{r: r, what: "read index", left: lim.MaxDecompressed, max: lim.MaxDecompressed}
	return parseRPMItems(in, lim, "repomd", "repomd", "data", fn)
}

// ParsePrimary parses an RPM repository's primary metadata
// (repodata/*primary.xml, possibly compressed) and calls fn for each
// package whose checksum is SHA-256: its location href, relative to the
// repository root (such as Packages/h/hello-2.12-1.fc40.x86_64.rpm), its
// size (<size package="...">) and its hash. Packages are skipped as
// ParseRepomd skips data files. An error from fn stops the parse and is
// returned as it is.
func ParsePrimary(r io.Reader, lim Limits, fn func(href string, e Entry) error) error {
	lim = lim.orDefault()
	dr, err := Decompress(r, lim)
	if err != nil {
		return fmt.Errorf("primary: %w", err)
	}
	defer dr.Close()
	return parseRPMItems(dr, lim, "primary", "metadata", "package", fn)
}

// rpmItem is what the children of one item element (a repomd "data", a
// primary "package") say; the first child of each name counts.
type rpmItem struct {
	href, size, sum, sumType string
	hasHref, hasSize, hasSum bool
	external                 bool // the location has an xml:base
}

// entry is the item's entry, if it is complete and safe.
func (it *rpmItem) entry() (Entry, bool) {
	if !strings.EqualFold(it.sumType, "sha256") || it.external {
		return Entry{}, false
	}
	e, ok := parseEntry(strings.TrimSpace(it.size), strings.TrimSpace(it.sum))
	return e, ok && safePath(it.href, true)
}

// parseRPMItems reads the XML document r, whose root element must be
// named root, and reports each child of the root named item, from its
// children: <location href> (and no xml:base), <size> (its package
// attribute, else its text) and <checksum type> (its text).
func parseRPMItems(r io.Reader, lim Limits, what, root, item string, fn func(string, Entry) error) error {
	rep := reporter{fn: fn, max: lim.MaxEntries, what: what}
	toks := &tokenReader{r: bufio.NewReader(r)}
	dec := xml.NewDecoder(toks)
	var (
		depth  int     // of the element being read
		at     int     // depth of the item being read, 0 outside one
		it     rpmItem // what its children said so far
		text   *string // the item's field that character data goes to
		buf    []byte  // that text so far
		rooted bool    // the root element was seen
	)
	perToken := lim.MaxField
	if perToken < math.MaxInt {
		perToken++ // the decoder may have read a byte ahead
	}
	for {
		toks.left = perToken
		tok, err := dec.Token()
		if err == io.EOF && !rooted {
			return fmt.Errorf("%s: no <%s> element", what, root)
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			if errors.Is(err, errTokenTooLong) {
				return fmt.Errorf("%s: an XML token over %d bytes: %w", what, lim.MaxField, ErrLimit)
			}
			return fmt.Errorf("%s: %w", what, err)
		}
		switch tok := tok.(type) {
		case xml.StartElement:
			if depth++; depth > maxXMLDepth {
				return fmt.Errorf("%s: elements nested over %d deep: %w", what, maxXMLDepth, ErrLimit)
			}
			switch {
			case depth == 1:
				if rooted {
					return fmt.Errorf("%s: a second root element", what)
				}
				if tok.Name.Local != root {
					return fmt.Errorf("%s: the document is <%s>, not <%s>", what, tok.Name.Local, root)
				}
				rooted = true
			case depth == 2 && tok.Name.Local == item:
				at, it = depth, rpmItem{}
			case at > 0 && depth == at+1:
				text = it.start(tok)
				buf = buf[:0]
			}
		case xml.CharData:
			if text != nil && depth == at+1 {
				if len(buf)+len(tok) > lim.MaxField {
					return fmt.Errorf("%s: a value over %d bytes: %w", what, lim.MaxField, ErrLimit)
				}
				buf = append(buf, tok...)
			}
		case xml.EndElement:
			if text != nil && depth == at+1 {
				*text, text = string(buf), nil
			}
			if depth == at {
				at = 0
				if e, ok := it.entry(); ok {
					if err := rep.report(it.href, e); err != nil {
						return err
					}
				}
			}
			depth--
		}
	}
}

// start reads the start of a child of the item, and returns the field its
// character data is, if any.
func (it *rpmItem) start(el xml.StartElement) *string {
	switch el.Name.Local {
	case "location":
		if it.hasHref {
			return nil
		}
		it.hasHref = true
		for _, a := range el.Attr {
			switch {
			case a.Name.Local == "href" && a.Name.Space == "":
				it.href = a.Value
			case a.Name.Local == "base" && a.Name.Space != "":
				it.external = true
			}
		}
	case "size":
		if it.hasSize {
			return nil
		}
		it.hasSize = true
		if v, ok := attr(el, "package"); ok {
			it.size = v
			return nil
		}
		return &it.size
	case "checksum":
		if it.hasSum {
			return nil
		}
		it.hasSum = true
		it.sumType, _ = attr(el, "type")
		return &it.sum
	}
	return nil
}

var errTokenTooLong = errors.New("XML token too long")

// tokenReader is what an xml.Decoder reads from (an io.ByteReader, which
// the decoder does not buffer further): it fails once the token being read
// has taken more than left bytes, so that no token, text or tag, is held
// in memory whole beyond that.
type tokenReader struct {
	r    *bufio.Reader
	left int
}

func (t *tokenReader) ReadByte() (byte, error) {
	if t.left <= 0 {
		return 0, errTokenTooLong
	}
	t.left--
	return t.r.ReadByte()
}

// Read is never called by the decoder (it reads bytes); it is there to make
// tokenReader an io.Reader.
func (t *tokenReader) Read(p []byte) (int, error) {
	if t.left <= 0 {
		return 0, errTokenTooLong
	}
	n, err := t.r.Read(p[:min(len(p), t.left)])
	t.left -= n
	return n, err
}

var _ io.ByteReader = (*tokenReader)(nil)

// attr is the value of el's attribute name (in no namespace), if it has
// one.
func attr(el xml.StartElement, name string) (string, bool) {
	for _, a := range el.Attr {
		if a.Name.Local == name && a.Name.Space == "" {
			return a.Value, true
		}
	}
	return "", false
}
