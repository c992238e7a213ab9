package edgecontroller

import (
	"errors"
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"
)

// Defaults. KubeEdge runs one goroutine per message kind with buffers of
// 1024; workers here serve every kind, so a few are enough.
const (
	DefaultDownstreamWorkers = 4
	DefaultUpstreamWorkers   = 4
	DefaultUpstreamQueue     = 1024
	DefaultSendTimeout       = "10s"
	DefaultAPITimeout        = "10s"
	DefaultMaxRetries        = 8
	DefaultEventQPS          = 10
	DefaultEventBurst        = 50
	DefaultEdgeNodeLabel     = "node-role.kubernetes.io/edge"
)

// Config is the edgecontroller block of cloudhive's HCL configuration. Zero
// values take the defaults, so Config{} is valid.
type Config struct {
	// DownstreamWorkers send API changes to nodes.
	DownstreamWorkers int `hcl:"downstream_workers,optional"`
	// UpstreamWorkers apply what nodes send to the API. Messages from one
	// node always go to the same worker, so they are applied in order.
	UpstreamWorkers int `hcl:"upstream_workers,optional"`
	// UpstreamQueue bounds the messages waiting for upstream workers, in
	// total. When a worker's share is full, new messages from its nodes are
	// dropped (and logged); the edge retries on its own timeout.
	UpstreamQueue int `hcl:"upstream_queue,optional"`
	// SendTimeout bounds one Send to a node whose queue is full; the message
	// is then retried with back-off.
	SendTimeout string `hcl:"send_timeout,optional"`
	// APITimeout bounds one request to the Kubernetes API.
	APITimeout string `hcl:"api_timeout,optional"`
	// MaxRetries is how often a failed downstream send is retried before
	// it is dropped (the node's next resync brings it up to date).
	MaxRetries int `hcl:"max_retries,optional"`
	// SyncServices sends services and endpoints to every edge node (for the
	// edge's MetaServer). Default true.
	SyncServices *bool `hcl:"sync_services,optional"`
	// EventQPS and EventBurst limit the Events all nodes may create.
	EventQPS   float64 `hcl:"event_qps,optional"`
	EventBurst int     `hcl:"event_burst,optional"`
	// EdgeNodeLabel selects the edge nodes (the label must exist; its value
	// does not matter). Nodes registering through cloudhive get it.
	EdgeNodeLabel string `hcl:"edge_node_label,optional"`
}

// DefaultConfig returns the defaults; decoding HCL into it keeps them for
// attributes that are absent.
func DefaultConfig() Config {
	c := Config{}
	c.setDefaults()
	return c
}

func (c *Config) setDefaults() {
	if c.DownstreamWorkers == 0 {
		c.DownstreamWorkers = DefaultDownstreamWorkers
	}
	if c.UpstreamWorkers == 0 {
		c.UpstreamWorkers = DefaultUpstreamWorkers
	}
	if c.UpstreamQueue == 0 {
		c.UpstreamQueue = DefaultUpstreamQueue
	}
	if c.SendTimeout == "" {
		c.SendTimeout = DefaultSendTimeout
	}
	if c.APITimeout == "" {
		c.APITimeout = DefaultAPITimeout
	}
	if c.MaxRetries == 0 {
		c.MaxRetries = DefaultMaxRetries
	}
	if c.SyncServices == nil {
		t := true
		c.SyncServices = &t
	}
	if c.EventQPS == 0 {
		c.EventQPS = DefaultEventQPS
	}
	if c.EventBurst == 0 {
		c.EventBurst = DefaultEventBurst
	}
	if c.EdgeNodeLabel == "" {
		c.EdgeNodeLabel = DefaultEdgeNodeLabel
	}
}

// Validate reports every invalid field at once. Zero values are valid (they
// mean the default).
func (c Config) Validate() error {
	var errs []error
	bad := func(field string, format string, args ...any) {
		errs = append(errs, fmt.Errorf("edgecontroller: %s: %s", field, fmt.Sprintf(format, args...)))
	}
	if c.DownstreamWorkers < 0 || c.DownstreamWorkers > 256 {
		bad("downstream_workers", "%d is not in 1..256", c.DownstreamWorkers)
	}
	if c.UpstreamWorkers < 0 || c.UpstreamWorkers > 256 {
		bad("upstream_workers", "%d is not in 1..256", c.UpstreamWorkers)
	}
	if c.UpstreamQueue < 0 {
		bad("upstream_queue", "%d is negative", c.UpstreamQueue)
	}
	if c.UpstreamQueue > 0 && c.UpstreamWorkers > 0 && c.UpstreamQueue < c.UpstreamWorkers {
		bad("upstream_queue", "%d is smaller than upstream_workers (%d)", c.UpstreamQueue, c.UpstreamWorkers)
	}
	for _, d := range []struct{ field, v string }{{"send_timeout", c.SendTimeout}, {"api_timeout", c.APITimeout}} {
		if d.v == "" {
			continue
		}
		if v, err := time.ParseDuration(d.v); err != nil {
			bad(d.field, "%q is not a duration like \"10s\"", d.v)
		} else if v <= 0 {
			bad(d.field, "%q is not positive", d.v)
		}
	}
	if c.MaxRetries < 0 {
		bad("max_retries", "%d is negative", c.MaxRetries)
	}
	if c.EventQPS < 0 {
		bad("event_qps", "%v is negative", c.EventQPS)
	}
	if c.EventBurst < 0 {
		bad("event_burst", "%d is negative", c.EventBurst)
	}
	if c.EdgeNodeLabel != "" {
		if msgs := validation.IsQualifiedName(c.EdgeNodeLabel); len(msgs) > 0 {
			bad("edge_node_label", "%q is not a label key: %v", c.EdgeNodeLabel, msgs)
		}
	}
	return errors.Join(errs...)
}

// settings is a validated Config with durations parsed.
type settings struct {
	Config
	sendTimeout time.Duration
	apiTimeout  time.Duration
}

func resolve(cfg Config) (settings, error) {
	if err := cfg.Validate(); err != nil {
		return settings{}, err
	}
	cfg.setDefaults()
	s := settings{Config: cfg}
	s.sendTimeout, _ = time.ParseDuration(cfg.SendTimeout) // validated
	s.apiTimeout, _ = time.ParseDuration(cfg.APITimeout)
	return s, nil
}
