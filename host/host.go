// Package host is the edgehive daemon: it starts every plugin of the config
// under its own supervisor, connects them through the router, and serves the
// admin API.
package host

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/hcl/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"google.golang.org/grpc/status"

	"github.com/edgehive/edgehive/host/admin"
	"github.com/edgehive/edgehive/host/config"
	"github.com/edgehive/edgehive/host/metrics"
	"github.com/edgehive/edgehive/host/router"
	"github.com/edgehive/edgehive/host/supervisor"
	"github.com/edgehive/edgehive/sdk"
	pluginv1 "github.com/edgehive/edgehive/sdk/proto/plugin/v1"
)

// Host ties the parts together. Create it with New, then Prepare and Start,
// or just Run.
type Host struct {
	cfg     *config.Config
	logger  hclog.Logger
	reg     *prometheus.Registry
	metrics *metrics.Metrics
	router  *router.Router

	sups     []*supervisor.Supervisor // enabled plugins, in config order
	byName   map[string]*supervisor.Supervisor
	disabled []string
	first    map[string]*supervisor.Instance
	launchEr map[string]error

	mu      sync.Mutex
	started []*supervisor.Supervisor
}

// New builds the host from a parsed config; nothing starts.
func New(cfg *config.Config, logger hclog.Logger) (*Host, error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m := metrics.New(reg)
	r := router.New(router.Options{
		QueueCapacity:   cfg.Router.QueueCapacity,
		SendTimeout:     cfg.Router.SendTimeout,
		MaxMessageBytes: cfg.Router.MaxMessageBytes,
		Logger:          logger.Named("router"),
		Metrics:         m,
	})
	h := &Host{cfg: cfg, logger: logger, reg: reg, metrics: m, router: r, byName: map[string]*supervisor.Supervisor{}}
	for _, p := range cfg.Plugins {
		if err := r.Register(p.Name, ""); err != nil {
			return nil, err
		}
		if !p.Enabled {
			h.disabled = append(h.disabled, p.Name)
			r.SetAvailable(p.Name, false, "plugin disabled in config")
			m.SetPluginState(p.Name, metrics.StateDisabled)
			continue
		}
		pc := p
		sup := supervisor.New(supervisor.Options{
			Launch: supervisor.LaunchSpec{
				Name: p.Name, Path: p.Path, SHA256: p.SHA256, Args: p.Args, Env: p.Environ(), LogLevel: cfg.Log.Level,
			},
			Restart:  p.Restart,
			Health:   p.Health,
			NodeName: cfg.NodeName,
			DataDir:  cfg.DataDir,
			Router:   r,
			Decode: func(schema *sdk.Schema) (json.RawMessage, error) {
				raw, diags := config.DecodePluginConfig(pc, schema)
				if diags.HasErrors() {
					return nil, diagError(diags)
				}
				return raw, nil
			},
			Logger:  logger,
			Metrics: m,
		})
		h.sups = append(h.sups, sup)
		h.byName[p.Name] = sup
	}
	return h, nil
}

// Router is the host's router (benchmarks and tests attach in-process modules to it).
func (h *Host) Router() *router.Router { return h.router }

// Registry holds the host's metrics.
func (h *Host) Registry() *prometheus.Registry { return h.reg }

// Prepare launches every enabled plugin, reads its schema and validates its
// config block, all before any plugin is configured. Diagnostics cover every
// plugin at once. A plugin that cannot be launched is reported in launchErrs
// and, unless strict, does not stop the others.
func (h *Host) Prepare(ctx context.Context) hcl.Diagnostics {
	type result struct {
		inst *supervisor.Instance
		err  error
	}
	results := make([]result, len(h.sups))
	var wg sync.WaitGroup
	for i, sup := range h.sups {
		wg.Add(1)
		go func() {
			defer wg.Done()
			inst, err := sup.Launch(ctx)
			results[i] = result{inst, err}
		}()
	}
	wg.Wait()
	h.first = map[string]*supervisor.Instance{}
	h.launchEr = map[string]error{}
	var diags hcl.Diagnostics
	for i, sup := range h.sups {
		pc := h.pluginConfig(sup.Name())
		if results[i].err != nil {
			h.launchEr[sup.Name()] = results[i].err
			rng := pc.DeclRange
			if pc.PathRange != nil {
				rng = *pc.PathRange
			}
			diags = append(diags, &hcl.Diagnostic{
				Severity: hcl.DiagError,
				Summary:  "Plugin cannot be started",
				Detail:   results[i].err.Error(),
				Subject:  &rng,
			})
			continue
		}
		inst := results[i].inst
		h.first[sup.Name()] = inst
		if _, d := config.DecodePluginConfig(pc, inst.Schema); d.HasErrors() {
			diags = append(diags, d...)
		}
		if _, err := supervisor.NegotiateAPIVersion(inst.Info.GetApiVersions()); err != nil {
			rng := pc.DeclRange
			diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Incompatible plugin", Detail: err.Error(), Subject: &rng})
		}
	}
	return diags
}

// CheckPluginConfigs hands every plugin Prepare launched its decoded config,
// as a start would, so that the checks a plugin's SetConfig makes show up in
// validate too. Each plugin gets a scratch data directory under scratchDir.
func (h *Host) CheckPluginConfigs(ctx context.Context, scratchDir string) hcl.Diagnostics {
	var diags hcl.Diagnostics
	for _, sup := range h.sups {
		inst, ok := h.first[sup.Name()]
		if !ok {
			continue
		}
		pc := h.pluginConfig(sup.Name())
		raw, d := config.DecodePluginConfig(pc, inst.Schema)
		if d.HasErrors() {
			continue // Prepare reported these
		}
		err := inst.Configure(ctx, &pluginv1.SetConfigRequest{
			ConfigJson: raw, NodeName: h.cfg.NodeName, PluginName: sup.Name(),
			DataDir: filepath.Join(scratchDir, sup.Name()),
		})
		if err != nil {
			rng := pc.DeclRange
			diags = append(diags, &hcl.Diagnostic{
				Severity: hcl.DiagError,
				Summary:  "Plugin rejected its config",
				Detail:   status.Convert(errors.Unwrap(err)).Message(),
				Subject:  &rng,
			})
		}
	}
	return diags
}

// Discard stops the processes Prepare launched (validate uses it).
func (h *Host) Discard() {
	var wg sync.WaitGroup
	for _, inst := range h.first {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			inst.Stop(ctx, true)
		}()
	}
	wg.Wait()
	h.first = nil
}

// start configures and connects the launched plugins in config order; a
// plugin that could not be launched is marked failed.
func (h *Host) start(ctx context.Context) {
	for _, sup := range h.sups {
		inst, ok := h.first[sup.Name()]
		if !ok {
			err := h.launchEr[sup.Name()]
			sup.Fail(ctx, err)
			continue
		}
		if err := sup.Start(ctx, inst); err != nil {
			h.logger.Error("plugin did not start", "plugin", sup.Name(), "error", err)
		}
		h.mu.Lock()
		h.started = append(h.started, sup)
		h.mu.Unlock()
	}
	h.first = nil
}

// Run prepares and starts every plugin, serves the admin API, and on ctx's
// end stops the plugins in reverse start order within stopTimeout.
func (h *Host) Run(ctx context.Context, stopTimeout time.Duration) error {
	diags := h.Prepare(ctx)
	var cfgErrs hcl.Diagnostics
	for _, d := range diags {
		if d.Summary != "Plugin cannot be started" {
			cfgErrs = append(cfgErrs, d)
		}
	}
	if cfgErrs.HasErrors() {
		h.Discard()
		return diagError(cfgErrs)
	}
	for name, err := range h.launchEr {
		h.logger.Error("plugin cannot be started; the others start", "plugin", name, "error", err)
	}
	runCtx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go h.router.Run(runCtx)

	adminDone := make(chan error, 1)
	if h.cfg.Admin.Socket != "" || h.cfg.Admin.Address != "" {
		l, err := admin.Listen(h.cfg.Admin.Socket, h.cfg.Admin.Address)
		if err != nil {
			h.Discard()
			return fmt.Errorf("admin API: %w", err)
		}
		srv := admin.New(h, h.reg, h.logger)
		go func() { adminDone <- srv.Serve(runCtx, l) }()
		h.logger.Info("admin API listening", "socket", h.cfg.Admin.Socket, "address", h.cfg.Admin.Address)
	} else {
		adminDone <- nil
	}
	h.start(runCtx)
	h.logger.Info("edgehive running", "node", h.cfg.NodeName, "plugins", len(h.sups))

	<-ctx.Done()
	h.logger.Info("stopping plugins", "timeout", stopTimeout)
	h.Stop(stopTimeout, cancel)
	return <-adminDone
}

// Stop stops the plugins in reverse start order, all within timeout.
func (h *Host) Stop(timeout time.Duration, cancelRun context.CancelFunc) {
	deadline := time.Now().Add(timeout)
	cancelRun()
	h.mu.Lock()
	started := append([]*supervisor.Supervisor(nil), h.started...)
	h.mu.Unlock()
	for i := len(started) - 1; i >= 0; i-- {
		ctx, cancel := context.WithDeadline(context.Background(), deadline)
		started[i].Stop(ctx)
		cancel()
	}
}

func (h *Host) pluginConfig(name string) *config.PluginConfig {
	for _, p := range h.cfg.Plugins {
		if p.Name == name {
			return p
		}
	}
	return nil
}

// Supervisor returns the supervisor of an enabled plugin.
func (h *Host) Supervisor(name string) *supervisor.Supervisor { return h.byName[name] }

// Plugins implements admin.Backend.
func (h *Host) Plugins() []admin.PluginStatus {
	var out []admin.PluginStatus
	for _, sup := range h.sups {
		st := sup.Status()
		ps := admin.PluginStatus{
			Name: st.Name, Group: st.Group, State: st.State, Version: st.Version, APIVersion: st.APIVersion,
			Path: st.Path, PID: st.PID, Restarts: st.Restarts, StartedAt: st.StartedAt,
			QueueDepth: st.QueueDepth, InFlight: st.InFlight, LastError: st.LastError,
		}
		if !st.StartedAt.IsZero() {
			ps.UptimeSeconds = time.Since(st.StartedAt).Seconds()
		}
		out = append(out, ps)
	}
	for _, name := range h.disabled {
		out = append(out, admin.PluginStatus{Name: name, State: metrics.StateDisabled})
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Ready implements admin.Backend: every enabled plugin is running.
func (h *Host) Ready() bool {
	for _, sup := range h.sups {
		if sup.Status().State != metrics.StateRunning {
			return false
		}
	}
	return true
}

// Restart implements admin.Backend.
func (h *Host) Restart(ctx context.Context, name string) error {
	sup, ok := h.byName[name]
	if !ok {
		return fmt.Errorf("%w: %q", admin.ErrUnknownPlugin, name)
	}
	return mapBusy(sup.Restart(ctx))
}

// Upgrade implements admin.Backend.
func (h *Host) Upgrade(ctx context.Context, name, path, sha string) error {
	sup, ok := h.byName[name]
	if !ok {
		return fmt.Errorf("%w: %q", admin.ErrUnknownPlugin, name)
	}
	return mapBusy(sup.Upgrade(ctx, path, sha))
}

func mapBusy(err error) error {
	if errors.Is(err, supervisor.ErrBusy) {
		return fmt.Errorf("%w: %v", admin.ErrBusy, err)
	}
	return err
}

// ConfigError carries config diagnostics; its text is one
// FILE:LINE:COL line per diagnostic.
type ConfigError struct {
	Diags hcl.Diagnostics
}

func (e *ConfigError) Error() string {
	lines := make([]string, 0, len(e.Diags))
	for _, d := range e.Diags {
		lines = append(lines, config.FormatDiagnostic(d))
	}
	return strings.Join(lines, "\n")
}

func diagError(diags hcl.Diagnostics) error { return &ConfigError{Diags: diags} }

var _ admin.Backend = (*Host)(nil)
