//go:build e2e

// Package e2eenv runs the parts of an end-to-end test as real processes on
// this machine: etcd, kube-apiserver, cloudhive and the edgehive host, with
// the guard rails of DESIGN.md §6 (nothing may leave the machine). Every
// process is stopped by its PID when the test ends, failed or not, and its
// log is dumped when the test failed.
package e2eenv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Process is one child process with its log file. Its process group is
// killed at cleanup, so helpers it started (plugins, shims it owns) go too.
type Process struct {
	Name    string
	LogPath string

	t    testing.TB
	path string
	args []string
	env  []string
	dir  string

	mu      sync.Mutex
	cmd     *exec.Cmd
	done    chan struct{} // closed when the current cmd has exited
	exitErr error
	starts  int
}

// ProcessSpec describes how to start a Process.
type ProcessSpec struct {
	Name string   // for logs and file names
	Path string   // binary
	Args []string // arguments without argv[0]
	Env  []string // extra K=V on top of the test's environment
	Dir  string   // working directory; "" = the test's temp dir
	// LogDir receives NAME.log (appended over restarts); "" = a new temp dir.
	LogDir string
}

// StartProcess starts spec's process and registers its stop (and, when the
// test failed, the dump of its log) with t.Cleanup.
func StartProcess(t testing.TB, spec ProcessSpec) *Process {
	t.Helper()
	if spec.LogDir == "" {
		spec.LogDir = t.TempDir()
	}
	if spec.Dir == "" {
		spec.Dir = spec.LogDir
	}
	p := &Process{
		Name: spec.Name, LogPath: filepath.Join(spec.LogDir, spec.Name+".log"),
		t: t, path: spec.Path, args: spec.Args, env: spec.Env, dir: spec.Dir,
	}
	t.Cleanup(func() {
		p.Stop(10 * time.Second)
		if t.Failed() {
			p.DumpLog(80)
		}
		p.keepLog()
	})
	if err := p.start(); err != nil {
		t.Fatalf("start %s: %v", spec.Name, err)
	}
	return p
}

func (p *Process) start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil && !p.exitedLocked() {
		return fmt.Errorf("%s is already running (pid %d)", p.Name, p.cmd.Process.Pid)
	}
	logf, err := os.OpenFile(p.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("open log: %w", err)
	}
	p.starts++
	fmt.Fprintf(logf, "=== e2eenv: start #%d of %s at %s: %s %s\n", p.starts, p.Name,
		time.Now().Format(time.RFC3339Nano), p.path, strings.Join(p.args, " "))
	cmd := exec.Command(p.path, p.args...)
	cmd.Dir = p.dir
	cmd.Env = append(os.Environ(), p.env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Own process group: stopping it reaches every child the process made.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("%s: %w", p.path, err)
	}
	done := make(chan struct{})
	p.cmd, p.done, p.exitErr = cmd, done, nil
	pid := cmd.Process.Pid
	go func() {
		err := cmd.Wait()
		// Children left in the group go with the leader, now: the group id
		// is still ours (a group id is not reused while members remain),
		// and signalling it later could reach a stranger.
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		logf.Close()
		p.mu.Lock()
		p.exitErr = err
		p.mu.Unlock()
		close(done)
	}()
	p.t.Logf("e2eenv: started %s (pid %d), log %s", p.Name, cmd.Process.Pid, p.LogPath)
	return nil
}

func (p *Process) exitedLocked() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Pid is the current process's id, 0 before the first start.
func (p *Process) Pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// Exited reports whether the current process has ended, and how.
func (p *Process) Exited() (bool, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || !p.exitedLocked() {
		return false, nil
	}
	return true, p.exitErr
}

// Done is closed when the current process exits.
func (p *Process) Done() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.done
}

// Stop sends SIGTERM to the process group, then SIGKILL after grace.
// It returns once the process has exited. Safe to call when not running.
func (p *Process) Stop(grace time.Duration) {
	p.signal(syscall.SIGTERM, grace)
}

// Kill sends SIGKILL to the process group and waits for the exit.
func (p *Process) Kill() {
	p.signal(syscall.SIGKILL, 0)
}

func (p *Process) signal(sig syscall.Signal, grace time.Duration) {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	pid := cmd.Process.Pid
	select {
	case <-done:
		return // already exited, its group swept
	default:
	}
	_ = syscall.Kill(-pid, sig)
	if sig != syscall.SIGKILL {
		select {
		case <-done:
			return
		case <-time.After(grace):
			p.t.Logf("e2eenv: %s (pid %d) did not stop within %s; killing it", p.Name, pid, grace)
			_ = syscall.Kill(-pid, syscall.SIGKILL)
		}
	}
	<-done
}

// Restart stops the process (SIGTERM, 10 s grace) and starts it again with
// the same arguments.
func (p *Process) Restart() {
	p.t.Helper()
	p.Stop(10 * time.Second)
	if err := p.start(); err != nil {
		p.t.Fatalf("restart %s: %v", p.Name, err)
	}
}

// Start starts the process again after Stop or Kill.
func (p *Process) Start() {
	p.t.Helper()
	if err := p.start(); err != nil {
		p.t.Fatalf("start %s: %v", p.Name, err)
	}
}

// keepLog copies the log to $EDGEHIVE_E2E_LOGS/TEST/NAME.log when that is
// set (CI keeps them; the test's temp dir is removed).
func (p *Process) keepLog() {
	dir := os.Getenv("EDGEHIVE_E2E_LOGS")
	if dir == "" {
		return
	}
	dir = filepath.Join(dir, strings.ReplaceAll(p.t.Name(), "/", "_"))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		p.t.Logf("e2eenv: keep log: %v", err)
		return
	}
	if err := os.WriteFile(filepath.Join(dir, filepath.Base(p.LogPath)), []byte(p.Log()), 0o644); err != nil {
		p.t.Logf("e2eenv: keep log: %v", err)
	}
}

// Log returns the whole log so far.
func (p *Process) Log() string {
	b, err := os.ReadFile(p.LogPath)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	return string(b)
}

// DumpLog writes the last n lines of the log to the test output.
func (p *Process) DumpLog(n int) {
	lines := bytes.Split(bytes.TrimRight([]byte(p.Log()), "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	p.t.Logf("--- last %d lines of %s (%s):\n%s", len(lines), p.Name, p.LogPath, bytes.Join(lines, []byte("\n")))
}

// WaitLog waits until the log contains substr, the process exits, or ctx ends.
func (p *Process) WaitLog(ctx context.Context, substr string) error {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		if strings.Contains(p.Log(), substr) {
			return nil
		}
		select {
		case <-p.Done():
			if strings.Contains(p.Log(), substr) {
				return nil
			}
			_, err := p.Exited()
			return fmt.Errorf("%s exited (%v) before logging %q", p.Name, err, substr)
		case <-ctx.Done():
			return fmt.Errorf("%s did not log %q: %w", p.Name, substr, ctx.Err())
		case <-tick.C:
		}
	}
}

// RunCommand runs a short command to completion and returns its stdout;
// stderr is in the error.
func RunCommand(ctx context.Context, env []string, path string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) || stderr.Len() > 0 {
			return stdout.String(), fmt.Errorf("%s %s: %w: %s", filepath.Base(path), strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
		}
		return stdout.String(), fmt.Errorf("%s: %w", path, err)
	}
	return stdout.String(), nil
}
