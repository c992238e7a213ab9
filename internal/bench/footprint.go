package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/edgehive/edgehive/host/admin"
)

// builtinPlugins are the six plugins of the default config.
var builtinPlugins = []string{"edged", "edgehub", "metamanager", "eventbus", "devicetwin", "servicebus"}

// FootprintOptions shape the footprint benchmark.
type FootprintOptions struct {
	Settle time.Duration // idle time before measuring
}

// ProcessMemory is one process's memory.
type ProcessMemory struct {
	Name  string `json:"name"`
	PID   int    `json:"pid"`
	RSSKB int64  `json:"rss_kb"`
	PSSKB int64  `json:"pss_kb"`
}

// FootprintResult is printed as JSON.
type FootprintResult struct {
	Processes  []ProcessMemory `json:"processes"`
	TotalRSSKB int64           `json:"total_rss_kb"`
	TotalPSSKB int64           `json:"total_pss_kb"`
	SettleS    float64         `json:"settle_s"`
}

// Footprint starts `edgehive run` with the six built-in plugins as the
// default config has them, lets it idle, and reads RSS and PSS of the host
// and every plugin from /proc/<pid>/smaps_rollup.
func Footprint(opts FootprintOptions, out, logOut io.Writer) error {
	if opts.Settle <= 0 {
		opts.Settle = 3 * time.Second
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	pluginDir := filepath.Join(filepath.Dir(exe), "plugins")
	for _, p := range builtinPlugins {
		if _, err := os.Stat(filepath.Join(pluginDir, p)); err != nil {
			return fmt.Errorf("plugin %s not found in %s (run `make build`): %w", p, pluginDir, err)
		}
	}
	dir, err := os.MkdirTemp("", "edgehive-footprint-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "admin.sock")
	var cfg strings.Builder
	fmt.Fprintf(&cfg, "node_name = \"footprint\"\ndata_dir = %q\nplugin_dir = %q\nadmin {\n  socket = %q\n}\nlog {\n  level = \"warn\"\n}\n",
		filepath.Join(dir, "data"), pluginDir, sock)
	for _, p := range builtinPlugins { // as configs/edgehive.hcl has them
		fmt.Fprintf(&cfg, "plugin %q {\n  gomaxprocs = 1\n}\n", p)
	}
	cfgPath := filepath.Join(dir, "edgehive.hcl")
	if err := os.WriteFile(cfgPath, []byte(cfg.String()), 0o644); err != nil {
		return err
	}
	cmd := exec.Command(exe, "run", "-config", cfgPath)
	cmd.Stdout, cmd.Stderr = logOut, logOut
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	}()
	client := admin.NewClient(sock, "")
	var plugins []admin.PluginStatus
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		plugins, err = client.Plugins(ctx)
		cancel()
		if err == nil && len(plugins) == len(builtinPlugins) && allRunning(plugins) {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("plugins not running after 60s: %v %+v", err, plugins)
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(opts.Settle)
	res := FootprintResult{SettleS: opts.Settle.Seconds()}
	procs := []ProcessMemory{{Name: "host", PID: cmd.Process.Pid}}
	for _, p := range plugins {
		procs = append(procs, ProcessMemory{Name: p.Name, PID: p.PID})
	}
	for _, p := range procs {
		rss, pss, err := smapsRollup(p.PID)
		if err != nil {
			return err
		}
		p.RSSKB, p.PSSKB = rss, pss
		res.TotalRSSKB += rss
		res.TotalPSSKB += pss
		res.Processes = append(res.Processes, p)
	}
	return printJSON(out, res)
}

func allRunning(ps []admin.PluginStatus) bool {
	for _, p := range ps {
		if p.State != "running" {
			return false
		}
	}
	return true
}

// smapsRollup reads Rss and Pss, in kB, of a process.
func smapsRollup(pid int) (rss, pss int64, err error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return 0, 0, fmt.Errorf("memory of pid %d: %w", pid, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 {
			continue
		}
		v, perr := strconv.ParseInt(fields[1], 10, 64)
		if perr != nil {
			continue
		}
		switch fields[0] {
		case "Rss:":
			rss = v
		case "Pss:":
			pss = v
		}
	}
	return rss, pss, sc.Err()
}
