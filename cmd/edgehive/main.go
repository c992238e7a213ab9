// Command edgehive is the edge-node host and, called by another name, any of
// its built-in plugins: bin/plugins/<name> are links to this one binary, so
// the seven processes share their code pages.
package main

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime/pprof"

	"github.com/edgehive/edgehive/internal/loopback"
	"github.com/edgehive/edgehive/plugins"
	"github.com/edgehive/edgehive/sdk"
)

// serveArg starts a built-in plugin explicitly: `edgehive __serve NAME`.
const serveArg = "__serve"

func main() {
	if sdk.IsPluginProcess() {
		os.Exit(servePlugin())
	}
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// servePlugin runs the plugin this process was started as.
func servePlugin() int {
	name := filepath.Base(os.Args[0])
	if len(os.Args) > 2 && os.Args[1] == serveArg {
		name = os.Args[2]
	}
	// EDGEHIVE_PLUGIN_CPUPROFILE=DIR writes DIR/<name>-<pid>.pprof when the
	// plugin stops normally: for performance work on the message plane.
	if dir := os.Getenv("EDGEHIVE_PLUGIN_CPUPROFILE"); dir != "" {
		if f, err := os.Create(filepath.Join(dir, fmt.Sprintf("%s-%d.pprof", name, os.Getpid()))); err == nil {
			if pprof.StartCPUProfile(f) == nil {
				defer pprof.StopCPUProfile()
			}
		}
	}
	if name == "loopback" {
		sdk.Serve(loopback.New())
		return 0
	}
	factory, ok := plugins.Builtin()[name]
	if !ok {
		fmt.Fprintf(os.Stderr, "edgehive: no built-in plugin %q (have %v)\n", name, plugins.Names())
		return 2
	}
	sdk.Serve(factory())
	return 0
}
