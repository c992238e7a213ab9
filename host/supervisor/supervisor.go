package supervisor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/edgehive/edgehive/host/config"
	"github.com/edgehive/edgehive/host/metrics"
	"github.com/edgehive/edgehive/host/router"
	"github.com/edgehive/edgehive/sdk"
	pluginv1 "github.com/edgehive/edgehive/sdk/proto/plugin/v1"
)

// RestartPolicy and HealthPolicy are the plugin block's restart and health
// settings.
type (
	RestartPolicy = config.RestartPolicy
	HealthPolicy  = config.HealthPolicy
)

// Metrics receives the supervisor's figures; *metrics.Metrics implements it.
type Metrics interface {
	PluginRestarted(plugin string)
	SetPluginState(plugin, state string)
	HealthCheckFailed(plugin string)
}

// ConfigDecoder validates the plugin's config block against a schema and
// returns it as JSON; the host provides it (it owns the HCL).
type ConfigDecoder func(schema *sdk.Schema) (json.RawMessage, error)

// Options build a Supervisor.
type Options struct {
	Launch   LaunchSpec
	Restart  RestartPolicy
	Health   HealthPolicy
	NodeName string
	DataDir  string // the host's data_dir; the plugin gets <data_dir>/<name>
	Router   *router.Router
	Decode   ConfigDecoder
	Logger   hclog.Logger
	Metrics  Metrics
}

// Status is a snapshot for the admin API.
type Status struct {
	Name       string
	Group      string
	State      string
	Version    string
	APIVersion string
	Path       string
	PID        int
	Restarts   int
	StartedAt  time.Time
	QueueDepth int
	InFlight   int
	LastError  string
}

// ErrBusy is returned when a restart or upgrade is already under way.
var ErrBusy = errors.New("another restart or upgrade is in progress")

// Supervisor owns one plugin. Its loop goroutine is the only one that starts,
// replaces or stops the plugin's instances.
type Supervisor struct {
	opts   Options
	logger hclog.Logger
	name   string

	cmds chan command

	mu         sync.Mutex
	state      string
	cur        *Instance
	path       string
	sha        string
	restarts   int
	lastErr    string
	unhealthy  string // what a running plugin says is wrong, from its health answer
	apiVersion string
	seq        int
	failures   []time.Time

	loopDone chan struct{}
}

type command struct {
	kind  string // restart, upgrade
	path  string
	sha   string
	reply chan error
}

// New returns a supervisor; nothing runs until Start.
func New(opts Options) *Supervisor {
	if opts.Logger == nil {
		opts.Logger = hclog.NewNullLogger()
	}
	if opts.Metrics == nil {
		opts.Metrics = nopMetrics{}
	}
	s := &Supervisor{
		opts:     opts,
		logger:   opts.Logger.Named(opts.Launch.Name),
		name:     opts.Launch.Name,
		cmds:     make(chan command),
		state:    metrics.StateStarting,
		path:     opts.Launch.Path,
		sha:      opts.Launch.SHA256,
		loopDone: make(chan struct{}),
	}
	opts.Metrics.SetPluginState(s.name, metrics.StateStarting)
	return s
}

// Name is the plugin's name.
func (s *Supervisor) Name() string { return s.name }

// Launch starts a process for the first instance and returns it unconfigured,
// so the host can validate every plugin's config before any plugin starts work.
func (s *Supervisor) Launch(ctx context.Context) (*Instance, error) {
	return s.launch(ctx, s.path, s.sha)
}

func (s *Supervisor) launch(ctx context.Context, path, sha string) (*Instance, error) {
	s.mu.Lock()
	s.seq++
	id := fmt.Sprintf("%s-%d", s.name, s.seq)
	s.mu.Unlock()
	spec := s.opts.Launch
	spec.Path, spec.SHA256 = path, sha
	return Launch(ctx, spec, id, s.logger)
}

// Start configures and connects the first instance and runs the supervision
// loop until ctx is done. It returns once the instance is running or failed.
func (s *Supervisor) Start(ctx context.Context, first *Instance) error {
	if err := s.bringUp(ctx, first, true); err != nil {
		first.Stop(context.Background(), false)
		s.recordFailure(err)
		go s.loop(ctx, nil, false)
		return err
	}
	s.setCurrent(first)
	go s.loop(ctx, first, false)
	return nil
}

// Fail marks a plugin that could not even be launched as failed; the loop
// waits for an operator's restart or upgrade.
func (s *Supervisor) Fail(ctx context.Context, err error) {
	s.recordFailure(err)
	s.setState(metrics.StateFailed)
	s.opts.Router.SetAvailable(s.name, false, "plugin failed: "+err.Error())
	go s.loop(ctx, nil, true)
}

// bringUp configures a launched instance and connects it to the router.
func (s *Supervisor) bringUp(ctx context.Context, inst *Instance, active bool) error {
	cfg, err := s.opts.Decode(inst.Schema)
	if err != nil {
		return fmt.Errorf("plugin %s: config: %w", s.name, err)
	}
	dataDir := filepath.Join(s.opts.DataDir, s.name)
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return fmt.Errorf("plugin %s: data dir: %w", s.name, err)
	}
	if err := inst.Configure(ctx, &pluginv1.SetConfigRequest{
		ConfigJson: cfg, NodeName: s.opts.NodeName, DataDir: dataDir, PluginName: s.name,
	}); err != nil {
		return err
	}
	if err := s.opts.Router.SetGroup(s.name, inst.Info.GetGroup()); err != nil {
		return err
	}
	if err := inst.Connect(s.opts.Router, active); err != nil {
		return err
	}
	v, _ := NegotiateAPIVersion(inst.Info.GetApiVersions())
	s.mu.Lock()
	s.apiVersion = v
	s.mu.Unlock()
	return nil
}

func (s *Supervisor) setCurrent(inst *Instance) {
	s.mu.Lock()
	s.cur = inst
	s.path = inst.Path
	s.mu.Unlock()
	s.opts.Router.SetAvailable(s.name, true, "")
	s.setState(metrics.StateRunning)
	s.logger.Info("plugin running", "instance", inst.ID, "pid", inst.PID, "version", inst.Info.GetVersion(), "path", inst.Path)
}

func (s *Supervisor) setState(state string) {
	s.mu.Lock()
	s.state = state
	s.mu.Unlock()
	s.opts.Metrics.SetPluginState(s.name, state)
}

func (s *Supervisor) recordFailure(err error) {
	s.mu.Lock()
	s.lastErr = err.Error()
	s.failures = append(s.failures, time.Now())
	s.mu.Unlock()
	s.logger.Error("plugin failed", "error", err)
}

// loop supervises the current instance until ctx is done.
func (s *Supervisor) loop(ctx context.Context, inst *Instance, failed bool) {
	defer close(s.loopDone)
	for {
		if inst == nil && !failed {
			inst = s.recover(ctx)
		}
		failed = false
		if inst == nil {
			// Failed for good: only an operator's command brings it back.
			select {
			case <-ctx.Done():
				return
			case cmd := <-s.cmds:
				s.mu.Lock()
				s.failures = nil
				s.mu.Unlock()
				inst = s.handle(ctx, nil, cmd)
			}
			continue
		}
		health := s.watchHealth(inst)
		select {
		case <-ctx.Done():
			health.stop()
			return
		case <-inst.Dead():
			health.stop()
			err := inst.DeathReason()
			inst.Stop(context.Background(), false)
			s.recordFailure(fmt.Errorf("instance %s died: %w", inst.ID, err))
			inst = nil
		case err := <-health.failed:
			health.stop()
			s.opts.Metrics.HealthCheckFailed(s.name)
			inst.Stop(context.Background(), false)
			s.recordFailure(fmt.Errorf("instance %s killed after failed health checks: %w", inst.ID, err))
			inst = nil
		case cmd := <-s.cmds:
			health.stop()
			inst = s.handle(ctx, inst, cmd)
		}
	}
}

// recover restarts the plugin with back-off until it runs, the policy gives
// up (nil, state failed), or ctx is done (nil).
func (s *Supervisor) recover(ctx context.Context) *Instance {
	for {
		n, exceeded := s.failureCount()
		if exceeded {
			s.setState(metrics.StateFailed)
			s.opts.Router.SetAvailable(s.name, false, "plugin failed: "+s.lastError())
			s.logger.Error("restart policy exhausted; plugin stays failed", "failures", n, "interval", s.opts.Restart.Interval)
			return nil
		}
		s.setState(metrics.StateRestarting)
		delay := Backoff(s.opts.Restart.Delay, s.opts.Restart.MaxDelay, n, rand.Float64)
		s.logger.Info("restarting plugin", "in", delay, "failures", n)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(delay):
		}
		inst, err := s.relaunch(ctx)
		if err != nil {
			s.recordFailure(err)
			continue
		}
		s.restarted(inst)
		return inst
	}
}

// relaunch starts and connects a new instance from the current binary.
func (s *Supervisor) relaunch(ctx context.Context) (*Instance, error) {
	s.mu.Lock()
	path, sha := s.path, s.sha
	s.mu.Unlock()
	inst, err := s.launch(ctx, path, sha)
	if err != nil {
		return nil, err
	}
	if err := s.bringUp(ctx, inst, true); err != nil {
		inst.Stop(context.Background(), false)
		return nil, err
	}
	return inst, nil
}

// restarted makes inst, which replaced a dead or stopped instance, current.
func (s *Supervisor) restarted(inst *Instance) {
	s.mu.Lock()
	s.restarts++
	s.mu.Unlock()
	s.opts.Metrics.PluginRestarted(s.name)
	s.setCurrent(inst)
}

func (s *Supervisor) failureCount() (int, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cutoff := time.Now().Add(-s.opts.Restart.Interval)
	kept := s.failures[:0]
	for _, t := range s.failures {
		if t.After(cutoff) {
			kept = append(kept, t)
		}
	}
	s.failures = kept
	return len(kept), len(kept) > s.opts.Restart.Attempts
}

func (s *Supervisor) lastError() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastErr
}

// Backoff is the wait before restart n (1-based): delay doubled per failure,
// capped at maxDelay, with "equal jitter" (between half and all of it).
func Backoff(delay, maxDelay time.Duration, n int, rnd func() float64) time.Duration {
	if n < 1 {
		n = 1
	}
	if maxDelay <= 0 {
		maxDelay = time.Hour // no cap asked for: still bounded
	}
	d := delay
	for i := 1; i < n && d < maxDelay; i++ {
		d *= 2
	}
	if d > maxDelay {
		d = maxDelay
	}
	half := d / 2
	return half + time.Duration(rnd()*float64(d-half))
}

// handle runs an operator's command and returns the instance that serves afterwards.
func (s *Supervisor) handle(ctx context.Context, cur *Instance, cmd command) *Instance {
	switch cmd.kind {
	case "restart":
		s.setState(metrics.StateRestarting)
		if cur != nil {
			cur.Stop(ctx, true)
		}
		inst, err := s.relaunch(ctx)
		if err != nil {
			s.recordFailure(err)
			cmd.reply <- err
			return nil // the loop falls back to the restart policy
		}
		s.restarted(inst)
		cmd.reply <- nil
		return inst
	case "upgrade":
		inst, err := s.upgrade(ctx, cur, cmd.path, cmd.sha)
		cmd.reply <- err
		return inst
	}
	cmd.reply <- fmt.Errorf("unknown command %q", cmd.kind)
	return cur
}

// upgrade starts the new binary beside the old one, switches routing to it,
// lets the old one finish what it holds, and stops it. If the new binary
// cannot start, the old one keeps serving.
func (s *Supervisor) upgrade(ctx context.Context, cur *Instance, path, sha string) (*Instance, error) {
	prev := s.currentState()
	s.setState(metrics.StateUpgrading)
	inst, err := s.launch(ctx, path, sha)
	if err == nil {
		if err = s.bringUp(ctx, inst, cur == nil); err != nil {
			inst.Stop(context.Background(), false)
		}
	}
	if err != nil {
		s.setState(prev)
		if cur == nil {
			s.setState(metrics.StateFailed)
		}
		return cur, fmt.Errorf("upgrade %s to %s: %w", s.name, path, err)
	}
	s.mu.Lock()
	s.sha = sha
	s.mu.Unlock()
	inst.Attachment().Activate()
	if cur != nil {
		dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		if err := cur.Attachment().Drain(dctx); err != nil {
			s.logger.Warn("old instance did not drain; its messages are redelivered", "error", err)
		}
		cancel()
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		cur.Stop(sctx, true)
		cancel()
	}
	s.setCurrent(inst)
	s.logger.Info("plugin upgraded", "version", inst.Info.GetVersion(), "path", path)
	return inst, nil
}

func (s *Supervisor) currentState() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state
}

func (s *Supervisor) command(ctx context.Context, cmd command) error {
	cmd.reply = make(chan error, 1)
	select {
	case s.cmds <- cmd:
	case <-ctx.Done():
		return fmt.Errorf("%s %s: %w", cmd.kind, s.name, ErrBusy)
	}
	select {
	case err := <-cmd.reply:
		return err
	case <-ctx.Done():
		return fmt.Errorf("%s %s: %w", cmd.kind, s.name, ctx.Err())
	}
}

// Restart stops the plugin and starts it again from its current binary.
func (s *Supervisor) Restart(ctx context.Context) error {
	return s.command(ctx, command{kind: "restart"})
}

// Upgrade replaces the plugin with the binary at path, losing no message.
func (s *Supervisor) Upgrade(ctx context.Context, path, sha string) error {
	abs, err := filepath.Abs(path)
	if err != nil {
		return err
	}
	return s.command(ctx, command{kind: "upgrade", path: abs, sha: sha})
}

// Stop stops the current instance gracefully; call it after cancelling the
// context given to Start.
func (s *Supervisor) Stop(ctx context.Context) {
	select {
	case <-s.loopDone:
	case <-ctx.Done():
	}
	s.mu.Lock()
	inst := s.cur
	s.cur = nil
	s.mu.Unlock()
	if inst != nil {
		inst.Stop(ctx, true)
	}
	s.opts.Router.SetAvailable(s.name, false, "host stopping")
	s.setState(metrics.StateStopped)
}

// setUnhealthy records what a plugin that answers its health checks says is
// wrong with it, for status; healthy clears it.
func (s *Supervisor) setUnhealthy(healthy bool, reason string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	was := s.unhealthy
	if healthy {
		s.unhealthy = ""
	} else {
		s.unhealthy = "unhealthy: " + reason
	}
	if s.unhealthy != was && s.unhealthy != "" {
		s.logger.Warn("plugin reports itself unhealthy", "reason", reason)
	}
}

// Current returns the serving instance, if any.
func (s *Supervisor) Current() *Instance {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cur
}

// Status returns a snapshot.
func (s *Supervisor) Status() Status {
	s.mu.Lock()
	st := Status{Name: s.name, State: s.state, Path: s.path, Restarts: s.restarts, LastError: s.lastErr, APIVersion: s.apiVersion}
	if s.unhealthy != "" && st.State == metrics.StateRunning {
		st.LastError = s.unhealthy
	}
	inst := s.cur
	s.mu.Unlock()
	if inst != nil && (st.State == metrics.StateRunning || st.State == metrics.StateUpgrading) {
		st.PID = inst.PID
		st.Version = inst.Info.GetVersion()
		st.Group = inst.Info.GetGroup()
		st.StartedAt = inst.started
	}
	rs := s.opts.Router.Stats(s.name)
	st.QueueDepth, st.InFlight = rs.Queued, rs.InFlight
	return st
}

type healthWatch struct {
	failed chan error
	quit   chan struct{}
	once   sync.Once
}

func (h *healthWatch) stop() { h.once.Do(func() { close(h.quit) }) }

func (s *Supervisor) watchHealth(inst *Instance) *healthWatch {
	h := &healthWatch{failed: make(chan error, 1), quit: make(chan struct{})}
	p := s.opts.Health
	if p.Interval <= 0 {
		return h
	}
	go func() {
		t := time.NewTicker(p.Interval)
		defer t.Stop()
		misses := 0
		for {
			select {
			case <-h.quit:
				return
			case <-t.C:
			}
			ctx, cancel := context.WithTimeout(context.Background(), p.Timeout)
			healthy, reason, err := inst.Health(ctx)
			cancel()
			if err == nil {
				// It answers: restarting it would not mend what it reports
				// (containerd down, cloud unreachable), so it is only shown.
				misses = 0
				s.setUnhealthy(healthy, reason)
				continue
			}
			misses++
			s.logger.Warn("health check failed", "instance", inst.ID, "misses", misses, "error", err)
			if misses >= max(p.Failures, 1) {
				h.failed <- err
				return
			}
		}
	}()
	return h
}

type nopMetrics struct{}

func (nopMetrics) PluginRestarted(string)        {}
func (nopMetrics) SetPluginState(string, string) {}
func (nopMetrics) HealthCheckFailed(string)      {}
