package archlinux

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/caddy-refractor/refractor/providers/internal/source"
)

// status is the part of the Arch Linux mirror status document
// (https://archlinux.org/mirrors/status/json/, schema version 3) that the
// provider reads. Fields that are null for mirrors never checked are
// pointers.
type status struct {
	URLs    *[]mirror `json:"urls"`
	Version int       `json:"version"`
}

// mirror is one URL of one mirror; a mirror has one entry per protocol.
type mirror struct {
	URL           string   `json:"url"`
	Protocol      string   `json:"protocol"`
	LastSync      *string  `json:"last_sync"`      // RFC 3339
	CompletionPct *float64 `json:"completion_pct"` // 0 to 1
	Delay         *float64 `json:"delay"`          // seconds behind the master
	Score         *float64 `json:"score"`          // lower is better
	Active        bool     `json:"active"`
	Country       string   `json:"country"`
	CountryCode   string   `json:"country_code"`
	ISOs          bool     `json:"isos"`
	IPv4          bool     `json:"ipv4"`
	IPv6          bool     `json:"ipv6"`
}

// parseStatus decodes a status document. A document without a list of
// mirrors, or with an empty one, is an error: it must not replace a good
// list.
func parseStatus(data []byte) ([]mirror, error) {
	var st status
	if err := json.Unmarshal(data, &st); err != nil {
		return nil, fmt.Errorf("decoding the mirror status: %w", err)
	}
	if st.URLs == nil {
		return nil, errors.New("the mirror status has no \"urls\" list")
	}
	if len(*st.URLs) == 0 {
		return nil, errors.New("the mirror status lists no mirrors")
	}
	return *st.URLs, nil
}

// filters are the provider's filters, with defaults filled in.
type filters struct {
	protocols     []string
	countries     []string
	activeOnly    bool
	minCompletion float64
	maxScore      float64       // 0: none
	maxDelay      time.Duration // 0: none
	ipv4, ipv6    bool
	isos          bool
}

// filter is one named test a mirror must pass.
type filter = source.Filter[*mirror]

// steps lists the filters in the order they are applied, which is the
// order in which one is blamed for emptying the list.
func (f *filters) steps() []filter {
	steps := []filter{{
		Name: fmt.Sprintf("protocols %v", f.protocols),
		Keep: func(m *mirror) bool { return slices.Contains(f.protocols, strings.ToLower(m.Protocol)) },
	}}
	if f.activeOnly {
		steps = append(steps, filter{Name: "active", Keep: func(m *mirror) bool { return m.Active }})
	}
	if f.minCompletion > 0 {
		steps = append(steps, filter{
			Name: fmt.Sprintf("min_completion %g", f.minCompletion),
			Keep: func(m *mirror) bool { return m.CompletionPct != nil && *m.CompletionPct >= f.minCompletion },
		})
	}
	if len(f.countries) > 0 {
		steps = append(steps, filter{
			Name: fmt.Sprintf("countries %v", f.countries),
			Keep: func(m *mirror) bool {
				return slices.ContainsFunc(f.countries, func(c string) bool {
					return strings.EqualFold(c, m.CountryCode) || strings.EqualFold(c, m.Country)
				})
			},
		})
	}
	if f.maxScore > 0 {
		steps = append(steps, filter{
			Name: fmt.Sprintf("max_score %g", f.maxScore),
			Keep: func(m *mirror) bool { return m.Score != nil && *m.Score <= f.maxScore },
		})
	}
	if f.maxDelay > 0 {
		steps = append(steps, filter{
			Name: fmt.Sprintf("max_delay %s", f.maxDelay),
			Keep: func(m *mirror) bool { return m.Delay != nil && *m.Delay <= f.maxDelay.Seconds() },
		})
	}
	for _, flag := range []struct {
		on   bool
		name string
		keep func(*mirror) bool
	}{
		{f.ipv4, "ipv4", func(m *mirror) bool { return m.IPv4 }},
		{f.ipv6, "ipv6", func(m *mirror) bool { return m.IPv6 }},
		{f.isos, "isos", func(m *mirror) bool { return m.ISOs }},
	} {
		if flag.on {
			steps = append(steps, filter{Name: flag.name, Keep: flag.keep})
		}
	}
	return steps
}

// apply filters the mirrors and returns the candidates, best Arch score
// first (mirrors without a score last, otherwise in document order). When
// nothing passes, the error names the filter that removed the last ones.
func (f *filters) apply(mirrors []mirror) (source.Result, error) {
	kept := make([]*mirror, 0, len(mirrors))
	for i := range mirrors {
		kept = append(kept, &mirrors[i])
	}
	kept, err := source.Apply(kept, f.steps(), "mirrors")
	if err != nil {
		return source.Result{}, fmt.Errorf("%w (%d in the status list)", err, len(mirrors))
	}
	slices.SortStableFunc(kept, func(a, b *mirror) int {
		switch {
		case a.Score == nil && b.Score == nil:
			return 0
		case a.Score == nil:
			return 1
		case b.Score == nil:
			return -1
		}
		return cmp.Compare(*a.Score, *b.Score)
	})

	var b source.Builder
	for _, m := range kept {
		var lastSync time.Time
		if m.LastSync != nil {
			t, err := time.Parse(time.RFC3339, *m.LastSync)
			if err != nil {
				b.Skip(m.URL, fmt.Sprintf("last_sync %q is not a time; taken as unknown", *m.LastSync))
			}
			lastSync = t
		}
		b.Add(m.URL, m.URL, lastSync)
	}
	res := b.Result(len(mirrors))
	if len(res.Candidates) == 0 {
		return res, fmt.Errorf("none of the %d mirrors that passed the filters has a valid URL", len(kept))
	}
	return res, nil
}

// parse is the provider's source.Parser: decode, then filter.
func (f *filters) parse(data []byte) (source.Result, error) {
	mirrors, err := parseStatus(data)
	if err != nil {
		return source.Result{}, err
	}
	return f.apply(mirrors)
}
