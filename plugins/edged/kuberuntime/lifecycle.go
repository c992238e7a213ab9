package kuberuntime

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// Waiting reasons and event reasons of lifecycle hooks, as the kubelet's.
const (
	ReasonPostStartHookError = "PostStartHookError"
	ReasonFailedPreStopHook  = "FailedPreStopHook"
)

// minGraceAfterPreStop is what a container keeps of its grace period after a
// slow preStop hook (the kubelet's minimum).
const minGraceAfterPreStop = 2

// runHook runs a postStart or preStop handler of container id within timeout.
func (m *Manager) runHook(ctx context.Context, pod *v1.Pod, c *v1.Container, id, podIP string, h *v1.LifecycleHandler, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	switch {
	case h.Exec != nil:
		r, err := m.rt.ExecSync(ctx, id, h.Exec.Command, timeout)
		if err != nil {
			return fmt.Errorf("exec %v: %w", h.Exec.Command, err)
		}
		if r.ExitCode != 0 {
			return fmt.Errorf("exec %v: exit code %d: %s", h.Exec.Command, r.ExitCode, strings.TrimSpace(string(r.Stdout)+string(r.Stderr)))
		}
		return nil
	case h.HTTPGet != nil:
		return hookHTTPGet(ctx, pod, c, podIP, h.HTTPGet)
	case h.Sleep != nil:
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-m.clock.After(time.Duration(h.Sleep.Seconds) * time.Second):
			return nil
		}
	case h.TCPSocket != nil:
		return errors.New("tcpSocket lifecycle handlers are not supported (as the kubelet)")
	}
	return errors.New("lifecycle handler has no action")
}

// resolvePort turns a numbered or named port of c into a number.
func resolvePort(p intstr.IntOrString, c *v1.Container) (int, error) {
	if p.Type == intstr.Int {
		return p.IntValue(), nil
	}
	for _, cp := range c.Ports {
		if cp.Name == p.StrVal {
			return int(cp.ContainerPort), nil
		}
	}
	if n, err := strconv.Atoi(p.StrVal); err == nil {
		return n, nil
	}
	return 0, fmt.Errorf("port %q not found in container %s", p.StrVal, c.Name)
}

func hookHTTPGet(ctx context.Context, pod *v1.Pod, c *v1.Container, podIP string, g *v1.HTTPGetAction) error {
	port, err := resolvePort(g.Port, c)
	if err != nil {
		return err
	}
	host := g.Host
	if host == "" {
		host = podIP
	}
	if host == "" || pod.Spec.HostNetwork && g.Host == "" {
		host = "127.0.0.1"
	}
	scheme := strings.ToLower(string(g.Scheme))
	if scheme == "" {
		scheme = "http"
	}
	path := g.Path
	if !strings.HasPrefix(path, "/") {
		path = "/" + path
	}
	u := &url.URL{Scheme: scheme, Host: net.JoinHostPort(host, strconv.Itoa(port))}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String()+path, nil)
	if err != nil {
		return err
	}
	for _, h := range g.HTTPHeaders {
		if strings.EqualFold(h.Name, "Host") {
			req.Host = h.Value
			continue
		}
		req.Header.Add(h.Name, h.Value)
	}
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, DisableKeepAlives: true}} //nolint:gosec // as the kubelet's hooks
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("http get %s: %w", req.URL, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
	if resp.StatusCode < 200 || resp.StatusCode >= 400 {
		return fmt.Errorf("http get %s: %s: %s", req.URL, resp.Status, strings.TrimSpace(string(body)))
	}
	return nil
}

// preStop runs c's preStop hook (if any) before container id is stopped and
// returns the grace period that is left for the stop itself.
func (m *Manager) preStop(ctx context.Context, pod *v1.Pod, c *v1.Container, id, podIP string, grace int64) int64 {
	if pod == nil || c == nil || c.Lifecycle == nil || c.Lifecycle.PreStop == nil || grace <= 0 {
		return grace
	}
	start := m.clock.Now()
	if err := m.runHook(ctx, pod, c, id, podIP, c.Lifecycle.PreStop, time.Duration(grace)*time.Second); err != nil {
		m.log.Warn("preStop hook failed", "pod", pod.Namespace+"/"+pod.Name, "container", c.Name, "error", err)
		m.event(pod, c.Name, v1.EventTypeWarning, ReasonFailedPreStopHook, err.Error())
	}
	left := grace - int64(m.clock.Since(start).Seconds())
	return max(left, minGraceAfterPreStop)
}

// specOf finds the spec of the named container among all of pod's.
func specOf(pod *v1.Pod, name string) *v1.Container {
	if pod == nil {
		return nil
	}
	for i := range pod.Spec.Containers {
		if pod.Spec.Containers[i].Name == name {
			return &pod.Spec.Containers[i]
		}
	}
	for i := range pod.Spec.InitContainers {
		if pod.Spec.InitContainers[i].Name == name {
			return &pod.Spec.InitContainers[i]
		}
	}
	for i := range pod.Spec.EphemeralContainers {
		if pod.Spec.EphemeralContainers[i].Name == name {
			c := v1.Container(pod.Spec.EphemeralContainers[i].EphemeralContainerCommon)
			return &c
		}
	}
	return nil
}
