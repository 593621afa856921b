package command

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/caddy-refractor/refractor/pool"
)

func newContext(t *testing.T) caddy.Context {
	t.Helper()
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	t.Cleanup(cancel)
	return ctx
}

func checkErr(t *testing.T, err error, wantErr []string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want one mentioning %q", wantErr)
	}
	for _, sub := range wantErr {
		if !strings.Contains(err.Error(), sub) {
			t.Errorf("error %q does not mention %q", err, sub)
		}
	}
}

func TestUnmarshalCaddyfile(t *testing.T) {
	tests := []struct {
		name    string
		input   string
		want    Command
		wantErr []string
	}{
		{
			name:  "inline",
			input: `command "shuf -n1 /etc/refractor/mirrors"`,
			want:  Command{Command: "shuf -n1 /etc/refractor/mirrors"},
		},
		{
			name: "block",
			input: `command {
				shell /bin/bash
				command "grep -v ^# /etc/refractor/mirrors | shuf -n1"
				timeout 5s
			}`,
			want: Command{
				Command: "grep -v ^# /etc/refractor/mirrors | shuf -n1",
				Shell:   "/bin/bash",
				Timeout: caddy.Duration(5 * time.Second),
			},
		},
		{
			name: "inline with block",
			input: `command "echo https://a.example/" {
				timeout 1m
			}`,
			want: Command{Command: "echo https://a.example/", Timeout: caddy.Duration(time.Minute)},
		},
		{
			name:    "no command",
			input:   `command`,
			wantErr: []string{"command provider", "command line is required"},
		},
		{
			name:    "block without command",
			input:   "command {\n\tshell /bin/sh\n}",
			wantErr: []string{"command provider", "command line is required"},
		},
		{
			name:    "unquoted inline command",
			input:   `command shuf -n1 /etc/mirrors`,
			wantErr: []string{"wrong argument count", "Testfile:1"},
		},
		{
			name:    "command twice",
			input:   "command \"echo a\" {\n\tcommand \"echo b\"\n}",
			wantErr: []string{"command already specified", "Testfile:2"},
		},
		{
			name:    "command subdirective without argument",
			input:   "command {\n\tcommand\n}",
			wantErr: []string{"wrong argument count", "'command'", "Testfile:2"},
		},
		{
			name:    "shell with two arguments",
			input:   "command {\n\tcommand \"echo\"\n\tshell /bin/bash -e\n}",
			wantErr: []string{"wrong argument count", "'-e'", "Testfile:3"},
		},
		{
			name:    "shell twice",
			input:   "command {\n\tcommand \"echo\"\n\tshell /bin/sh\n\tshell /bin/bash\n}",
			wantErr: []string{"shell already specified", "Testfile:4"},
		},
		{
			name:    "timeout without argument",
			input:   "command {\n\tcommand \"echo\"\n\ttimeout\n}",
			wantErr: []string{"wrong argument count", "'timeout'", "Testfile:3"},
		},
		{
			name:    "bad timeout",
			input:   "command {\n\tcommand \"echo\"\n\ttimeout soon\n}",
			wantErr: []string{"timeout", "'soon'", "Testfile:3"},
		},
		{
			name:    "negative timeout",
			input:   "command {\n\tcommand \"echo\"\n\ttimeout -1s\n}",
			wantErr: []string{"timeout must be positive", "Testfile:3"},
		},
		{
			name:    "unknown subdirective",
			input:   "command {\n\tcommand \"echo\"\n\tinterval 5s\n}",
			wantErr: []string{"unrecognized subdirective interval", "Testfile:3"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var c Command
			err := c.UnmarshalCaddyfile(caddyfile.NewTestDispenser(tt.input))
			if tt.wantErr != nil {
				checkErr(t, err, tt.wantErr)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c != tt.want {
				t.Errorf("got %+v, want %+v", c, tt.want)
			}
		})
	}
}

func TestProvisionValidate(t *testing.T) {
	tests := []struct {
		name      string
		cmd       Command
		wantShell string
		wantTime  time.Duration
		wantErr   []string
	}{
		{
			name:      "defaults",
			cmd:       Command{Command: "echo https://a.example/"},
			wantShell: "/bin/sh",
			wantTime:  5 * time.Second,
		},
		{
			name:      "explicit",
			cmd:       Command{Command: "echo", Shell: "sh", Timeout: caddy.Duration(time.Second)},
			wantShell: "sh",
			wantTime:  time.Second,
		},
		{
			name:    "no command",
			cmd:     Command{},
			wantErr: []string{"command provider", "command is required"},
		},
		{
			name:    "blank command",
			cmd:     Command{Command: " \t\n"},
			wantErr: []string{"command provider", "command is required"},
		},
		{
			name:    "missing shell",
			cmd:     Command{Command: "echo", Shell: "/nonexistent/refractor-shell"},
			wantErr: []string{"command provider", `shell "/nonexistent/refractor-shell"`},
		},
		{
			name:    "shell not in PATH",
			cmd:     Command{Command: "echo", Shell: "refractor-no-such-shell"},
			wantErr: []string{"command provider", `shell "refractor-no-such-shell"`},
		},
		{
			name:    "negative timeout",
			cmd:     Command{Command: "echo", Timeout: caddy.Duration(-time.Second)},
			wantErr: []string{"command provider", "timeout must be positive"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := tt.cmd
			err := c.Provision(newContext(t))
			if err == nil {
				err = c.Validate()
			}
			if tt.wantErr != nil {
				checkErr(t, err, tt.wantErr)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.Shell != tt.wantShell || time.Duration(c.Timeout) != tt.wantTime {
				t.Errorf("shell %q, timeout %v; want %q, %v", c.Shell, time.Duration(c.Timeout), tt.wantShell, tt.wantTime)
			}
			if c.logger == nil {
				t.Error("no logger after Provision")
			}
		})
	}
}

// newCommand returns a provisioned and validated provider whose warnings are
// recorded in the returned logs.
func newCommand(t *testing.T, command string, timeout time.Duration) (*Command, *observer.ObservedLogs) {
	t.Helper()
	c := &Command{Command: command, Timeout: caddy.Duration(timeout)}
	if err := c.Provision(newContext(t)); err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zapcore.WarnLevel)
	c.logger = zap.New(core)
	return c, logs
}

func TestCandidates(t *testing.T) {
	tests := []struct {
		name      string
		command   string
		want      string
		wantErr   []string
		wantWarns []string // messages or stderr lines expected among the warnings
	}{
		{
			name:    "url",
			command: `echo https://mirror.example/debian`,
			want:    "https://mirror.example/debian/",
		},
		{
			name:    "surrounding blank lines and spaces",
			command: `printf '\n  \n  http://mirror.example/x/  \r\n\n'`,
			want:    "http://mirror.example/x/",
		},
		{
			name:      "several lines, first used",
			command:   `printf 'https://a.example/\n\nhttps://b.example/\nhttps://c.example/\n'`,
			want:      "https://a.example/",
			wantWarns: []string{"only the first is used"},
		},
		{
			name:      "stderr logged",
			command:   `echo 'mirror list is stale' >&2; echo; echo '  second  ' >&2; echo https://a.example/`,
			want:      "https://a.example/",
			wantWarns: []string{"mirror list is stale", "second"},
		},
		{
			name:    "not a url",
			command: `echo mirror.example/debian`,
			wantErr: []string{"command provider", "mirror.example/debian", "scheme must be http or https"},
		},
		{
			name:    "ftp",
			command: `echo ftp://mirror.example/debian`,
			wantErr: []string{"command provider", "ftp://mirror.example/debian", "scheme must be http or https"},
		},
		{
			name:    "no output",
			command: `true`,
			wantErr: []string{"command provider", "printed no mirror URL"},
		},
		{
			name:      "non-zero exit",
			command:   `echo https://a.example/; echo 'no mirrors left' >&2; exit 3`,
			wantErr:   []string{"command provider", "exit status 3"},
			wantWarns: []string{"no mirrors left"},
		},
		{
			name:      "huge output is capped",
			command:   `echo https://a.example/; yes https://b.example/ | head -c 1000000`,
			want:      "https://a.example/",
			wantWarns: []string{"only the first is used"},
		},
		{
			name:    "first line too long",
			command: `head -c 100000 /dev/zero | tr '\0' a`,
			wantErr: []string{"command provider", "without a complete line"},
		},
		{
			name:      "huge stderr is capped",
			command:   `yes oops | head -c 1000000 >&2; echo https://a.example/`,
			want:      "https://a.example/",
			wantWarns: []string{"oops", "command stderr truncated"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, logs := newCommand(t, tt.command, 5*time.Second)
			got, err := c.Candidates(context.Background())

			for _, want := range tt.wantWarns {
				if !warned(logs, want) {
					t.Errorf("no warning mentioning %q; got %v", want, logs.All())
				}
			}
			if tt.wantErr != nil {
				checkErr(t, err, tt.wantErr)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != 1 || got[0].URL != tt.want {
				t.Fatalf("candidates = %+v, want one with URL %q", got, tt.want)
			}
			if len(tt.wantWarns) == 0 && logs.Len() > 0 {
				t.Errorf("unexpected warnings: %v", logs.All())
			}
		})
	}
}

// warned reports whether a warning's message or stderr field contains s.
func warned(logs *observer.ObservedLogs, s string) bool {
	for _, e := range logs.All() {
		if e.Level != zapcore.WarnLevel {
			continue
		}
		if strings.Contains(e.Message, s) {
			return true
		}
		if v, ok := e.ContextMap()["stderr"].(string); ok && strings.Contains(v, s) {
			return true
		}
	}
	return false
}

func TestStderrFieldPerLine(t *testing.T) {
	c, logs := newCommand(t, `printf 'one\n\n  two  \n' >&2; echo https://a.example/`, 5*time.Second)
	if _, err := c.Candidates(context.Background()); err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, e := range logs.FilterFieldKey("stderr").All() {
		lines = append(lines, e.ContextMap()["stderr"].(string))
		if e.ContextMap()["command"] != c.Command {
			t.Errorf("warning %v lacks the command", e.ContextMap())
		}
	}
	if strings.Join(lines, "|") != "one|two" {
		t.Errorf("stderr warnings = %q, want [one two]", lines)
	}
}

func TestTimeout(t *testing.T) {
	// The pipeline and the trailing echo make the shell fork rather than
	// exec, so the children hold stdout open: unless the whole process
	// group is killed, Candidates would wait for waitDelay.
	for _, command := range []string{
		`sleep 10`,
		`sleep 10; echo https://a.example/`,
		`sleep 10 | cat`,
		`sleep 10 & sleep 10 & wait`,
	} {
		t.Run(command, func(t *testing.T) {
			c, _ := newCommand(t, command, 200*time.Millisecond)
			start := time.Now()
			_, err := c.Candidates(context.Background())
			elapsed := time.Since(start)
			checkErr(t, err, []string{"command provider", "200ms timeout"})
			if elapsed >= waitDelay {
				t.Errorf("took %v to give up, want well under %v", elapsed, waitDelay)
			}
		})
	}
}

func TestCallerContextCancelled(t *testing.T) {
	c, _ := newCommand(t, `sleep 10`, 5*time.Second)

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	start := time.Now()
	_, err := c.Candidates(ctx)
	checkErr(t, err, []string{"command provider", "context canceled"})
	if elapsed := time.Since(start); elapsed >= waitDelay {
		t.Errorf("took %v after cancellation", elapsed)
	}
}

func TestConcurrentCandidates(t *testing.T) {
	c, _ := newCommand(t, `echo https://a.example/$$`, 5*time.Second)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Go(func() {
			got, err := c.Candidates(context.Background())
			if err == nil && (len(got) != 1 || !strings.HasPrefix(got[0].URL, "https://a.example/")) {
				t.Errorf("candidates = %+v", got)
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
}

func TestUnprovisionedDefaults(t *testing.T) {
	// A zero logger, shell and timeout fall back to the defaults.
	c := &Command{Command: `echo https://a.example/; echo hi >&2`}
	got, err := c.Candidates(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].URL != "https://a.example/" {
		t.Fatalf("candidates = %+v", got)
	}
}

func TestModule(t *testing.T) {
	mod, err := caddy.GetModule("http.handlers.refractor.providers.command")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := mod.New().(pool.Provider); !ok {
		t.Fatalf("%T is not a pool.Provider", mod.New())
	}

	var c Command
	if err := json.Unmarshal([]byte(`{"command":"echo https://a.example/","shell":"sh","timeout":"2s"}`), &c); err != nil {
		t.Fatal(err)
	}
	if c.Command != "echo https://a.example/" || c.Shell != "sh" || time.Duration(c.Timeout) != 2*time.Second {
		t.Fatalf("decoded %+v", c)
	}
}

func TestCappedBuffer(t *testing.T) {
	b := &cappedBuffer{max: 5}
	for _, s := range []string{"ab", "cde", "fg", "h"} {
		if n, err := b.Write([]byte(s)); n != len(s) || err != nil {
			t.Fatalf("Write(%q) = %d, %v", s, n, err)
		}
	}
	if string(b.Bytes()) != "abcde" || !b.truncated {
		t.Fatalf("got %q truncated=%v", b.Bytes(), b.truncated)
	}
}
