package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
)

// maxResponseBytes bounds what the client reads from an answer; /metrics of
// a busy host is the largest, far below this.
const maxResponseBytes = 32 << 20

// Client talks to a host's admin API, for the edgehive CLI.
type Client struct {
	base string
	http *http.Client
}

// NewClient returns a client for the API on the unix socket socketPath or
// on the TCP address (host:port); socketPath wins if both are set. Nothing
// is dialled until a method is called.
//
// The client sets no overall timeout: an upgrade can legitimately take a
// while. Bound calls with their context.
func NewClient(socketPath, address string) *Client {
	transport := &http.Transport{
		Proxy:               nil, // never send admin requests through HTTP_PROXY
		MaxIdleConnsPerHost: 2,
	}
	base := "http://" + address
	if socketPath != "" {
		// The host part of the URL is ignored by the dialer; it only has
		// to be a valid name for net/http.
		base = "http://edgehive-admin"
		var d net.Dialer
		transport.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			return d.DialContext(ctx, "unix", socketPath)
		}
	}
	return &Client{base: base, http: &http.Client{Transport: transport}}
}

// Close releases the client's idle connections.
func (c *Client) Close() { c.http.CloseIdleConnections() }

// APIError is an error answer from the server.
type APIError struct {
	StatusCode int
	Message    string // the server's error text
	sentinel   error
}

func (e *APIError) Error() string {
	return fmt.Sprintf("admin API: %s (HTTP %d)", e.Message, e.StatusCode)
}

// Unwrap lets callers test a plugin call's error with errors.Is against
// ErrUnknownPlugin and ErrBusy, as they would on the host side.
func (e *APIError) Unwrap() error { return e.sentinel }

// Healthz returns nil if the host process answers /healthz with 200.
func (c *Client) Healthz(ctx context.Context) error {
	_, err := c.do(ctx, http.MethodGet, "/healthz", nil, false)
	return err
}

// Readyz returns nil if every enabled plugin is running, else an *APIError
// whose Message names the plugins that are not.
func (c *Client) Readyz(ctx context.Context) error {
	_, err := c.do(ctx, http.MethodGet, "/readyz", nil, false)
	return err
}

// Metrics returns the host's metrics in the Prometheus text format.
func (c *Client) Metrics(ctx context.Context) (string, error) {
	b, err := c.do(ctx, http.MethodGet, "/metrics", nil, false)
	return string(b), err
}

// Plugins returns the status of every plugin.
func (c *Client) Plugins(ctx context.Context) ([]PluginStatus, error) {
	b, err := c.do(ctx, http.MethodGet, "/v1/plugins", nil, false)
	if err != nil {
		return nil, err
	}
	var out []PluginStatus
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, fmt.Errorf("admin API: decode plugin list: %w", err)
	}
	return out, nil
}

// Plugin returns the status of one plugin.
func (c *Client) Plugin(ctx context.Context, name string) (PluginStatus, error) {
	return c.status(ctx, http.MethodGet, "/v1/plugins/"+url.PathEscape(name), nil)
}

// Restart restarts a plugin and returns its status afterwards.
func (c *Client) Restart(ctx context.Context, name string) (PluginStatus, error) {
	return c.status(ctx, http.MethodPost, "/v1/plugins/"+url.PathEscape(name)+"/restart", nil)
}

// Upgrade replaces a plugin's binary with the one at path (made absolute
// here, since the host resolves it from its own working directory) and
// returns its status afterwards. sha256 may be empty.
func (c *Client) Upgrade(ctx context.Context, name, path, sha256 string) (PluginStatus, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return PluginStatus{}, fmt.Errorf("admin API: upgrade %s: %w", name, err)
	}
	body, err := json.Marshal(UpgradeRequest{Path: abs, SHA256: sha256})
	if err != nil {
		return PluginStatus{}, fmt.Errorf("admin API: upgrade %s: %w", name, err)
	}
	return c.status(ctx, http.MethodPost, "/v1/plugins/"+url.PathEscape(name)+"/upgrade", body)
}

func (c *Client) status(ctx context.Context, method, path string, body []byte) (PluginStatus, error) {
	b, err := c.do(ctx, method, path, body, true)
	if err != nil {
		return PluginStatus{}, err
	}
	var out PluginStatus
	if err := json.Unmarshal(b, &out); err != nil {
		return PluginStatus{}, fmt.Errorf("admin API: decode plugin status: %w", err)
	}
	return out, nil
}

// do sends a request and returns the body of a 2xx answer, or an *APIError
// carrying the server's message. pluginCall says whether 404 and 409 mean
// ErrUnknownPlugin and ErrBusy (elsewhere a 404 is just a missing route).
func (c *Client) do(ctx context.Context, method, path string, body []byte, pluginCall bool) ([]byte, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return nil, fmt.Errorf("admin API: %s %s: %w", method, path, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("admin API: %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
	if err != nil {
		return nil, fmt.Errorf("admin API: %s %s: read answer: %w", method, path, err)
	}
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return b, nil
	}
	apiErr := &APIError{StatusCode: resp.StatusCode, Message: errorMessage(resp, b)}
	if pluginCall {
		switch resp.StatusCode {
		case http.StatusNotFound:
			apiErr.sentinel = ErrUnknownPlugin
		case http.StatusConflict:
			apiErr.sentinel = ErrBusy
		}
	}
	return nil, apiErr
}

// errorMessage extracts the server's error text: the "error" field of a
// JSON body, else the text body (readyz), else the status line.
func errorMessage(resp *http.Response, b []byte) string {
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		var eb errorBody
		if err := json.Unmarshal(b, &eb); err == nil && eb.Error != "" {
			return eb.Error
		}
	}
	if msg := strings.TrimSpace(string(b)); msg != "" {
		return msg
	}
	return resp.Status
}

var _ error = (*APIError)(nil)
