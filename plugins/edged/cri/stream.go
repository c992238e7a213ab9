package cri

import (
	"context"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// The calls below serve the kubelet API (plugins/edged/kubeletapi): streaming
// URLs for exec, attach and port-forward, and resource usage. They are not
// part of Runtime, so the pod workers' fake need not implement them.

// Exec asks the runtime for a streaming URL that runs req.Cmd in a container.
func (c *Client) Exec(ctx context.Context, req *runtimeapi.ExecRequest) (*runtimeapi.ExecResponse, error) {
	resp, err := c.rt.Exec(ctx, req)
	if err != nil {
		return nil, wrap("Exec", req.GetContainerId(), err)
	}
	return resp, nil
}

// Attach asks the runtime for a streaming URL attached to a container's stdio.
func (c *Client) Attach(ctx context.Context, req *runtimeapi.AttachRequest) (*runtimeapi.AttachResponse, error) {
	resp, err := c.rt.Attach(ctx, req)
	if err != nil {
		return nil, wrap("Attach", req.GetContainerId(), err)
	}
	return resp, nil
}

// PortForward asks the runtime for a streaming URL forwarding into a sandbox's network.
func (c *Client) PortForward(ctx context.Context, req *runtimeapi.PortForwardRequest) (*runtimeapi.PortForwardResponse, error) {
	resp, err := c.rt.PortForward(ctx, req)
	if err != nil {
		return nil, wrap("PortForward", req.GetPodSandboxId(), err)
	}
	return resp, nil
}

// ListContainerStats returns the resource usage of the containers filter selects.
func (c *Client) ListContainerStats(ctx context.Context, filter *runtimeapi.ContainerStatsFilter) ([]*runtimeapi.ContainerStats, error) {
	resp, err := c.rt.ListContainerStats(ctx, &runtimeapi.ListContainerStatsRequest{Filter: filter})
	if err != nil {
		return nil, wrap("ListContainerStats", "", err)
	}
	return resp.GetStats(), nil
}
