package filecache

import (
	"io/fs"
	"syscall"
	"time"
)

// accessTime is when the file was last used: Get sets it explicitly, so it
// holds whatever the mount's atime policy.
func accessTime(info fs.FileInfo) time.Time {
	if st, ok := info.Sys().(*syscall.Stat_t); ok {
		return time.Unix(st.Atim.Sec, st.Atim.Nsec)
	}
	return info.ModTime()
}
