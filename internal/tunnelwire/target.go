package tunnelwire

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// The target line the cloud writes first on every stream (Protocol):
// "DIAL kubelet\n" or "DIAL <ip>:<port>\n" (IPv6 in brackets).
const (
	dialPrefix    = "DIAL "
	kubeletTarget = "kubelet"
	maxTargetLine = 128
	// targetReadTimeout bounds how long the edge waits for a stream's
	// target line (the cloud writes it right after opening the stream).
	targetReadTimeout = 15 * time.Second
)

// Target is what one stream is for: the node's kubelet API, or a pod's
// ip:port on the node.
type Target struct {
	pod netip.AddrPort // invalid: the kubelet
}

// KubeletTarget is the node's kubelet API.
func KubeletTarget() Target { return Target{} }

// PodTarget is a pod's address on the node.
func PodTarget(addr netip.AddrPort) Target { return Target{pod: addr} }

// IsKubelet: the target is the node's kubelet API.
func (t Target) IsKubelet() bool { return !t.pod.IsValid() }

// Pod is the pod address of a pod target (invalid for the kubelet).
func (t Target) Pod() netip.AddrPort { return t.pod }

// String is the target as it appears on the wire.
func (t Target) String() string {
	if t.IsKubelet() {
		return kubeletTarget
	}
	return t.pod.String()
}

// ParseTarget reads the part of a target line after "DIAL ".
func ParseTarget(s string) (Target, error) {
	if s == kubeletTarget {
		return KubeletTarget(), nil
	}
	host, portStr, err := net.SplitHostPort(s)
	if err != nil {
		return Target{}, fmt.Errorf("target %q is neither %q nor ip:port", truncate(s, 64), kubeletTarget)
	}
	ip, err := netip.ParseAddr(host)
	if err != nil || ip.Zone() != "" {
		return Target{}, fmt.Errorf("target %q: %q is not an IP address", truncate(s, 64), truncate(host, 64))
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil || port == 0 || strconv.FormatUint(port, 10) != portStr {
		return Target{}, fmt.Errorf("target %q: %q is not a port", truncate(s, 64), truncate(portStr, 16))
	}
	return PodTarget(netip.AddrPortFrom(ip.Unmap(), uint16(port))), nil
}

// WriteTarget writes the target line (the cloud, first on a new stream).
func WriteTarget(w io.Writer, t Target) error {
	if _, err := io.WriteString(w, dialPrefix+t.String()+"\n"); err != nil {
		return fmt.Errorf("write stream target: %w", err)
	}
	return nil
}

// ReadTarget reads the target line from a fresh stream (the edge); the
// returned reader must be used for every later read of the stream.
func ReadTarget(stream net.Conn, deadline time.Time) (Target, *bufio.Reader, error) {
	_ = stream.SetReadDeadline(deadline)
	defer func() { _ = stream.SetReadDeadline(time.Time{}) }()
	br := bufio.NewReaderSize(stream, maxTargetLine)
	line, err := br.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) {
		return Target{}, nil, fmt.Errorf("target line longer than %d bytes", maxTargetLine)
	}
	if err != nil {
		return Target{}, nil, fmt.Errorf("read stream target: %w", err)
	}
	s := strings.TrimSuffix(string(line), "\n")
	rest, ok := strings.CutPrefix(s, dialPrefix)
	if !ok {
		return Target{}, nil, fmt.Errorf("target line %q does not start with %q", truncate(s, 64), dialPrefix)
	}
	t, err := ParseTarget(rest)
	if err != nil {
		return Target{}, nil, err
	}
	return t, br, nil
}
