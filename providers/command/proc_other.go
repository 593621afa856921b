//go:build !unix

package command

import "os/exec"

// setProcessGroup keeps exec's default cancellation, which kills only the
// shell itself; WaitDelay still bounds how long its children can hold the
// output open.
func setProcessGroup(*exec.Cmd) {}

// killProcessGroup is a no-op where process groups are not supported.
func killProcessGroup(*exec.Cmd) {}
