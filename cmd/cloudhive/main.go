// Command cloudhive is the cloud half of edgehive: cloudhub (the edge link
// and node certificates) and the controllers behind it, against a
// Kubernetes API server.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/edgehive/edgehive/cloud/cloudhub"
	"github.com/edgehive/edgehive/configs"
	"github.com/edgehive/edgehive/internal/cli"
)

const usage = `cloudhive — the cloud half of edgehive (cloudhub and controllers)

Usage:
  cloudhive run      [-config FILE] [-kubeconfig FILE] [-admin ADDR]   run (no -config: the embedded default)
  cloudhive token    [-config FILE] [-kubeconfig FILE]   print a join token (created when missing or old)
  cloudhive validate [-config FILE]                      check a config
  cloudhive bench    nodes [-nodes N] [-pods N]          simulated nodes against an in-process cloudhub
  cloudhive version
`

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	return cli.App{Name: "cloudhive", Version: version, Usage: usage, Commands: map[string]cli.Command{
		"run":      func(args []string, _, stderr io.Writer) int { return cmdRun(args, stderr) },
		"token":    cmdToken,
		"validate": cmdValidate,
		"bench":    cmdBench,
	}}.Run(args, stdout, stderr)
}

// loadConfig reads path (empty: the embedded default), decodes the
// edgecontroller block too, and prints diagnostics as FILE:LINE:COL.
func loadConfig(path, kubeconfig string, stderr io.Writer) (*Config, controllerConfig, bool) {
	name, src := configs.CloudhiveFilename, configs.Cloudhive
	if path != "" {
		var err error
		if src, err = os.ReadFile(path); err != nil {
			fmt.Fprintf(stderr, "cloudhive: %v\n", err)
			return nil, controllerConfig{}, false
		}
		name = path
	}
	cfg, diags := parseConfig(name, src)
	if diags.HasErrors() {
		writeDiags(stderr, diags)
		return nil, controllerConfig{}, false
	}
	ctrl, diags := decodeControllerConfig(cfg.EdgeController)
	if diags.HasErrors() {
		writeDiags(stderr, diags)
		return nil, controllerConfig{}, false
	}
	if kubeconfig != "" {
		cfg.Kubeconfig = kubeconfig
	}
	return cfg, ctrl, true
}

func newLogger(cfg *Config, w io.Writer) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{
		Name:       "cloudhive",
		Level:      hclog.LevelFromString(cfg.LogLevel),
		Output:     w,
		JSONFormat: cfg.LogJSON,
	})
}

func cmdRun(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "", "HCL config file (default: the embedded configs/cloudhive.hcl)")
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig file (overrides the config's kubeconfig)")
	admin := fs.String("admin", "", "admin API address (overrides admin.listen; replicas sharing one config need their own)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg, ctrl, ok := loadConfig(*cfgPath, *kubeconfig, stderr)
	if !ok {
		return 1
	}
	if *admin != "" {
		if _, _, err := net.SplitHostPort(*admin); err != nil {
			fmt.Fprintf(stderr, "cloudhive: -admin %q: %v\n", *admin, err)
			return 2
		}
		cfg.AdminAddr = *admin
	}
	logger := newLogger(cfg, stderr)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := serve(ctx, cfg, ctrl, logger); err != nil && !errors.Is(err, context.Canceled) {
		logger.Error("cloudhive stopped with an error", "error", err)
		return 1
	}
	logger.Info("cloudhive stopped")
	return 0
}

func cmdToken(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("token", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "", "HCL config file (default: the embedded configs/cloudhive.hcl)")
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig file (overrides the config's kubeconfig)")
	timeout := fs.Duration("timeout", 30*time.Second, "how long to wait for the API server")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg, _, ok := loadConfig(*cfgPath, *kubeconfig, stderr)
	if !ok {
		return 1
	}
	client, _, err := kubeClient(cfg)
	if err != nil {
		fmt.Fprintf(stderr, "cloudhive: %v\n", err)
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	secrets := cloudhub.Secrets{Client: client, Namespace: cfg.Namespace}
	ca, err := secrets.CA(ctx, time.Now())
	if err != nil {
		fmt.Fprintf(stderr, "cloudhive: %v\n", err)
		return 1
	}
	token, err := secrets.Token(ctx, ca, cfg.TokenTTL, time.Now())
	if err != nil {
		fmt.Fprintf(stderr, "cloudhive: %v\n", err)
		return 1
	}
	fmt.Fprintln(stdout, token)
	return 0
}

func cmdValidate(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("validate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "", "HCL config file (default: the embedded configs/cloudhive.hcl)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if _, _, ok := loadConfig(*cfgPath, "", stderr); !ok {
		return 1
	}
	name := *cfgPath
	if name == "" {
		name = configs.CloudhiveFilename
	}
	fmt.Fprintf(stdout, "%s: ok\n", name)
	return 0
}
