// Package config loads the edgehive host configuration from HCL.
//
// The host refuses to start anything until the whole file is valid, so every
// problem is reported as an hcl.Diagnostic that points at file:line:column,
// and all problems are reported together rather than one per run. The
// plugin-specific "config" block of each plugin is kept as a raw hcl.Body and
// decoded later, with DecodePluginConfig, against the schema the plugin
// declares at start-up.
package config

import (
	"os"
	"path/filepath"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
)

// Default values filled in for settings the config file leaves out.
const (
	DefaultDataDir         = "/var/lib/edgehive"
	DefaultAdminSocket     = "/run/edgehive/admin.sock"
	DefaultLogLevel        = "info"
	DefaultLogFormat       = "text"
	DefaultQueueCapacity   = 8192
	DefaultSendTimeout     = 5 * time.Second
	DefaultMaxMessageBytes = 4 << 20 // 4 MiB
	DefaultRestartAttempts = 10
	DefaultRestartInterval = 5 * time.Minute
	DefaultRestartDelay    = 200 * time.Millisecond
	DefaultRestartMaxDelay = 30 * time.Second
	DefaultHealthInterval  = 5 * time.Second
	DefaultHealthTimeout   = 2 * time.Second
	DefaultHealthFailures  = 3
)

// Config is the validated host configuration, in plain Go types.
type Config struct {
	// NodeName identifies this node to the cloud side; defaults to the
	// lower-cased hostname.
	NodeName string
	// DataDir holds persistent state (databases, certificates).
	DataDir string
	// PluginDir is where plugin binaries live when a plugin has no path.
	PluginDir string
	Log       LogConfig
	Admin     AdminConfig
	Router    RouterConfig
	// Plugins in the order they appear in the file.
	Plugins []*PluginConfig
}

// Plugin returns the plugin called name, or nil.
func (c *Config) Plugin(name string) *PluginConfig {
	for _, p := range c.Plugins {
		if p.Name == name {
			return p
		}
	}
	return nil
}

// LogConfig selects the host log level (trace|debug|info|warn|error) and
// format (text|json).
type LogConfig struct {
	Level  string
	Format string
}

// AdminConfig says where the admin API listens: exactly one of Socket (a
// unix socket path) or Address (a loopback host:port) is set.
type AdminConfig struct {
	Socket  string
	Address string
}

// RouterConfig bounds the host's message router.
type RouterConfig struct {
	// QueueCapacity is the per-plugin queue bound, in messages.
	QueueCapacity int
	// SendTimeout is how long a sender waits on a full queue before it
	// gets an error.
	SendTimeout time.Duration
	// MaxMessageBytes is the largest message the router accepts.
	MaxMessageBytes int
}

// PluginConfig is one plugin "NAME" block.
type PluginConfig struct {
	Name string
	// Path is the plugin binary, resolved against the base directory.
	Path string
	// SHA256 is the expected lower-case hex digest of the binary, or "".
	SHA256 string
	Args   []string
	Env    map[string]string
	// Enabled is false when the block says enabled = false: the plugin is
	// kept in the config (and in status) but not started.
	Enabled bool
	// GoMemLimit is passed to the plugin as GOMEMLIMIT, or "".
	GoMemLimit string
	// GoGC is passed to the plugin as GOGC when non-nil (negative: off).
	GoGC *int
	// GoMaxProcs is passed as GOMAXPROCS when > 0: each P costs memory, and
	// most plugins wait on I/O.
	GoMaxProcs int
	Restart    RestartPolicy
	Health     HealthPolicy
	// ConfigBody is the raw plugin-specific config block, nil if absent;
	// decode it with DecodePluginConfig.
	ConfigBody hcl.Body
	// DeclRange is the block header (plugin "NAME"), for diagnostics.
	DeclRange hcl.Range
	// PathRange is the range of the path value, nil when path was defaulted.
	PathRange *hcl.Range
}

// Environ returns the extra environment entries ("K=V") the plugin process
// gets: Env plus GOMEMLIMIT, GOGC and GOMAXPROCS.
func (p *PluginConfig) Environ() []string {
	out := make([]string, 0, len(p.Env)+2)
	for _, k := range sortedKeys(p.Env) {
		out = append(out, k+"="+p.Env[k])
	}
	if p.GoMemLimit != "" {
		out = append(out, "GOMEMLIMIT="+p.GoMemLimit)
	}
	if p.GoGC != nil {
		out = append(out, "GOGC="+itoa(*p.GoGC))
	}
	if p.GoMaxProcs > 0 {
		out = append(out, "GOMAXPROCS="+itoa(p.GoMaxProcs))
	}
	return out
}

// RestartPolicy: after a crash the plugin is restarted after Delay, doubling
// (with jitter) up to MaxDelay; more than Attempts restarts within Interval
// marks it failed. Attempts = 0 means never restart.
type RestartPolicy struct {
	Attempts int
	Interval time.Duration
	Delay    time.Duration
	MaxDelay time.Duration
}

// HealthPolicy: the host probes the plugin every Interval, each probe
// bounded by Timeout; Failures consecutive failures restart it.
type HealthPolicy struct {
	Interval time.Duration
	Timeout  time.Duration
	Failures int
}

// Options tune how paths and defaults are resolved. The zero value is
// usable: see each field.
type Options struct {
	// BaseDir resolves relative paths (plugin_dir, plugin paths, data_dir,
	// admin socket). LoadFile defaults it to the config file's directory;
	// Parse leaves relative paths relative to the working directory when
	// it is empty. For the embedded default config the caller passes e.g.
	// the parent of the executable's directory.
	BaseDir string
	// DefaultPluginDir is used when plugin_dir is not set. Empty means
	// "<directory of the running executable>/plugins".
	DefaultPluginDir string
	// Hostname supplies the default node_name; nil means os.Hostname.
	Hostname func() (string, error)
}

// Option changes Options; pass any number to Parse or LoadFile.
type Option func(*Options)

// WithOptions replaces all options at once.
func WithOptions(o Options) Option { return func(dst *Options) { *dst = o } }

// WithBaseDir sets Options.BaseDir.
func WithBaseDir(dir string) Option { return func(o *Options) { o.BaseDir = dir } }

// WithDefaultPluginDir sets Options.DefaultPluginDir.
func WithDefaultPluginDir(dir string) Option {
	return func(o *Options) { o.DefaultPluginDir = dir }
}

// WithHostname sets Options.Hostname.
func WithHostname(f func() (string, error)) Option { return func(o *Options) { o.Hostname = f } }

// Parse parses and validates a config file's contents. filename is used in
// diagnostics only. On any error diagnostic the returned Config is nil.
func Parse(filename string, src []byte, opts ...Option) (*Config, hcl.Diagnostics) {
	var o Options
	for _, opt := range opts {
		opt(&o)
	}
	return parse(filename, src, o)
}

// LoadFile reads and parses the config file at path. Unless an option sets
// BaseDir, relative paths in the file are relative to the file's directory.
func LoadFile(path string, opts ...Option) (*Config, hcl.Diagnostics) {
	src, err := os.ReadFile(path)
	if err != nil {
		return nil, hcl.Diagnostics{{
			Severity: hcl.DiagError,
			Summary:  "Failed to read config file",
			Detail:   err.Error(),
			Subject:  &hcl.Range{Filename: path, Start: hcl.InitialPos, End: hcl.InitialPos},
		}}
	}
	var o Options
	if abs, err := filepath.Abs(path); err == nil {
		o.BaseDir = filepath.Dir(abs)
	} else {
		o.BaseDir = filepath.Dir(path)
	}
	for _, opt := range opts {
		opt(&o)
	}
	return parse(path, src, o)
}

func parse(filename string, src []byte, o Options) (*Config, hcl.Diagnostics) {
	f, diags := hclsyntax.ParseConfig(src, filename, hcl.InitialPos)
	if diags.HasErrors() {
		// The tree after a syntax error is unreliable; more diagnostics
		// would mostly be noise.
		return nil, diags
	}
	d := &decoder{opts: o}
	cfg := d.decodeRoot(f.Body)
	diags = append(diags, d.diags...)
	sortDiags(diags)
	if diags.HasErrors() {
		return nil, diags
	}
	return cfg, diags
}
