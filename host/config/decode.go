package config

import (
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"
)

// decoder accumulates diagnostics while walking the file so that all of
// them are reported together.
type decoder struct {
	opts      Options
	diags     hcl.Diagnostics
	pluginDir string
}

func (d *decoder) errorf(rng *hcl.Range, summary, format string, args ...any) {
	d.diags = append(d.diags, &hcl.Diagnostic{
		Severity: hcl.DiagError,
		Summary:  summary,
		Detail:   fmt.Sprintf(format, args...),
		Subject:  rng,
	})
}

func (d *decoder) add(diags hcl.Diagnostics) { d.diags = append(d.diags, diags...) }

func rootSchema() *hcl.BodySchema {
	return &hcl.BodySchema{
		Attributes: []hcl.AttributeSchema{{Name: "node_name"}, {Name: "data_dir"}, {Name: "plugin_dir"}},
		Blocks: []hcl.BlockHeaderSchema{
			{Type: "log"}, {Type: "admin"}, {Type: "router"},
			{Type: "plugin", LabelNames: []string{"name"}},
		},
	}
}

func pluginSchema() *hcl.BodySchema {
	return &hcl.BodySchema{
		Attributes: []hcl.AttributeSchema{
			{Name: "path"}, {Name: "sha256"}, {Name: "args"}, {Name: "env"},
			{Name: "enabled"}, {Name: "gomemlimit"}, {Name: "gogc"}, {Name: "gomaxprocs"},
		},
		Blocks: []hcl.BlockHeaderSchema{{Type: "restart"}, {Type: "health"}, {Type: "config"}},
	}
}

func attrsSchema(names ...string) *hcl.BodySchema {
	s := &hcl.BodySchema{}
	for _, n := range names {
		s.Attributes = append(s.Attributes, hcl.AttributeSchema{Name: n})
	}
	return s
}

func (d *decoder) decodeRoot(body hcl.Body) *Config {
	content, diags := body.Content(rootSchema())
	d.add(diags)
	fileStart := body.MissingItemRange()

	cfg := &Config{
		DataDir: DefaultDataDir,
		Log:     LogConfig{Level: DefaultLogLevel, Format: DefaultLogFormat},
		Router: RouterConfig{
			QueueCapacity:   DefaultQueueCapacity,
			SendTimeout:     DefaultSendTimeout,
			MaxMessageBytes: DefaultMaxMessageBytes,
		},
	}

	if a := d.str(content.Attributes, "node_name", &cfg.NodeName); a != nil {
		if !validNodeName(cfg.NodeName) {
			d.errorf(a.Expr.Range().Ptr(), "Invalid node name",
				"node_name %q must be a lower-case RFC 1123 name (a-z, 0-9, '-' and '.', at most 253 characters).", cfg.NodeName)
		}
	} else {
		hostname := d.opts.Hostname
		if hostname == nil {
			hostname = os.Hostname
		}
		h, err := hostname()
		h = strings.ToLower(strings.TrimSpace(h))
		switch {
		case err != nil:
			d.errorf(&fileStart, "Cannot determine node name", "node_name is not set and the hostname is unavailable (%v); set node_name.", err)
		case !validNodeName(h):
			d.errorf(&fileStart, "Cannot determine node name", "node_name is not set and the hostname %q is not a valid node name; set node_name.", h)
		default:
			cfg.NodeName = h
		}
	}

	if a := d.str(content.Attributes, "data_dir", &cfg.DataDir); a != nil {
		d.nonEmpty(a, cfg.DataDir)
	}
	cfg.DataDir = d.resolve(cfg.DataDir)
	if a := d.str(content.Attributes, "plugin_dir", &cfg.PluginDir); a != nil {
		d.nonEmpty(a, cfg.PluginDir)
		cfg.PluginDir = d.resolve(cfg.PluginDir)
	}
	d.pluginDir = cfg.PluginDir

	if b := d.single(content.Blocks, "log"); b != nil {
		d.decodeLog(b, &cfg.Log)
	}
	d.decodeAdmin(d.single(content.Blocks, "admin"), &cfg.Admin)
	if b := d.single(content.Blocks, "router"); b != nil {
		d.decodeRouter(b, &cfg.Router)
	}

	seen := map[string]hcl.Range{}
	needDir := false
	for _, b := range content.Blocks.OfType("plugin") {
		name := b.Labels[0]
		if !validLabel(name) {
			d.errorf(b.LabelRanges[0].Ptr(), "Invalid plugin name",
				"Plugin name %q must start with a lower-case letter and contain only a-z, 0-9, '_' and '-' (at most 63 characters).", name)
		}
		p := d.decodePlugin(b)
		if prev, dup := seen[name]; dup {
			d.errorf(b.DefRange.Ptr(), "Duplicate plugin block",
				"A plugin named %q was already declared at %s; plugin names must be unique.", name, posString(prev))
			continue
		}
		seen[name] = b.DefRange
		if p.PathRange == nil {
			needDir = true
		}
		cfg.Plugins = append(cfg.Plugins, p)
	}

	if cfg.PluginDir == "" {
		dir, err := d.defaultPluginDir()
		if err != nil && needDir {
			d.errorf(&fileStart, "Cannot determine plugin directory", "plugin_dir is not set and %v; set plugin_dir.", err)
		}
		cfg.PluginDir = dir
	}
	for _, p := range cfg.Plugins {
		if p.PathRange == nil {
			p.Path = filepath.Join(cfg.PluginDir, p.Name)
		}
	}
	return cfg
}

func (d *decoder) defaultPluginDir() (string, error) {
	if d.opts.DefaultPluginDir != "" {
		return d.resolve(d.opts.DefaultPluginDir), nil
	}
	exe, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("the executable's directory is unknown: %w", err)
	}
	return filepath.Join(filepath.Dir(exe), "plugins"), nil
}

func (d *decoder) resolve(path string) string {
	if path == "" || filepath.IsAbs(path) || d.opts.BaseDir == "" {
		return path
	}
	return filepath.Join(d.opts.BaseDir, path)
}

// single returns the only block of type typ, reporting any repeats.
func (d *decoder) single(blocks hcl.Blocks, typ string) *hcl.Block {
	bs := blocks.OfType(typ)
	if len(bs) == 0 {
		return nil
	}
	for _, b := range bs[1:] {
		d.errorf(b.DefRange.Ptr(), fmt.Sprintf("Duplicate %s block", typ),
			"Only one %s block is allowed here; the first is at %s.", typ, posString(bs[0].DefRange))
	}
	return bs[0]
}

func (d *decoder) decodeLog(b *hcl.Block, out *LogConfig) {
	content, diags := b.Body.Content(attrsSchema("level", "format"))
	d.add(diags)
	if a := d.str(content.Attributes, "level", &out.Level); a != nil {
		d.oneOf(a, out.Level, "trace", "debug", "info", "warn", "error")
	}
	if a := d.str(content.Attributes, "format", &out.Format); a != nil {
		d.oneOf(a, out.Format, "text", "json")
	}
}

func (d *decoder) decodeAdmin(b *hcl.Block, out *AdminConfig) {
	if b == nil {
		out.Socket = DefaultAdminSocket
		return
	}
	content, diags := b.Body.Content(attrsSchema("socket", "address"))
	d.add(diags)
	sock := d.str(content.Attributes, "socket", &out.Socket)
	addr := d.str(content.Attributes, "address", &out.Address)
	switch {
	case sock != nil && addr != nil:
		d.errorf(addr.Range.Ptr(), "Conflicting admin settings",
			"Set either socket or address in the admin block, not both.")
		return
	case sock == nil && addr == nil:
		out.Socket = DefaultAdminSocket
	}
	if sock != nil && d.nonEmpty(sock, out.Socket) {
		out.Socket = d.resolve(out.Socket)
		// sockaddr_un.sun_path is 108 bytes including the terminating NUL.
		if len(out.Socket) > 107 {
			d.errorf(sock.Expr.Range().Ptr(), "Admin socket path too long",
				"The unix socket path %q is %d bytes; the limit is 107.", out.Socket, len(out.Socket))
		}
	}
	if addr != nil {
		if err := checkLoopback(out.Address); err != nil {
			d.errorf(addr.Expr.Range().Ptr(), "Invalid admin address", "%v.", err)
		}
	}
}

// checkLoopback accepts host:port where host is localhost or a loopback IP:
// the admin API has no authentication, so it must not be reachable from
// the network.
func checkLoopback(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("address %q is not host:port: %w", addr, err)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("address %q: port %q is not a number from 0 to 65535", addr, port)
	}
	if host == "localhost" {
		return nil
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("address %q is not a loopback address; the admin API listens on localhost, 127.0.0.0/8 or [::1] only (or use socket)", addr)
	}
	return nil
}

func (d *decoder) decodeRouter(b *hcl.Block, out *RouterConfig) {
	content, diags := b.Body.Content(attrsSchema("queue_capacity", "send_timeout", "max_message_bytes"))
	d.add(diags)
	d.intMin(content.Attributes, "queue_capacity", &out.QueueCapacity, 1)
	d.duration(content.Attributes, "send_timeout", &out.SendTimeout)
	d.intMin(content.Attributes, "max_message_bytes", &out.MaxMessageBytes, 1)
}

func (d *decoder) decodePlugin(b *hcl.Block) *PluginConfig {
	p := &PluginConfig{
		Name:      b.Labels[0],
		Enabled:   true,
		DeclRange: b.DefRange,
		Restart: RestartPolicy{
			Attempts: DefaultRestartAttempts,
			Interval: DefaultRestartInterval,
			Delay:    DefaultRestartDelay,
			MaxDelay: DefaultRestartMaxDelay,
		},
		Health: HealthPolicy{
			Interval: DefaultHealthInterval,
			Timeout:  DefaultHealthTimeout,
			Failures: DefaultHealthFailures,
		},
	}
	content, diags := b.Body.Content(pluginSchema())
	d.add(diags)
	attrs := content.Attributes

	if a := d.str(attrs, "path", &p.Path); a != nil && d.nonEmpty(a, p.Path) {
		p.Path = d.resolve(p.Path)
		p.PathRange = a.Expr.Range().Ptr()
	}
	if a := d.str(attrs, "sha256", &p.SHA256); a != nil {
		p.SHA256 = strings.ToLower(p.SHA256)
		if !isHex(p.SHA256, 64) {
			d.errorf(a.Expr.Range().Ptr(), "Invalid sha256",
				"sha256 must be 64 hexadecimal characters (the output of sha256sum); got %d characters %q.", len(p.SHA256), p.SHA256)
		}
	}
	if a := attrs["args"]; a != nil {
		if v := d.value(a, cty.List(cty.String)); !v.IsNull() {
			p.Args = []string{}
			for _, e := range v.AsValueSlice() {
				if e.IsNull() {
					d.errorf(a.Expr.Range().Ptr(), "Invalid args", "args must not contain null.")
					continue
				}
				p.Args = append(p.Args, e.AsString())
			}
		}
	}
	if a := attrs["env"]; a != nil {
		if v := d.value(a, cty.Map(cty.String)); !v.IsNull() {
			p.Env = map[string]string{}
			m := v.AsValueMap()
			for _, k := range sortedKeys(m) {
				e := m[k]
				switch {
				case k == "" || strings.ContainsAny(k, "=\x00"):
					d.errorf(a.Expr.Range().Ptr(), "Invalid environment variable name", "Name %q must be non-empty and contain no '=' or NUL.", k)
				case e.IsNull() || strings.ContainsRune(e.AsString(), 0):
					d.errorf(a.Expr.Range().Ptr(), "Invalid environment variable value", "The value of %q must be a string without NUL.", k)
				default:
					p.Env[k] = e.AsString()
				}
			}
		}
	}
	if a := attrs["enabled"]; a != nil {
		if v := d.value(a, cty.Bool); !v.IsNull() {
			p.Enabled = v.True()
		}
	}
	if a := d.str(attrs, "gomemlimit", &p.GoMemLimit); a != nil {
		if !validMemLimit(p.GoMemLimit) {
			d.errorf(a.Expr.Range().Ptr(), "Invalid gomemlimit",
				"gomemlimit %q must be a whole number of bytes with an optional B, KiB, MiB, GiB or TiB suffix, e.g. \"20MiB\".", p.GoMemLimit)
		}
		if _, set := p.Env["GOMEMLIMIT"]; set {
			d.errorf(a.Range.Ptr(), "Conflicting GOMEMLIMIT", "Set gomemlimit or env GOMEMLIMIT, not both.")
		}
	}
	var gogc int
	if a := d.int(attrs, "gogc", &gogc); a != nil {
		p.GoGC = &gogc
		if _, set := p.Env["GOGC"]; set {
			d.errorf(a.Range.Ptr(), "Conflicting GOGC", "Set gogc or env GOGC, not both.")
		}
	}
	var procs int
	if a := d.int(attrs, "gomaxprocs", &procs); a != nil {
		p.GoMaxProcs = procs
		if procs < 1 {
			d.errorf(a.Expr.Range().Ptr(), "Invalid gomaxprocs", "gomaxprocs must be at least 1.")
		}
		if _, set := p.Env["GOMAXPROCS"]; set {
			d.errorf(a.Range.Ptr(), "Conflicting GOMAXPROCS", "Set gomaxprocs or env GOMAXPROCS, not both.")
		}
	}

	if rb := d.single(content.Blocks, "restart"); rb != nil {
		c, diags := rb.Body.Content(attrsSchema("attempts", "interval", "delay", "max_delay"))
		d.add(diags)
		d.intMin(c.Attributes, "attempts", &p.Restart.Attempts, 0)
		d.duration(c.Attributes, "interval", &p.Restart.Interval)
		d.duration(c.Attributes, "delay", &p.Restart.Delay)
		if a := d.duration(c.Attributes, "max_delay", &p.Restart.MaxDelay); p.Restart.MaxDelay < p.Restart.Delay {
			rng := rb.DefRange
			if a != nil {
				rng = a.Expr.Range()
			}
			d.errorf(&rng, "Invalid restart policy", "max_delay (%s) must not be less than delay (%s).", p.Restart.MaxDelay, p.Restart.Delay)
		}
	}
	if hb := d.single(content.Blocks, "health"); hb != nil {
		c, diags := hb.Body.Content(attrsSchema("interval", "timeout", "failures"))
		d.add(diags)
		d.duration(c.Attributes, "interval", &p.Health.Interval)
		if a := d.duration(c.Attributes, "timeout", &p.Health.Timeout); p.Health.Timeout > p.Health.Interval {
			rng := hb.DefRange
			if a != nil {
				rng = a.Expr.Range()
			}
			d.errorf(&rng, "Invalid health policy", "timeout (%s) must not exceed interval (%s).", p.Health.Timeout, p.Health.Interval)
		}
		d.intMin(c.Attributes, "failures", &p.Health.Failures, 1)
	}
	if cb := d.single(content.Blocks, "config"); cb != nil {
		p.ConfigBody = cb.Body
	}
	return p
}

// value evaluates a (constant) attribute and converts it to ty. It returns a
// null value when the attribute is null or on error (already reported).
func (d *decoder) value(a *hcl.Attribute, ty cty.Type) cty.Value {
	v, diags := a.Expr.Value(nil)
	d.add(diags)
	if diags.HasErrors() || !v.IsWhollyKnown() {
		return cty.NullVal(ty)
	}
	cv, err := convert.Convert(v, ty)
	if err != nil {
		d.diags = append(d.diags, &hcl.Diagnostic{
			Severity:   hcl.DiagError,
			Summary:    "Incorrect attribute value type",
			Detail:     fmt.Sprintf("Inappropriate value for attribute %q: %s.", a.Name, err.Error()),
			Subject:    a.Expr.Range().Ptr(),
			Context:    hcl.RangeBetween(a.NameRange, a.Expr.Range()).Ptr(),
			Expression: a.Expr,
		})
		return cty.NullVal(ty)
	}
	return cv
}

// str decodes attribute name into dst if present and valid; it returns the
// attribute in that case (for ranges), nil otherwise.
func (d *decoder) str(attrs hcl.Attributes, name string, dst *string) *hcl.Attribute {
	a := attrs[name]
	if a == nil {
		return nil
	}
	v := d.value(a, cty.String)
	if v.IsNull() {
		return nil
	}
	*dst = v.AsString()
	return a
}

func (d *decoder) int(attrs hcl.Attributes, name string, dst *int) *hcl.Attribute {
	a := attrs[name]
	if a == nil {
		return nil
	}
	v := d.value(a, cty.Number)
	if v.IsNull() {
		return nil
	}
	bf := v.AsBigFloat()
	i, acc := bf.Int64()
	if !bf.IsInt() || acc != big.Exact || int64(int(i)) != i {
		d.errorf(a.Expr.Range().Ptr(), "Incorrect attribute value type",
			"Inappropriate value for attribute %q: a whole number is required.", name)
		return nil
	}
	*dst = int(i)
	return a
}

func (d *decoder) intMin(attrs hcl.Attributes, name string, dst *int, min int) *hcl.Attribute {
	var n int
	a := d.int(attrs, name, &n)
	if a == nil {
		return nil
	}
	if n < min {
		d.errorf(a.Expr.Range().Ptr(), "Value out of range", "%s must be at least %d; got %d.", name, min, n)
		return nil
	}
	*dst = n
	return a
}

// duration decodes a positive time.ParseDuration string.
func (d *decoder) duration(attrs hcl.Attributes, name string, dst *time.Duration) *hcl.Attribute {
	var s string
	a := d.str(attrs, name, &s)
	if a == nil {
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		d.errorf(a.Expr.Range().Ptr(), "Invalid duration",
			"Inappropriate value for attribute %q: %v; use a number with a unit, such as \"200ms\", \"5s\" or \"5m\".", name, err)
		return nil
	}
	if v <= 0 {
		d.errorf(a.Expr.Range().Ptr(), "Invalid duration", "%s must be positive; got %q.", name, s)
		return nil
	}
	*dst = v
	return a
}

func (d *decoder) nonEmpty(a *hcl.Attribute, s string) bool {
	if s == "" {
		d.errorf(a.Expr.Range().Ptr(), "Empty value", "%s must not be empty.", a.Name)
		return false
	}
	return true
}

func (d *decoder) oneOf(a *hcl.Attribute, s string, allowed ...string) {
	for _, x := range allowed {
		if s == x {
			return
		}
	}
	d.errorf(a.Expr.Range().Ptr(), "Invalid value", "%s must be one of %s; got %q.", a.Name, strings.Join(allowed, ", "), s)
}

// validLabel reports whether s matches ^[a-z][a-z0-9_-]{0,62}$: plugin
// names end up in file names, metric labels and env values.
func validLabel(s string) bool {
	if len(s) == 0 || len(s) > 63 || s[0] < 'a' || s[0] > 'z' {
		return false
	}
	for i := 1; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// validNodeName checks for a Kubernetes node name (RFC 1123 subdomain).
func validNodeName(s string) bool {
	if len(s) == 0 || len(s) > 253 {
		return false
	}
	for _, label := range strings.Split(s, ".") {
		if len(label) == 0 || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

func isHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// validMemLimit accepts the GOMEMLIMIT forms: digits with an optional
// B/KiB/MiB/GiB/TiB suffix.
func validMemLimit(s string) bool {
	for _, suf := range []string{"KiB", "MiB", "GiB", "TiB", "B"} {
		if strings.HasSuffix(s, suf) {
			s = strings.TrimSuffix(s, suf)
			break
		}
	}
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	_, err := strconv.ParseInt(s, 10, 64)
	return err == nil
}

func posString(r hcl.Range) string {
	return fmt.Sprintf("%s:%d:%d", r.Filename, r.Start.Line, r.Start.Column)
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func itoa(n int) string { return strconv.Itoa(n) }
