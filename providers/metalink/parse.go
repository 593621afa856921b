package metalink

import (
	"bytes"
	"cmp"
	"encoding/hex"
	"encoding/xml"
	"errors"
	"fmt"
	"maps"
	"math"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/caddy-refractor/refractor/pool"
	"github.com/caddy-refractor/refractor/providers/internal/source"
)

// The namespaces of the two metalink formats.
const (
	ns3 = "http://www.metalinker.org/"      // metalink 3.0, MirrorManager's
	ns4 = "urn:ietf:params:xml:ns:metalink" // RFC 5854, .meta4
)

// document is the part of a metalink the provider reads, in either format.
// Tags without a namespace match any, so MirrorManager's mm0: elements
// (whatever URI a MirrorManager instance binds mm0 to) match by name.
type document struct {
	XMLName   xml.Name
	Published string  `xml:"published"`  // RFC 5854: when the document was published
	Updated   string  `xml:"updated"`    // RFC 5854: when it was last updated
	Files3    []mfile `xml:"files>file"` // metalink 3.0
	Files4    []mfile `xml:"file"`       // RFC 5854
}

// mfile is one file of a metalink.
type mfile struct {
	Name       string      `xml:"name,attr"`
	Timestamp  string      `xml:"timestamp"`            // mm0:timestamp, Unix seconds
	Hashes3    []mhash     `xml:"verification>hash"`    // metalink 3.0
	Hashes4    []mhash     `xml:"hash"`                 // RFC 5854 (not those of <pieces>)
	Alternates []alternate `xml:"alternates>alternate"` // mm0:alternates: older versions
	URLs3      []murl      `xml:"resources>url"`        // metalink 3.0
	URLs4      []murl      `xml:"url"`                  // RFC 5854
}

// alternate is an older version of a file (MirrorManager's mm0:alternate).
type alternate struct {
	Timestamp string  `xml:"timestamp"`
	Hashes    []mhash `xml:"verification>hash"`
}

type mhash struct {
	Type  string `xml:"type,attr"` // sha256 (3.0) or sha-256 (RFC 5854)
	Value string `xml:",chardata"`
}

// murl is one mirror's URL of the file.
type murl struct {
	Location   string `xml:"location,attr"`   // ISO 3166 country code
	Preference string `xml:"preference,attr"` // 3.0: 0 to 100, higher first
	Priority   string `xml:"priority,attr"`   // RFC 5854: from 1, lower first
	Type       string `xml:"type,attr"`       // 3.0: http, https, rsync, ftp, bittorrent…
	Value      string `xml:",chardata"`
}

// parser turns a metalink into candidates; it holds the provider's
// settings and the versions of the file seen so far.
type parser struct {
	strip     string
	countries []string
	protocols []string
	seen      *history
}

// entry is one usable URL of the file, with what orders and filters it.
type entry struct {
	where    string // "url 3": its place in the file's list
	url      *url.URL
	proto    string
	location string
	rank     int // lower first
}

// parse is the provider's source.Parser.
func (p *parser) parse(data []byte) (source.Result, error) {
	doc, err := decode(data)
	if err != nil {
		return source.Result{}, err
	}
	files, urls := doc.Files4, func(f *mfile) []murl { return f.URLs4 }
	if doc.XMLName.Space == ns3 {
		files, urls = doc.Files3, func(f *mfile) []murl { return f.URLs3 }
	}
	if len(files) == 0 {
		return source.Result{}, errors.New("the metalink lists no file")
	}
	f := &files[0]

	var b source.Builder
	if len(files) > 1 {
		b.Skip("metalink", fmt.Sprintf("%d files listed; only the first, %q, is read", len(files), f.Name))
	}
	listed := urls(f)
	if len(listed) == 0 {
		return b.Result(0), fmt.Errorf("the metalink lists no URL for %q", f.Name)
	}
	entries := make([]entry, 0, len(listed))
	for i, u := range listed {
		e, err := newEntry(i, u, doc.XMLName.Space == ns3)
		if err != nil {
			b.Skip(e.where, err.Error())
			continue
		}
		entries = append(entries, e)
	}
	if len(entries) == 0 {
		res := b.Result(len(listed))
		return res, fmt.Errorf("none of the %d URLs in the metalink is valid: %s", len(listed), res.Warnings[len(res.Warnings)-1])
	}
	if entries, err = source.Apply(entries, p.filters(), "URLs"); err != nil {
		return b.Result(len(listed)), fmt.Errorf("%w (%d in the metalink)", err, len(listed))
	}
	slices.SortStableFunc(entries, func(a, b entry) int { return cmp.Compare(a.rank, b.rank) })
	for _, e := range entries {
		base, err := p.base(e.url)
		if err != nil {
			b.Skip(e.where, err.Error())
			continue
		}
		b.Add(e.where, base, time.Time{})
	}
	if res := b.Result(len(listed)); len(res.Candidates) == 0 {
		// Each entry was skipped: the last warning says why.
		return res, fmt.Errorf("none of the %d mirrors that passed the filters has a usable URL: %s",
			len(entries), res.Warnings[len(res.Warnings)-1])
	}

	found, warnings := versions(doc, f)
	for _, w := range warnings {
		b.Skip(f.Name, w)
	}
	res := b.Result(len(listed))
	if times := p.seen.merge(found); len(times) > 0 {
		probe := &pool.SyncProbe{Path: p.strip, Times: times}
		for i := range res.Candidates {
			res.Candidates[i].Probe = probe
		}
	}
	return res, nil
}

// decode reads a metalink document of either format.
func decode(data []byte) (*document, error) {
	var doc document
	if err := xml.NewDecoder(bytes.NewReader(data)).Decode(&doc); err != nil {
		return nil, fmt.Errorf("decoding the metalink: %w", err)
	}
	if doc.XMLName.Local != "metalink" || (doc.XMLName.Space != ns3 && doc.XMLName.Space != ns4) {
		return nil, fmt.Errorf("not a metalink: the root element is <%s> in namespace %q, want <metalink> in %q or %q",
			doc.XMLName.Local, doc.XMLName.Space, ns4, ns3)
	}
	return &doc, nil
}

// newEntry reads the i-th URL of the file. A URL without a rank sorts
// last.
func newEntry(i int, u murl, v3 bool) (entry, error) {
	e := entry{where: fmt.Sprintf("url %d", i+1), location: strings.TrimSpace(u.Location), rank: math.MaxInt}
	raw := strings.TrimSpace(u.Value)
	parsed, err := url.Parse(raw)
	if err != nil {
		return e, fmt.Errorf("mirror URL %q: %w", raw, err)
	}
	e.url, e.proto = parsed, strings.ToLower(parsed.Scheme)
	if t := strings.ToLower(strings.TrimSpace(u.Type)); t != "" && t != e.proto {
		e.proto = t // a torrent (type="bittorrent") served over http
	}
	if v3 {
		if pref, err := strconv.Atoi(strings.TrimSpace(u.Preference)); err == nil {
			e.rank = -pref
		}
	} else if prio, err := strconv.Atoi(strings.TrimSpace(u.Priority)); err == nil {
		e.rank = prio
	}
	return e, nil
}

// filters lists the tests a URL must pass, in the order they are
// applied, which is the order in which one is blamed for emptying the
// list.
func (p *parser) filters() []source.Filter[entry] {
	steps := []source.Filter[entry]{{
		Name: fmt.Sprintf("protocols %v", p.protocols),
		Keep: func(e entry) bool { return slices.Contains(p.protocols, e.proto) },
	}}
	if len(p.countries) > 0 {
		steps = append(steps, source.Filter[entry]{
			Name: fmt.Sprintf("countries %v", p.countries),
			Keep: func(e entry) bool {
				return slices.ContainsFunc(p.countries, func(c string) bool { return strings.EqualFold(c, e.location) })
			},
		})
	}
	return steps
}

// base cuts strip off the path of a file's URL, leaving the mirror's base
// (with its trailing slash).
func (p *parser) base(u *url.URL) (string, error) {
	prefix, ok := strings.CutSuffix(u.Path, "/"+p.strip)
	if !ok {
		return "", fmt.Errorf("mirror URL %q does not end with /%s (strip)", u, p.strip)
	}
	b := *u
	b.Path, b.RawPath = prefix+"/", ""
	return b.String(), nil
}

// versions returns the SHA-256 of each version of the file the metalink
// names, with the time it became current: the current version's
// mm0:timestamp (RFC 5854 has none: the document's published, or else
// updated, time stands for it) and each mm0:alternate's. Versions without
// a SHA-256 or a time are left out, with a warning.
func versions(doc *document, f *mfile) (map[[32]byte]time.Time, []string) {
	found := map[[32]byte]time.Time{}
	var warnings []string
	add := func(what string, hashes []mhash, when func() (time.Time, error)) {
		sum, err := sha256Of(hashes)
		if err == nil {
			var t time.Time
			if t, err = when(); err == nil {
				found[sum] = t
				return
			}
		}
		warnings = append(warnings, fmt.Sprintf("%s: %v; not used to judge freshness", what, err))
	}
	if doc.XMLName.Space == ns3 {
		add("current version", f.Hashes3, func() (time.Time, error) { return unixTime(f.Timestamp) })
	} else {
		add("current version", f.Hashes4, func() (time.Time, error) {
			if strings.TrimSpace(doc.Published) == "" {
				return rfc3339(doc.Updated, "updated")
			}
			return rfc3339(doc.Published, "published")
		})
	}
	for i, a := range f.Alternates {
		add(fmt.Sprintf("alternate %d", i+1), a.Hashes, func() (time.Time, error) { return unixTime(a.Timestamp) })
	}
	return found, warnings
}

// sha256Of returns the SHA-256 among hashes.
func sha256Of(hashes []mhash) ([32]byte, error) {
	var sum [32]byte
	for _, h := range hashes {
		if t := strings.ToLower(strings.TrimSpace(h.Type)); t != "sha256" && t != "sha-256" {
			continue
		}
		v := strings.TrimSpace(h.Value)
		if len(v) != hex.EncodedLen(len(sum)) {
			return sum, fmt.Errorf("sha-256 %q is not 64 hex digits", v)
		}
		if _, err := hex.Decode(sum[:], []byte(v)); err != nil {
			return sum, fmt.Errorf("sha-256 %q is not 64 hex digits", v)
		}
		return sum, nil
	}
	return sum, errors.New("no sha-256 hash")
}

func unixTime(s string) (time.Time, error) {
	secs, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	if err != nil || secs <= 0 {
		return time.Time{}, fmt.Errorf("mm0:timestamp %q is not a Unix time", s)
	}
	return time.Unix(secs, 0), nil
}

func rfc3339(s, what string) (time.Time, error) {
	t, err := time.Parse(time.RFC3339, strings.TrimSpace(s))
	if err != nil {
		return time.Time{}, fmt.Errorf("%s %q is not an RFC 3339 time", what, s)
	}
	return t, nil
}

// maxVersions bounds the versions a history keeps: the newest are kept.
const maxVersions = 64

// history is the versions of the file a provider has been told of, each
// with the earliest time it was given for it. It keeps a version's time
// stable from one fetch to the next (a .meta4 gives the time it was
// published, which is new at each request), and remembers versions that
// were current before as older ones.
type history struct {
	mu    sync.Mutex
	times map[[32]byte]time.Time
}

// merge adds found to the history and returns a copy of it, for a probe.
func (h *history) merge(found map[[32]byte]time.Time) map[[32]byte]time.Time {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.times == nil {
		h.times = make(map[[32]byte]time.Time, len(found))
	}
	for sum, t := range found {
		if old, ok := h.times[sum]; !ok || t.Before(old) {
			h.times[sum] = t
		}
	}
	if len(h.times) > maxVersions {
		sums := slices.SortedFunc(maps.Keys(h.times), func(a, b [32]byte) int {
			return cmp.Or(h.times[b].Compare(h.times[a]), bytes.Compare(a[:], b[:]))
		})
		for _, sum := range sums[maxVersions:] { // the oldest
			delete(h.times, sum)
		}
	}
	return maps.Clone(h.times)
}
