package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/pprof"
	"time"

	"github.com/edgehive/edgehive/internal/bench"
)

// benchmark is one `edgehive bench NAME`: flags registers its flags and
// returns what runs it once they are parsed.
type benchmark struct {
	flags       func(fs *flag.FlagSet) (run func(stdout, stderr io.Writer) error)
	profileHelp string // the -cpuprofile flag's help; "" means no such flag
}

func benchmarks() map[string]benchmark {
	return map[string]benchmark{
		"route": {profileHelp: "write the host's CPU profile here", flags: func(fs *flag.FlagSet) func(io.Writer, io.Writer) error {
			var o bench.RouteOptions
			fs.DurationVar(&o.Duration, "duration", 5e9, "how long to send")
			fs.IntVar(&o.Size, "size", 256, "content bytes per message")
			fs.Float64Var(&o.Rate, "rate", 0, "messages per second (0: as fast as possible)")
			fs.IntVar(&o.Concurrency, "concurrency", 0, "sending goroutines in the sending plugin (default 16, or 8 with -rate)")
			fs.IntVar(&o.Batch, "batch", 0, "messages per SendBatch in the sending plugin (default 128, or 1 with -rate)")
			fs.BoolVar(&o.NoBaseline, "no-baseline", false, "skip the in-process baseline")
			return func(stdout, stderr io.Writer) error { return bench.Route(o, stdout, stderr) }
		}},
		"restart": {flags: func(fs *flag.FlagSet) func(io.Writer, io.Writer) error {
			var o bench.RestartOptions
			fs.Float64Var(&o.Rate, "rate", 5000, "messages per second while the receiver is killed")
			fs.DurationVar(&o.Duration, "duration", 4e9, "length of the run; the kill comes at a third of it")
			return func(stdout, stderr io.Writer) error { return bench.Restart(o, stdout, stderr) }
		}},
		"pods": {flags: func(fs *flag.FlagSet) func(io.Writer, io.Writer) error {
			var o bench.PodsOptions
			fs.IntVar(&o.Count, "count", 10, "pods to deliver at once")
			fs.StringVar(&o.RuntimeEndpoint, "runtime-endpoint", defaultRuntimeEndpoint(), "CRI socket (default $CONTAINERD_ADDRESS, else containerd's)")
			fs.StringVar(&o.Image, "image", "docker.io/library/busybox:1.36", "container image, already present in the runtime")
			fs.StringVar(&o.SandboxImage, "sandbox-image", "registry.k8s.io/pause:3.10", "pause image, already present in the runtime")
			fs.BoolVar(&o.HostNetwork, "host-network", false, "host-network pods instead of CNI bridge pods")
			fs.DurationVar(&o.Timeout, "timeout", 2*time.Minute, "how long all pods may take to run")
			return func(stdout, stderr io.Writer) error { return bench.Pods(o, stdout, stderr) }
		}},
		"twin": {profileHelp: "write the CPU profile of the host and the simulated mappers here (plugins: EDGEHIVE_PLUGIN_CPUPROFILE=DIR)", flags: func(fs *flag.FlagSet) func(io.Writer, io.Writer) error {
			var o bench.TwinOptions
			fs.IntVar(&o.Mappers, "mappers", 10, "simulated mappers, one device each")
			fs.DurationVar(&o.Duration, "duration", 5*time.Second, "how long they publish")
			fs.IntVar(&o.InFlight, "in-flight", 8, "updates each mapper has waiting for a result")
			fs.IntVar(&o.GoMaxProcs, "gomaxprocs", 1, "GOMAXPROCS of eventbus and devicetwin (the default config's is 1)")
			return func(stdout, stderr io.Writer) error { return bench.Twin(o, stdout, stderr) }
		}},
		"footprint": {flags: func(fs *flag.FlagSet) func(io.Writer, io.Writer) error {
			var o bench.FootprintOptions
			fs.DurationVar(&o.Settle, "settle", 3e9, "idle time before measuring")
			return func(stdout, stderr io.Writer) error { return bench.Footprint(o, stdout, stderr) }
		}},
	}
}

func cmdBench(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, "usage: edgehive bench route|restart|footprint|pods|twin [flags]\n")
		return 2
	}
	b, ok := benchmarks()[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "edgehive: unknown benchmark %q\n", args[0])
		return 2
	}
	fs := flag.NewFlagSet("bench "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	run := b.flags(fs)
	var cpuProfile *string
	if b.profileHelp != "" {
		cpuProfile = fs.String("cpuprofile", "", b.profileHelp)
	}
	if fs.Parse(args[1:]) != nil {
		return 2
	}
	if cpuProfile != nil {
		stopProfile, err := startCPUProfile(*cpuProfile)
		if err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		defer stopProfile()
	}
	if err := run(stdout, stderr); err != nil {
		fmt.Fprintf(stderr, "edgehive: bench %s: %v\n", args[0], err)
		return 1
	}
	return 0
}

// startCPUProfile writes this process's CPU profile to path until stop is
// called; an empty path profiles nothing. A profile that cannot start (one
// is already running) is skipped: the benchmark matters more.
func startCPUProfile(path string) (stop func(), err error) {
	if path == "" {
		return func() {}, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if pprof.StartCPUProfile(f) != nil {
		return func() { _ = f.Close() }, nil
	}
	return func() {
		pprof.StopCPUProfile()
		_ = f.Close()
	}, nil
}

// defaultRuntimeEndpoint is the private containerd of `make containerd-up`
// when its address is in the environment, else the system containerd.
func defaultRuntimeEndpoint() string {
	if a := os.Getenv("CONTAINERD_ADDRESS"); a != "" {
		return "unix://" + a
	}
	return "unix:///run/containerd/containerd.sock"
}
