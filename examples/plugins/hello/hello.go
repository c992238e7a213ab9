package main

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/hashicorp/go-hclog"

	"github.com/edgehive/edgehive/sdk"
)

// Identity of the module.
const (
	helloName    = "hello"
	helloGroup   = "hello"
	helloVersion = "1.0.0"
)

// Operations hello understands and sends.
const (
	OpGreet   = "greet"   // content {"name":"x"}
	OpGreeted = "greeted" // content {"greeting":"hello, x"}
)

// Hello answers "greet" messages. The zero value is ready for SetConfig.
type Hello struct {
	cfg    helloConfig
	host   sdk.Context
	logger hclog.Logger
}

// The interfaces Hello implements, checked at compile time.
var (
	_ sdk.Module        = (*Hello)(nil)
	_ sdk.HealthChecker = (*Hello)(nil)
)

type helloConfig struct {
	Greeting     string `json:"greeting"`
	ReplyToGroup string `json:"reply_to_group"`
}

// GreetRequest is the content of a "greet" message.
type GreetRequest struct {
	Name string `json:"name"`
}

// GreetReply is the content of the answer.
type GreetReply struct {
	Greeting string `json:"greeting"`
}

// Info identifies the plugin to the host.
func (h *Hello) Info() sdk.PluginInfo {
	return sdk.PluginInfo{
		Name:        helloName,
		Group:       helloGroup,
		Version:     helloVersion,
		APIVersions: []string{sdk.APIVersion1},
		Description: "greets whoever sends it a greet message",
	}
}

// ConfigSchema declares what the plugin's config block may hold. The host
// checks the block against it and fills in the defaults before SetConfig.
func (h *Hello) ConfigSchema() *sdk.Schema {
	return &sdk.Schema{Attributes: []sdk.Attribute{
		{Name: "greeting", Type: sdk.TypeString, Default: "hello", Description: "word to greet with"},
		{Name: "reply_to_group", Type: sdk.TypeString, Default: "", Description: "send greetings to this group instead of the sender"},
	}}
}

// SetConfig validates the config block; an error stops the plugin from starting.
func (h *Hello) SetConfig(cfg *sdk.Config) error {
	c := helloConfig{Greeting: "hello"}
	if err := cfg.Decode(&c); err != nil {
		return err
	}
	if strings.TrimSpace(c.Greeting) == "" {
		return errors.New("hello config: greeting: must not be empty")
	}
	h.cfg = c
	return nil
}

// Start keeps the host context. Goroutines started here must end when ctx is done.
func (h *Hello) Start(_ context.Context, host sdk.Context) error {
	h.host = host
	h.logger = host.Logger()
	h.logger.Info("ready", "greeting", h.cfg.Greeting)
	return nil
}

// Handle greets. It is idempotent: greeting the same message twice sends the
// same answer, and the SDK drops a redelivered msg_id anyway.
func (h *Hello) Handle(ctx context.Context, msg *sdk.Message) error {
	if msg.Router.Operation != OpGreet {
		h.logger.Trace("ignoring message", "msg", msg.String())
		return nil
	}
	var req GreetRequest
	if err := msg.DecodeContent(&req); err != nil || req.Name == "" {
		err = fmt.Errorf("hello: greet %s: want content {\"name\":\"...\"}", msg.Header.ID)
		if msg.Header.Sync {
			return h.host.Response(ctx, sdk.NewErrorResponse(msg, err))
		}
		return err
	}
	reply := GreetReply{Greeting: h.cfg.Greeting + ", " + req.Name}

	if msg.Header.Sync {
		resp, err := sdk.NewResponse(msg, reply)
		if err != nil {
			return err
		}
		return h.host.Response(ctx, resp)
	}

	out := sdk.NewMessage(msg.Header.ID).BuildRouter(helloName, helloGroup, msg.Router.Resource, OpGreeted)
	if err := out.FillBody(reply); err != nil {
		return err
	}
	if h.cfg.ReplyToGroup != "" {
		if err := h.host.SendToGroup(ctx, h.cfg.ReplyToGroup, out); err != nil {
			return fmt.Errorf("hello: greet %s: send to group %s: %w", msg.Header.ID, h.cfg.ReplyToGroup, err)
		}
		return nil
	}
	if msg.Router.Source == "" {
		return fmt.Errorf("hello: greet %s: no route.source to answer", msg.Header.ID)
	}
	if err := h.host.Send(ctx, msg.Router.Source, out); err != nil {
		return fmt.Errorf("hello: greet %s: send to %s: %w", msg.Header.ID, msg.Router.Source, err)
	}
	return nil
}

// Health reports whether the plugin works; hello always does once started.
func (h *Hello) Health(context.Context) error {
	if h.host == nil {
		return errors.New("hello: not started")
	}
	return nil
}
