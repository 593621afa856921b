//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package filecache

// freeSpace is unknown here: only MaxSize bounds the store.
func freeSpace(string) (int64, bool) { return 0, false }
