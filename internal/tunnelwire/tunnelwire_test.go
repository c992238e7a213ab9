package tunnelwire

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/yamux"
)

func TestReadStatus(t *testing.T) {
	for _, tc := range []struct {
		name, sent string
		wantErr    string // "" means OK
		rest       string // bytes after the line, still readable
	}{
		{name: "ok", sent: "OK\n", rest: ""},
		{name: "ok with bytes behind", sent: "OK\r\nHTTP/1.1 200", rest: "HTTP/1.1 200"},
		{name: "refused", sent: "ERR dial local service: connection refused\n", wantErr: "edge refused the stream: dial local service"},
		{name: "garbage", sent: "HELLO\n", wantErr: `bad stream status "HELLO"`},
		{name: "no line end", sent: "OK", wantErr: "read stream status"},
		{name: "line too long", sent: strings.Repeat("x", 2*maxStatusLine) + "\n", wantErr: "read stream status"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := net.Pipe()
			defer a.Close()
			go func() {
				_, _ = io.WriteString(b, tc.sent)
				_ = b.Close()
			}()
			br, err := ReadStatus(a, time.Now().Add(5*time.Second))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				if strings.HasPrefix(tc.sent, "ERR") && !errors.Is(err, ErrRefused) {
					t.Fatalf("err = %v, want ErrRefused", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			rest, _ := io.ReadAll(br)
			if string(rest) != tc.rest {
				t.Fatalf("rest = %q, want %q", rest, tc.rest)
			}
		})
	}
}

func TestReadStatusDeadline(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	start := time.Now()
	if _, err := ReadStatus(a, time.Now().Add(50*time.Millisecond)); err == nil {
		t.Fatal("a silent edge gave a status")
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("took %v", d)
	}
}

func TestReadStatusDenied(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	go func() {
		_, _ = io.WriteString(b, "ERR denied: 127.0.0.1 is not a pod address\n")
		_ = b.Close()
	}()
	_, err := ReadStatus(a, time.Now().Add(5*time.Second))
	if !errors.Is(err, ErrRefused) || !errors.Is(err, ErrDenied) {
		t.Fatalf("err = %v, want ErrRefused and ErrDenied", err)
	}
	if !strings.Contains(err.Error(), "127.0.0.1 is not a pod address") {
		t.Fatalf("err = %v, want the reason", err)
	}
}

func TestReadTarget(t *testing.T) {
	for _, tc := range []struct {
		name, sent string
		want       string // Target.String(); "" means an error
		wantErr    string
		rest       string
	}{
		{name: "kubelet", sent: "DIAL kubelet\n", want: "kubelet"},
		{name: "pod ipv4", sent: "DIAL 10.88.0.5:8080\n", want: "10.88.0.5:8080"},
		{name: "pod ipv6", sent: "DIAL [fd00::5]:80\n", want: "[fd00::5]:80"},
		{name: "v4-mapped v6 unmapped", sent: "DIAL [::ffff:10.0.0.1]:80\n", want: "10.0.0.1:80"},
		{name: "bytes behind the line", sent: "DIAL kubelet\nGET / HTTP/1.1", want: "kubelet", rest: "GET / HTTP/1.1"},
		{name: "crlf", sent: "DIAL kubelet\r\n", wantErr: "neither"},
		{name: "no verb", sent: "kubelet\n", wantErr: `does not start with "DIAL "`},
		{name: "lower-case verb", sent: "dial kubelet\n", wantErr: "does not start"},
		{name: "other verb", sent: "OPEN kubelet\n", wantErr: "does not start"},
		{name: "empty line", sent: "\n", wantErr: "does not start"},
		{name: "empty target", sent: "DIAL \n", wantErr: "neither"},
		{name: "unknown name", sent: "DIAL metrics\n", wantErr: "neither"},
		{name: "host name", sent: "DIAL example.com:80\n", wantErr: "not an IP address"},
		{name: "zone", sent: "DIAL [fe80::1%eth0]:80\n", wantErr: "not an IP address"},
		{name: "no port", sent: "DIAL 10.0.0.1\n", wantErr: "neither"},
		{name: "port zero", sent: "DIAL 10.0.0.1:0\n", wantErr: "not a port"},
		{name: "port too big", sent: "DIAL 10.0.0.1:65536\n", wantErr: "not a port"},
		{name: "port with sign", sent: "DIAL 10.0.0.1:+80\n", wantErr: "not a port"},
		{name: "port leading zero", sent: "DIAL 10.0.0.1:080\n", wantErr: "not a port"},
		{name: "named port", sent: "DIAL 10.0.0.1:http\n", wantErr: "not a port"},
		{name: "oversize", sent: "DIAL " + strings.Repeat("1", 2*maxTargetLine) + "\n", wantErr: "longer than"},
		{name: "no line end", sent: "DIAL kubelet", wantErr: "read stream target"},
		{name: "nothing", sent: "", wantErr: "read stream target"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := net.Pipe()
			defer a.Close()
			go func() {
				_, _ = io.WriteString(b, tc.sent)
				_ = b.Close()
			}()
			got, br, err := ReadTarget(a, time.Now().Add(5*time.Second))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("target %v, err = %v, want %q", got, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.String() != tc.want {
				t.Fatalf("target = %q, want %q", got, tc.want)
			}
			rest, _ := io.ReadAll(br)
			if string(rest) != tc.rest {
				t.Fatalf("rest = %q, want %q", rest, tc.rest)
			}
		})
	}
}

func TestTargetRoundTrip(t *testing.T) {
	for _, want := range []Target{
		KubeletTarget(),
		PodTarget(netip.MustParseAddrPort("10.88.0.5:8080")),
		PodTarget(netip.MustParseAddrPort("[fd00::1]:443")),
	} {
		a, b := net.Pipe()
		go func() {
			_ = WriteTarget(b, want)
			_ = b.Close()
		}()
		got, _, err := ReadTarget(a, time.Now().Add(5*time.Second))
		_ = a.Close()
		if err != nil || got != want {
			t.Fatalf("round trip of %v: %v, %v", want, got, err)
		}
		if got.IsKubelet() != (want == KubeletTarget()) {
			t.Fatalf("%v: IsKubelet = %v", want, got.IsKubelet())
		}
	}
}

func TestReadTargetDeadline(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	start := time.Now()
	if _, _, err := ReadTarget(a, time.Now().Add(50*time.Millisecond)); err == nil {
		t.Fatal("a silent cloud gave a target")
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("took %v", d)
	}
}

// TestServeNodeTargets: the edge reads each stream's target line and hands
// it to Dial; policy refusals come back as denied, dial failures as plain
// refusals, bad lines as denied, and an accepted stream carries bytes.
func TestServeNodeTargets(t *testing.T) {
	cloudConn, edgeConn := net.Pipe()
	logger := hclog.NewNullLogger()
	edge, err := yamux.Server(edgeConn, YamuxConfig(logger))
	if err != nil {
		t.Fatal(err)
	}
	cloud, err := yamux.Client(cloudConn, YamuxConfig(logger))
	if err != nil {
		t.Fatal(err)
	}
	defer cloud.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var dialled []string
	var mu sync.Mutex
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = ServeNode(ctx, edge, NodeOptions{MaxStreams: 4, Logger: logger,
			Dial: func(_ context.Context, tgt Target) (net.Conn, error) {
				mu.Lock()
				dialled = append(dialled, tgt.String())
				mu.Unlock()
				switch {
				case tgt.IsKubelet():
					local, remote := net.Pipe()
					go func() { _, _ = io.Copy(remote, remote) }() // echo
					return local, nil
				case tgt.Pod().Port() == 9:
					return nil, errors.New("connection refused")
				default:
					return nil, fmt.Errorf("%w: %s is not a pod address", ErrDenied, tgt.Pod().Addr())
				}
			}})
	}()
	open := func(line string) (net.Conn, error) {
		st, err := cloud.OpenStream()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(st, line); err != nil {
			t.Fatal(err)
		}
		br, err := ReadStatus(st, time.Now().Add(5*time.Second))
		if err != nil {
			_ = st.Close()
			return nil, err
		}
		return &bufConn{Conn: st, r: br}, nil
	}
	for _, tc := range []struct {
		name, line string
		denied     bool
		wantErr    string
	}{
		{"not a pod", "DIAL 127.0.0.1:22\n", true, "127.0.0.1 is not a pod address"},
		{"dial fails", "DIAL 10.88.0.5:9\n", false, "dial 10.88.0.5:9: connection refused"},
		{"bad line", "DIAL somewhere\n", true, "bad target line"},
		{"v1 style, no line", "GET / HTTP/1.1\r\n\r\n", true, "bad target line"},
	} {
		_, err := open(tc.line)
		if !errors.Is(err, ErrRefused) || errors.Is(err, ErrDenied) != tc.denied || !strings.Contains(err.Error(), tc.wantErr) {
			t.Fatalf("%s: err = %v, want refused (denied %v) with %q", tc.name, err, tc.denied, tc.wantErr)
		}
	}
	c, err := open("DIAL kubelet\n")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(c, "ping"); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("echo = %q, %v", buf, err)
	}
	_ = c.Close()
	cancel()
	<-done
	mu.Lock()
	defer mu.Unlock()
	if want := []string{"127.0.0.1:22", "10.88.0.5:9", "kubelet"}; !slices.Equal(dialled, want) {
		t.Fatalf("dialled %v, want %v (bad lines never reach Dial)", dialled, want)
	}
}

type bufConn struct {
	net.Conn
	r io.Reader
}

func (c *bufConn) Read(p []byte) (int, error) { return c.r.Read(p) }
