package sdk

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/hashicorp/go-hclog"
)

// APIVersion1 is the first plugin API version: the Channel protocol of
// sdk/proto/plugin/v1. It is negotiated apart from go-plugin's protocol version.
const APIVersion1 = "v1"

// PluginInfo identifies a plugin to the host.
type PluginInfo struct {
	Name        string   // the module name messages are addressed to
	Group       string   // the module group for SendToGroup
	Version     string   // the plugin's own version, shown in status
	APIVersions []string // plugin API versions it speaks, e.g. []string{sdk.APIVersion1}
	Description string
}

// Config is what the host hands a plugin before it starts.
type Config struct {
	APIVersion string
	NodeName   string
	DataDir    string // the plugin's own directory; created by the host
	PluginName string // the name this instance is registered under
	InstanceID string
	Raw        json.RawMessage // the config block, validated against the schema, defaults filled
}

// Decode unmarshals the config block into v; fields v does not have are errors.
func (c *Config) Decode(v any) error {
	raw := c.Raw
	if len(raw) == 0 {
		raw = []byte("{}")
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("plugin %s: decode config: %w", c.PluginName, err)
	}
	return nil
}

// Module is what a plugin implements. The SDK calls Info and ConfigSchema at
// any time, SetConfig once before Start, Start once the host's channel is open,
// and Handle for every delivered message, one at a time, in delivery order.
type Module interface {
	Info() PluginInfo
	ConfigSchema() *Schema
	// SetConfig validates and keeps the configuration; an error stops the plugin from starting.
	SetConfig(cfg *Config) error
	// Start begins the module's own work; goroutines it starts end when ctx is done.
	Start(ctx context.Context, host Context) error
	// Handle processes one message. The message is acknowledged to the host
	// when Handle returns, whatever it returns; a redelivered message (after a
	// crash) may arrive again, so handlers must be idempotent.
	Handle(ctx context.Context, msg *Message) error
}

// BatchHandler is an optional capability of a Module: when it is implemented,
// the runtime hands over every message already waiting (at most
// MaxHandleBatch, in delivery order) in one call instead of one Handle call
// each, so that the module can, say, commit them in one transaction. Each
// message is acknowledged when HandleBatch returns, whatever it returns;
// errs[i] is message i's error (a shorter or nil slice means nil for the
// rest). Handle still gets what HandleBatch is never given (sdktest.Deliver).
type BatchHandler interface {
	HandleBatch(ctx context.Context, msgs []*Message) (errs []error)
}

// MaxHandleBatch bounds the messages of one HandleBatch call.
const MaxHandleBatch = 256

// HealthChecker is implemented by modules that can tell whether they work.
type HealthChecker interface {
	Health(ctx context.Context) error
}

// Stopper is implemented by modules that need to clean up on shutdown.
type Stopper interface {
	Stop(ctx context.Context) error
}

// Context is a module's view of the host: the message plane and its identity.
type Context interface {
	// Send queues msg for the module named module; it returns once the host has
	// queued it, or with an error (unknown module, queue full past ctx's deadline).
	Send(ctx context.Context, module string, msg *Message) error
	// SendBatch queues msgs for module, in order, with one round trip to the
	// host for the whole batch. It returns nil if every message was queued,
	// else a *BatchError saying which were not.
	SendBatch(ctx context.Context, module string, msgs []*Message) error
	// SendToGroup queues msg for every module of group.
	SendToGroup(ctx context.Context, group string, msg *Message) error
	// SendSync sends msg to module and waits for the message whose parent id
	// is msg's id, until ctx is done. It marks msg as sync (header.sync).
	SendSync(ctx context.Context, module string, msg *Message) (*Message, error)
	// Response routes resp to whoever waits for resp.Header.ParentID.
	Response(ctx context.Context, resp *Message) error
	Logger() hclog.Logger
	Name() string
	NodeName() string
	DataDir() string
}

// Errors a send can end with; test with errors.Is.
var (
	ErrUnknownDestination = errors.New("unknown destination")
	ErrQueueFull          = errors.New("destination queue full")
	ErrInvalidMessage     = errors.New("invalid message")
	ErrTooLarge           = errors.New("message too large")
	ErrNoWaiter           = errors.New("no caller waits for this response")
	ErrShuttingDown       = errors.New("shutting down")
	ErrHostGone           = errors.New("host connection lost")
)

// Limits shared by the SDK and the host.
const (
	// MaxFrameBytes bounds one gRPC message on the channel, on both sides.
	MaxFrameBytes = 64 << 20
	// MaxSendBytes is the largest message the SDK will put on the channel; the
	// host applies its own, usually lower, limit and answers ErrTooLarge.
	MaxSendBytes = 32 << 20
	// MaxInFlight is how many deliveries the host leaves unacknowledged per plugin instance.
	MaxInFlight = 4096
	// SendWindow is how many sends a plugin has outstanding before Send waits.
	SendWindow = 4096
	// BatchBytes is the size at which a sender closes a batch.
	BatchBytes = 1 << 20
)

// BatchError reports the messages of a SendBatch that were not queued.
type BatchError struct {
	Errs []error // one per message, nil for those queued
}

func (e *BatchError) Error() string {
	failed, first := 0, error(nil)
	for _, err := range e.Errs {
		if err != nil {
			failed++
			if first == nil {
				first = err
			}
		}
	}
	return fmt.Sprintf("%d of %d messages not queued; first: %v", failed, len(e.Errs), first)
}

// Unwrap lets errors.Is and errors.As look at every failure.
func (e *BatchError) Unwrap() []error {
	var out []error
	for _, err := range e.Errs {
		if err != nil {
			out = append(out, err)
		}
	}
	return out
}

func batchError(errs []error) error {
	for _, err := range errs {
		if err != nil {
			return &BatchError{Errs: errs}
		}
	}
	return nil
}
