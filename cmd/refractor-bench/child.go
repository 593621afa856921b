package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"time"
)

// child is this program started again in another role, which an
// environment variable names: it prints a line when it is ready, and exits
// when its stdin closes.
type child struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stdout *bufio.Reader
	ready  string // the line it printed when ready
}

// childStopTimeout is how long a child has to exit once its stdin closes
// before it is killed.
const childStopTimeout = 5 * time.Second

// startChild starts this program with env (NAME=value) added to this
// process's environment, and waits for its ready line.
func startChild(env string) (*child, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("finding this program: %w", err)
	}
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), env)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", self, err)
	}
	c := &child{cmd: cmd, stdin: stdin, stdout: bufio.NewReader(stdout)}
	line, err := c.stdout.ReadString('\n')
	if err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return nil, fmt.Errorf("waiting for it to be ready: %w", err)
	}
	c.ready = strings.TrimSpace(line)
	return c, nil
}

// stop closes the child's stdin, and kills it if it has not exited
// within childStopTimeout. It returns how the child ended, if not well.
func (c *child) stop() error {
	_ = c.stdin.Close() // the child exits when its stdin closes
	done := make(chan error, 1)
	go func() { done <- c.cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-time.After(childStopTimeout):
		_ = c.cmd.Process.Kill()
		<-done
		return fmt.Errorf("killed: still running %v after its stdin closed", childStopTimeout)
	}
}
