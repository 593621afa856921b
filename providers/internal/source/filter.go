package source

import (
	"fmt"
	"slices"
)

// Filter is one named test an item of a provider's list must pass (a
// config option: "countries [DE FR]", "max_score 2").
type Filter[T any] struct {
	Name string
	Keep func(T) bool
}

// Apply keeps the items that pass every filter, applied in order. When a
// filter leaves none, the error names it and how many of what (noun) it
// was given: the user learns which option emptied the list.
func Apply[T any](items []T, filters []Filter[T], noun string) ([]T, error) {
	for _, f := range filters {
		before := len(items)
		items = slices.DeleteFunc(items, func(it T) bool { return !f.Keep(it) })
		if len(items) == 0 {
			return nil, fmt.Errorf("%s left 0 of %d %s", f.Name, before, noun)
		}
	}
	return items, nil
}
