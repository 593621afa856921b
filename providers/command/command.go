// Package command provides a refractor mirror provider that asks an external
// command for a mirror each time the pool needs one.
package command

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/caddy-refractor/refractor/pool"
)

func init() {
	caddy.RegisterModule(Command{})
}

const (
	// DefaultShell is the shell used to run the command when none is set.
	DefaultShell = "/bin/sh"

	// DefaultTimeout is how long the command may run when no timeout is set.
	DefaultTimeout = 5 * time.Second

	// maxOutput caps how much of stdout and of stderr is kept.
	maxOutput = 64 << 10

	// waitDelay bounds how long to wait, once the command has exited or
	// been killed, for anything else holding its output pipes open.
	waitDelay = 2 * time.Second
)

// Command provides one mirror at a time by running a shell command. Each
// time the pool asks for candidates, the command is run as
// `<shell> -c <command>` with no standard input, and the first non-empty
// line it prints on standard output is taken as the mirror's base URL; any
// further lines are ignored with a warning. Lines on standard error are
// logged as warnings. The command fails the request for candidates if it
// exits with a non-zero status, runs longer than the timeout, or prints
// something other than an http or https URL.
//
// For example, to pick a random mirror from a list:
//
//	grep -v ^# /etc/refractor/mirrors | shuf -n1
type Command struct {
	// The command line to run, interpreted by the shell. Required.
	Command string `json:"command"`

	// The shell that runs the command, given `-c` and the command line.
	// A name without a slash is looked up in PATH. Default: `/bin/sh`.
	Shell string `json:"shell,omitempty"`

	// How long the command may run before it and every process it started
	// in its process group are killed. Default: 5s.
	Timeout caddy.Duration `json:"timeout,omitempty"`

	logger *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (Command) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.refractor.providers.command",
		New: func() caddy.Module { return new(Command) },
	}
}

// Provision sets up the logger and fills in defaults.
func (c *Command) Provision(ctx caddy.Context) error {
	c.logger = ctx.Logger()
	if c.Shell == "" {
		c.Shell = DefaultShell
	}
	if c.Timeout == 0 {
		c.Timeout = caddy.Duration(DefaultTimeout)
	}
	return nil
}

// Validate checks that there is a command to run, that the shell exists and
// that the timeout is positive.
func (c *Command) Validate() error {
	if strings.TrimSpace(c.Command) == "" {
		return errors.New("command provider: command is required")
	}
	if _, err := exec.LookPath(c.shell()); err != nil {
		return fmt.Errorf("command provider: shell %q: %w", c.shell(), err)
	}
	if c.Timeout < 0 {
		return fmt.Errorf("command provider: timeout must be positive, got %s", time.Duration(c.Timeout))
	}
	return nil
}

// Candidates runs the command and returns the mirror it printed. It is safe
// for concurrent use; each call runs the command afresh.
func (c *Command) Candidates(ctx context.Context) ([]pool.Candidate, error) {
	logger := c.logger
	if logger == nil {
		logger = zap.NewNop()
	}
	logger = logger.With(zap.String("command", c.Command))
	timeout := c.timeout()

	runCtx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	cmd := exec.CommandContext(runCtx, c.shell(), "-c", c.Command)
	stdout := &cappedBuffer{max: maxOutput}
	stderr := &cappedBuffer{max: maxOutput}
	cmd.Stdout = stdout
	cmd.Stderr = stderr
	cmd.WaitDelay = waitDelay
	setProcessGroup(cmd)

	runErr := cmd.Run()

	// Whatever happened, report what the command complained about.
	for _, line := range nonEmptyLines(stderr.Bytes()) {
		logger.Warn("command wrote to stderr", zap.String("stderr", line))
	}
	if stderr.truncated {
		logger.Warn("command stderr truncated", zap.Int("limit_bytes", maxOutput))
	}

	if runErr != nil {
		switch {
		case ctx.Err() != nil:
			return nil, fmt.Errorf("command provider: running %q: %w", c.Command, ctx.Err())
		case errors.Is(runCtx.Err(), context.DeadlineExceeded):
			return nil, fmt.Errorf("command provider: %q did not finish within the %s timeout", c.Command, timeout)
		case errors.Is(runErr, exec.ErrWaitDelay):
			// The shell exited but something it started kept the output
			// open: don't leave it running.
			killProcessGroup(cmd)
			return nil, fmt.Errorf("command provider: %q exited but left processes holding its output open: %w", c.Command, runErr)
		default:
			// For a non-zero exit this reads "exit status N".
			return nil, fmt.Errorf("command provider: %q failed: %w", c.Command, runErr)
		}
	}

	out := stdout.Bytes()
	if stdout.truncated {
		// The last line was cut short: only trust complete lines.
		out = out[:bytes.LastIndexByte(out, '\n')+1]
	}
	lines := nonEmptyLines(out)
	if len(lines) == 0 {
		if stdout.truncated {
			return nil, fmt.Errorf("command provider: %q printed more than %d bytes without a complete line", c.Command, maxOutput)
		}
		return nil, fmt.Errorf("command provider: %q printed no mirror URL", c.Command)
	}
	if len(lines) > 1 || stdout.truncated {
		logger.Warn("command printed more than one line; only the first is used",
			zap.String("used", lines[0]),
			zap.Int("ignored_lines", len(lines)-1),
			zap.Bool("truncated", stdout.truncated))
	}

	u, err := pool.ParseMirrorURL(lines[0])
	if err != nil {
		return nil, fmt.Errorf("command provider: output of %q: %w", c.Command, err)
	}
	return []pool.Candidate{{URL: u.String()}}, nil
}

// UnmarshalCaddyfile sets up the provider from Caddyfile tokens. Syntax:
//
//	command [<command line>] {
//	    command <command line>
//	    shell   <shell>
//	    timeout <duration>
//	}
//
// The command line must be a single token, so quote it. It may be given
// inline or in the block, but not both.
func (c *Command) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // consume provider name

	args := d.RemainingArgs()
	switch len(args) {
	case 0:
	case 1:
		c.Command = args[0]
	default:
		return d.ArgErr()
	}

	for d.NextBlock(0) {
		switch d.Val() {
		case "command":
			if !d.NextArg() {
				return d.ArgErr()
			}
			if c.Command != "" {
				return d.Err("command provider: command already specified")
			}
			c.Command = d.Val()
			if d.NextArg() {
				return d.ArgErr()
			}
		case "shell":
			if !d.NextArg() {
				return d.ArgErr()
			}
			if c.Shell != "" {
				return d.Err("command provider: shell already specified")
			}
			c.Shell = d.Val()
			if d.NextArg() {
				return d.ArgErr()
			}
		case "timeout":
			if !d.NextArg() {
				return d.ArgErr()
			}
			dur, err := caddy.ParseDuration(d.Val())
			if err != nil {
				return d.Errf("command provider: bad timeout value '%s': %v", d.Val(), err)
			}
			if dur <= 0 {
				return d.Errf("command provider: timeout must be positive, got '%s'", d.Val())
			}
			c.Timeout = caddy.Duration(dur)
			if d.NextArg() {
				return d.ArgErr()
			}
		default:
			return d.Errf("unrecognized subdirective %s", d.Val())
		}
	}

	if strings.TrimSpace(c.Command) == "" {
		return d.Err("command provider: a command line is required")
	}
	return nil
}

func (c *Command) shell() string {
	if c.Shell == "" {
		return DefaultShell
	}
	return c.Shell
}

func (c *Command) timeout() time.Duration {
	if c.Timeout <= 0 {
		return DefaultTimeout
	}
	return time.Duration(c.Timeout)
}

// nonEmptyLines splits b into lines and returns those that are not blank,
// trimmed of surrounding white space.
func nonEmptyLines(b []byte) []string {
	var lines []string
	for line := range strings.Lines(string(b)) {
		if line = strings.TrimSpace(line); line != "" {
			lines = append(lines, line)
		}
	}
	return lines
}

// cappedBuffer keeps the first max bytes written to it and discards the
// rest, so that a chatty command cannot use unbounded memory. Writes never
// fail, so the command is not killed by SIGPIPE for printing too much.
type cappedBuffer struct {
	buf       bytes.Buffer
	max       int
	truncated bool
}

func (b *cappedBuffer) Write(p []byte) (int, error) {
	if room := b.max - b.buf.Len(); len(p) > room {
		b.truncated = true
		b.buf.Write(p[:max(room, 0)])
	} else {
		b.buf.Write(p)
	}
	return len(p), nil
}

func (b *cappedBuffer) Bytes() []byte { return b.buf.Bytes() }

// Interface guards
var (
	_ pool.Provider         = (*Command)(nil)
	_ caddy.Provisioner     = (*Command)(nil)
	_ caddy.Validator       = (*Command)(nil)
	_ caddyfile.Unmarshaler = (*Command)(nil)
)
