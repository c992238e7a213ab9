// Package admin is the host's admin API: health and readiness probes,
// Prometheus metrics, and the plugin status, restart and upgrade endpoints
// that `edgehive status` and `edgehive plugin ...` talk to.
//
// The API has no authentication, so it is only ever served where the
// operating system already restricts who can reach it: a unix socket with
// mode 0600, or a loopback TCP address (see Listen).
//
// The host implements Backend; the server only translates HTTP to Backend
// calls and back, so it can be tested with a fake.
package admin

import (
	"context"
	"errors"
	"time"
)

// Backend is what the admin API needs from the host.
type Backend interface {
	Plugins() []PluginStatus
	Ready() bool // every enabled plugin is running
	Restart(ctx context.Context, name string) error
	Upgrade(ctx context.Context, name, path, sha256 string) error
}

// PluginStatus is one plugin as the host sees it, the element of the
// /v1/plugins answer.
type PluginStatus struct {
	Name          string    `json:"name"`
	Group         string    `json:"group"`
	State         string    `json:"state"` // starting, running, restarting, upgrading, failed, stopped, disabled
	Version       string    `json:"version"`
	APIVersion    string    `json:"api_version"`
	Path          string    `json:"path"`
	PID           int       `json:"pid"`
	Restarts      int       `json:"restarts"`
	StartedAt     time.Time `json:"started_at"`
	UptimeSeconds float64   `json:"uptime_seconds"`
	QueueDepth    int       `json:"queue_depth"`
	InFlight      int       `json:"in_flight"`
	LastError     string    `json:"last_error,omitempty"`
}

// Errors a Backend returns so the server can pick the HTTP status; the
// client maps the status back, so callers on both sides can use errors.Is.
var (
	// ErrUnknownPlugin means no plugin has that name (404).
	ErrUnknownPlugin = errors.New("unknown plugin")
	// ErrBusy means a restart or upgrade of the plugin is already in
	// progress (409): the caller should wait and retry, not pile up.
	ErrBusy = errors.New("a restart or upgrade is already in progress")
)

// UpgradeRequest is the body of POST /v1/plugins/{name}/upgrade.
type UpgradeRequest struct {
	// Path is the new plugin binary, absolute because the host's working
	// directory is not the caller's.
	Path string `json:"path"`
	// SHA256 is the expected hex digest of the binary; optional.
	SHA256 string `json:"sha256,omitempty"`
}

// errorBody is the JSON body of every error answer.
type errorBody struct {
	Error string `json:"error"`
}
