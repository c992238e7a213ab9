// Package pluginkit holds what the built-in modules share: the placeholder
// answer they give until their real message handling lands, and the checks
// their SetConfig runs. Third-party plugins use sdk/ alone.
package pluginkit

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/edgehive/edgehive/sdk"
)

// Reply is the content of the placeholder answer to a sync message.
type Reply struct {
	Module  string `json:"module"`
	Version string `json:"version"`
	Handled string `json:"handled"` // "<operation> <resource>"
}

// Answer responds to msg with a Reply naming the module and what it was asked.
func Answer(ctx context.Context, host sdk.Context, module, version string, msg *sdk.Message) error {
	if host == nil {
		return fmt.Errorf("%s: message %s arrived before Start", module, msg.Header.ID)
	}
	resp, err := sdk.NewResponse(msg, Reply{
		Module:  module,
		Version: version,
		Handled: strings.TrimSpace(msg.Router.Operation + " " + msg.Router.Resource),
	})
	if err != nil {
		return fmt.Errorf("%s: answer %s: %w", module, msg.Header.ID, err)
	}
	if err := host.Response(ctx, resp); err != nil {
		return fmt.Errorf("%s: answer %s: %w", module, msg.Header.ID, err)
	}
	return nil
}

// Checks collects config errors so that all of them are reported at once.
type Checks struct {
	errs []error
}

// Err returns every problem found, or nil, prefixed with "<module> config".
func (c *Checks) Err(module string) error {
	if len(c.errs) == 0 {
		return nil
	}
	return fmt.Errorf("%s config: %w", module, errors.Join(c.errs...))
}

// Fail records a problem with key.
func (c *Checks) Fail(key, format string, args ...any) {
	c.errs = append(c.errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
}

// OneOf requires v to be one of allowed.
func (c *Checks) OneOf(key, v string, allowed ...string) {
	if !slices.Contains(allowed, v) {
		c.Fail(key, "%q is not one of %s", v, strings.Join(allowed, ", "))
	}
}

// NotEmpty requires v to be set.
func (c *Checks) NotEmpty(key, v string) {
	if strings.TrimSpace(v) == "" {
		c.Fail(key, "must not be empty")
	}
}

// Range requires lo <= v <= hi.
func (c *Checks) Range(key string, v, lo, hi int) {
	if v < lo || v > hi {
		c.Fail(key, "%d is outside %d..%d", v, lo, hi)
	}
}

// Positive requires v > 0.
func (c *Checks) Positive(key string, v int) {
	if v <= 0 {
		c.Fail(key, "%d must be greater than 0", v)
	}
}

// PositiveDuration requires d > 0.
func (c *Checks) PositiveDuration(key string, d sdk.Duration) {
	if d.D() <= 0 {
		c.Fail(key, "%s must be greater than 0", time.Duration(d))
	}
}

// HostPort requires "host:port" with a port number in 1..65535.
func (c *Checks) HostPort(key, v string) bool {
	if err := hostPort(v); err != nil {
		c.Fail(key, "%v", err)
		return false
	}
	return true
}

// Loopback requires a listen address "host:port" whose host is a loopback
// address or localhost; port 0 asks for an ephemeral port.
func (c *Checks) Loopback(key, v string) {
	if err := hostPortMin(v, 0); err != nil {
		c.Fail(key, "%v", err)
		return
	}
	host, _, _ := net.SplitHostPort(v)
	if host == "localhost" {
		return
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		c.Fail(key, "%q must listen on a loopback address (127.0.0.1, ::1 or localhost)", v)
	}
}

// URL requires an absolute URL with one of schemes and a host (or, for unix, a path).
func (c *Checks) URL(key, v string, schemes ...string) *url.URL {
	u, err := url.Parse(v)
	if err != nil {
		c.Fail(key, "%q is not a URL: %v", v, err)
		return nil
	}
	if !slices.Contains(schemes, u.Scheme) {
		c.Fail(key, "%q: scheme must be one of %s", v, strings.Join(schemes, ", "))
		return nil
	}
	if u.Scheme == "unix" {
		if !filepath.IsAbs(u.Path) {
			c.Fail(key, "%q: want unix:///absolute/path", v)
		}
		return u
	}
	if u.Host == "" {
		c.Fail(key, "%q has no host", v)
		return nil
	}
	return u
}

// AbsPath requires an absolute path when v is set.
func (c *Checks) AbsPath(key, v string) {
	if v != "" && !filepath.IsAbs(v) {
		c.Fail(key, "%q must be an absolute path", v)
	}
}

func hostPort(v string) error { return hostPortMin(v, 1) }

func hostPortMin(v string, minPort int) error {
	host, port, err := net.SplitHostPort(v)
	if err != nil {
		return fmt.Errorf("%q is not host:port: %v", v, err)
	}
	if host == "" {
		return fmt.Errorf("%q has no host", v)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < minPort || n > 65535 {
		return fmt.Errorf("%q: port must be a number in %d..65535", v, minPort)
	}
	return nil
}

// Decode fills def, a module's defaults, from the config block and checks it
// with validate: what every module's SetConfig starts with.
func Decode[T any](cfg *sdk.Config, def T, validate func(*T) error) (T, error) {
	if err := cfg.Decode(&def); err != nil {
		return def, err
	}
	return def, validate(&def)
}

// DataFile resolves a file key of a module's config: value when set, else
// name inside the plugin's data directory (an error when the host gave none).
func DataFile(cfg *sdk.Config, module, key, value, name string) (string, error) {
	if value != "" {
		return value, nil
	}
	if cfg.DataDir == "" {
		return "", fmt.Errorf("%s config: %s: empty, and the host gave no data_dir to put it in", module, key)
	}
	return filepath.Join(cfg.DataDir, name), nil
}

// DecodeWithDBFile is Decode for a module that keeps one database: its
// db_file key, which dbFile points at, resolved with DataFile to
// defaultName in the plugin's data directory when empty.
func DecodeWithDBFile[T any](cfg *sdk.Config, module string, def T, validate func(*T) error, dbFile func(*T) *string, defaultName string) (T, error) {
	c, err := Decode(cfg, def, validate)
	if err != nil {
		return c, err
	}
	file := dbFile(&c)
	*file, err = DataFile(cfg, module, "db_file", *file, defaultName)
	return c, err
}

// MustDuration parses a default duration constant such as "10s"; it panics
// on a malformed constant, which the plugin's tests catch.
func MustDuration(s string) sdk.Duration {
	d, err := time.ParseDuration(s)
	if err != nil {
		panic(fmt.Sprintf("pluginkit: bad duration constant %q: %v", s, err))
	}
	return sdk.Duration(d)
}
