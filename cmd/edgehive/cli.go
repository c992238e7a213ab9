package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/edgehive/edgehive/configs"
	"github.com/edgehive/edgehive/host"
	"github.com/edgehive/edgehive/host/admin"
	"github.com/edgehive/edgehive/host/config"
	"github.com/edgehive/edgehive/internal/cli"
)

const usage = `edgehive — the edge-node host of edgehive

Usage:
  edgehive run      [-config FILE]          run the host (no -config: the embedded default)
  edgehive validate [-config FILE]          check a config, including every plugin's config block
  edgehive status   [-json] [-admin SOCK]   show every plugin's state
  edgehive plugin restart NAME [-admin SOCK]
  edgehive plugin upgrade NAME -path BIN [-sha256 HEX] [-admin SOCK]
  edgehive join     -cloud HOST -token TOKEN [-node NAME] [-config FILE]
  edgehive bench    route|restart|footprint|pods [flags]
  edgehive version
`

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func run(args []string, stdout, stderr io.Writer) int {
	return cli.App{Name: "edgehive", Version: version, Usage: usage, Commands: map[string]cli.Command{
		"run":      func(args []string, _, stderr io.Writer) int { return cmdRun(args, stderr) },
		"validate": cmdValidate,
		"status":   cmdStatus,
		"plugin":   cmdPlugin,
		"bench":    cmdBench,
		"join":     cmdJoin,
	}}.Run(args, stdout, stderr)
}

// loadConfig reads FILE, or the embedded default when path is empty, and
// prints diagnostics with file:line:col.
func loadConfig(path string, stderr io.Writer) (*config.Config, bool) {
	exe, _ := os.Executable()
	exeDir := filepath.Dir(exe)
	// Paths in a file are relative to it; in the embedded default, to the binary.
	name, src, baseDir := configs.DefaultFilename, configs.Default, exeDir
	if path != "" {
		var err error
		if src, err = os.ReadFile(path); err != nil {
			fmt.Fprintf(stderr, "edgehive: %v\n", err)
			return nil, false
		}
		name, baseDir = path, filepath.Dir(path)
	}
	cfg, diags := config.Parse(name, src, config.WithOptions(config.Options{BaseDir: baseDir, DefaultPluginDir: filepath.Join(exeDir, "plugins")}))
	if diags.HasErrors() {
		_ = config.FormatDiagnostics(stderr, diags)
		return nil, false
	}
	return cfg, true
}

func newLogger(cfg *config.Config, w io.Writer) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{
		Name:       "edgehive",
		Level:      hclog.LevelFromString(cfg.Log.Level),
		Output:     w,
		JSONFormat: cfg.Log.Format == "json",
	})
}

func cmdRun(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "", "HCL config file (default: the embedded configs/edgehive.hcl)")
	stopTimeout := fs.Duration("stop-timeout", 15*time.Second, "how long SIGTERM waits for plugins to stop")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg, ok := loadConfig(*cfgPath, stderr)
	if !ok {
		return 1
	}
	logger := newLogger(cfg, stderr)
	if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
		logger.Error("cannot create data_dir", "path", cfg.DataDir, "error", err)
		return 1
	}
	h, err := host.New(cfg, logger)
	if err != nil {
		logger.Error("cannot build host", "error", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := h.Run(ctx, *stopTimeout); err != nil && !errors.Is(err, context.Canceled) {
		var cfgErr *host.ConfigError
		if errors.As(err, &cfgErr) {
			_ = config.FormatDiagnostics(stderr, cfgErr.Diags)
			return 1
		}
		logger.Error("host stopped with an error", "error", err)
		return 1
	}
	return 0
}

func cmdValidate(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("validate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "", "HCL config file (default: the embedded config)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg, ok := loadConfig(*cfgPath, stderr)
	if !ok {
		return 1
	}
	if diags := config.CheckPluginPaths(cfg); diags.HasErrors() {
		_ = config.FormatDiagnostics(stderr, diags)
		return 1
	}
	logger := hclog.New(&hclog.LoggerOptions{Name: "edgehive", Level: hclog.Warn, Output: stderr})
	h, err := host.New(cfg, logger)
	if err != nil {
		fmt.Fprintf(stderr, "edgehive: %v\n", err)
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	diags := h.Prepare(ctx)
	if !diags.HasErrors() {
		scratch, err := os.MkdirTemp("", "edgehive-validate-")
		if err != nil {
			h.Discard()
			fmt.Fprintf(stderr, "edgehive: %v\n", err)
			return 1
		}
		diags = h.CheckPluginConfigs(ctx, scratch)
		defer os.RemoveAll(scratch)
	}
	h.Discard()
	if diags.HasErrors() {
		_ = config.FormatDiagnostics(stderr, diags)
		return 1
	}
	fmt.Fprintf(stdout, "configuration is valid: %d plugins\n", len(cfg.Plugins))
	return 0
}

// adminFlags resolves the admin endpoint: -admin, else the config's.
func adminClient(fs *flag.FlagSet, args []string, stderr io.Writer) (*admin.Client, []string, bool) {
	sock := fs.String("admin", "", "admin socket path or loopback host:port (default: from -config or the embedded config)")
	cfgPath := fs.String("config", "", "HCL config to read the admin endpoint from")
	if err := fs.Parse(args); err != nil {
		return nil, nil, false
	}
	rest := fs.Args()
	if *sock != "" {
		if strings.Contains(*sock, "/") {
			return admin.NewClient(*sock, ""), rest, true
		}
		return admin.NewClient("", *sock), rest, true
	}
	cfg, ok := loadConfig(*cfgPath, stderr)
	if !ok {
		return nil, nil, false
	}
	return admin.NewClient(cfg.Admin.Socket, cfg.Admin.Address), rest, true
}

func cmdStatus(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	asJSON := fs.Bool("json", false, "print JSON")
	client, _, ok := adminClient(fs, args, stderr)
	if !ok {
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	plugins, err := client.Plugins(ctx)
	if err != nil {
		fmt.Fprintf(stderr, "edgehive: status: %v\n", err)
		return 1
	}
	if *asJSON {
		err = admin.WriteStatusJSON(stdout, plugins)
	} else {
		err = admin.WriteStatusTable(stdout, plugins)
	}
	if err != nil {
		fmt.Fprintf(stderr, "edgehive: status: %v\n", err)
		return 1
	}
	return 0
}

func cmdPlugin(args []string, stdout, stderr io.Writer) int {
	if len(args) < 2 {
		fmt.Fprint(stderr, "usage: edgehive plugin restart|upgrade NAME [flags]\n")
		return 2
	}
	verb, name := args[0], args[1]
	fs := flag.NewFlagSet("plugin "+verb, flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("path", "", "new plugin binary (upgrade)")
	sum := fs.String("sha256", "", "expected sha256 of the new binary (upgrade)")
	client, _, ok := adminClient(fs, args[2:], stderr)
	if !ok {
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var (
		st  admin.PluginStatus
		err error
	)
	switch verb {
	case "restart":
		st, err = client.Restart(ctx, name)
	case "upgrade":
		if *path == "" {
			fmt.Fprint(stderr, "edgehive: plugin upgrade needs -path\n")
			return 2
		}
		abs, aerr := filepath.Abs(*path)
		if aerr != nil {
			fmt.Fprintf(stderr, "edgehive: %v\n", aerr)
			return 1
		}
		st, err = client.Upgrade(ctx, name, abs, *sum)
	default:
		fmt.Fprintf(stderr, "edgehive: unknown plugin command %q\n", verb)
		return 2
	}
	if err != nil {
		fmt.Fprintf(stderr, "edgehive: plugin %s %s: %v\n", verb, name, err)
		return 1
	}
	if err := admin.WriteStatusTable(stdout, []admin.PluginStatus{st}); err != nil {
		return 1
	}
	return 0
}
