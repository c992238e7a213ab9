package main

import (
	"context"
	"fmt"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/gohcl"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/edgehive/edgehive/cloud/devicecontroller"
	"github.com/edgehive/edgehive/cloud/edgecontroller"
	"github.com/edgehive/edgehive/cloud/nodelink"
	"github.com/edgehive/edgehive/sdk"
)

// controllerConfig is the decoded edgecontroller block.
type controllerConfig = edgecontroller.Config

// decodeControllerConfig decodes the edgecontroller block; `validate` and
// `run` both call it, so its diagnostics appear before anything starts.
func decodeControllerConfig(body hcl.Body) (controllerConfig, hcl.Diagnostics) {
	cfg := edgecontroller.DefaultConfig()
	if body == nil {
		return cfg, nil
	}
	diags := gohcl.DecodeBody(body, nil, &cfg)
	if diags.HasErrors() {
		return cfg, diags
	}
	if err := cfg.Validate(); err != nil {
		rng := body.MissingItemRange()
		diags = append(diags, &hcl.Diagnostic{
			Severity: hcl.DiagError,
			Summary:  "Invalid edgecontroller block",
			Detail:   err.Error(),
			Subject:  &rng,
		})
	}
	return cfg, diags
}

// controllerRunner is a controller's main loop; it returns when ctx ends.
type controllerRunner func(ctx context.Context) error

// newControllers builds what handles the nodes' messages behind cloudhub,
// with sender (the hub) for the way down. It returns the handler cloudhub
// delivers to and the loops to run beside cloudhub.
//
// Wiring a controller: build it here from client, sender and its decoded
// config, register it on the mux (as the fallback for everything not
// claimed by a group: nodelink.NewMux(controller)), and append its Run.
func newControllers(client kubernetes.Interface, dyn dynamic.Interface, sender nodelink.Sender, cfg controllerConfig, logger hclog.Logger) (nodelink.Handler, []controllerRunner, error) {
	ec, err := edgecontroller.New(client, sender, logger, cfg) // it names its own logger
	if err != nil {
		return nil, nil, fmt.Errorf("edgecontroller: %w", err)
	}
	dc, err := devicecontroller.New(dyn, sender, logger.Named("devicecontroller"), devicecontroller.Config{})
	if err != nil {
		return nil, nil, err
	}
	mux := nodelink.NewMux(ec)
	// devicetwin's reports come with source "twin" and group "resource":
	// KubeEdge's cloud dispatches them by source.
	mux.HandleSource("twin", dc)
	mux.Handle("twin", dc)
	return mux, []controllerRunner{ec.Run, dc.Run}, nil
}

// loggingHandler logs what nodes send and answers nothing: cloudhive with
// no controller linked in.
type loggingHandler struct{ logger hclog.Logger }

var _ nodelink.Handler = (*loggingHandler)(nil)

func (l *loggingHandler) HandleUpstream(_ context.Context, node string, msg *sdk.Message) {
	l.logger.Debug("upstream message not handled", "node", node, "msg", msg.String())
}

func (l *loggingHandler) NodeConnected(_ context.Context, node string) {
	l.logger.Debug("node session started", "node", node)
}

func (l *loggingHandler) NodeDisconnected(node string) {
	l.logger.Debug("node session ended", "node", node)
}
