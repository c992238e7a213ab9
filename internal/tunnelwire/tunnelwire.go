// Package tunnelwire is the wire format shared by cloudhive's tunnel server
// (cloud/tunnel) and the edge's tunnel client (plugins/edgehub): one mTLS
// connection per node, negotiated with ALPN Protocol, carrying a yamux
// session in which the cloud opens one stream per proxied TCP connection.
//
// Per stream (Protocol, edgehive-tunnel/2) the cloud first writes one target
// line, "DIAL kubelet\n" or "DIAL <pod ip>:<port>\n"; the edge answers once
// with a status line, "OK\n" when it has dialled the target, or
// "ERR <reason>\n" (then it closes the stream); "ERR denied: <reason>\n"
// when its policy forbids the target. After "OK\n" the stream carries the
// connection's bytes both ways. Under ProtocolV1 there is no target line and
// the target is always the kubelet.
package tunnelwire

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/yamux"
)

// Protocol is the ALPN name of the tunnel session; a new incompatible wire
// format gets a new name.
const Protocol = "edgehive-tunnel/2"

// ProtocolV1 is the first wire format (no target line: every stream is for
// the kubelet). cloudhive still accepts it from older edges; edges speak
// only Protocol.
const ProtocolV1 = "edgehive-tunnel/1"

// Stream status lines.
const (
	statusOK      = "OK"
	statusErr     = "ERR "
	deniedPrefix  = "denied: "
	maxStatusLine = 512
)

// Timing of the session.
const (
	keepAliveInterval = 15 * time.Second
	writeTimeout      = 15 * time.Second
	openTimeout       = 30 * time.Second
	// streamCloseTimeout bounds how long a half-closed stream waits for the
	// peer's FIN before it is reset.
	streamCloseTimeout = 30 * time.Second
	// maxWindow: 1 MiB per stream in flight, so one busy log stream cannot
	// starve the others of the link.
	maxWindow = 1 << 20
)

// ErrRefused is what the edge said when it could not serve a stream.
var ErrRefused = errors.New("edge refused the stream")

// ErrDenied marks a refusal by the edge's policy (a target it must not
// reach), as opposed to a dial that failed; it comes with ErrRefused. A
// NodeOptions.Dial returns it (wrapped) to have the edge answer
// "ERR denied: ...".
var ErrDenied = errors.New("denied")

// YamuxConfig is the session configuration of both ends; yamux logs through
// logger at debug.
func YamuxConfig(logger hclog.Logger) *yamux.Config {
	c := yamux.DefaultConfig()
	c.EnableKeepAlive = true
	c.KeepAliveInterval = keepAliveInterval
	c.ConnectionWriteTimeout = writeTimeout
	c.StreamOpenTimeout = openTimeout
	c.StreamCloseTimeout = streamCloseTimeout
	c.MaxStreamWindowSize = maxWindow
	c.LogOutput = nil
	c.Logger = logger.StandardLogger(&hclog.StandardLoggerOptions{ForceLevel: hclog.Debug})
	return c
}

// ReadStatus reads the edge's status line from a fresh stream; br must be
// used for every later read of the stream (it may hold bytes past the line).
func ReadStatus(stream net.Conn, deadline time.Time) (*bufio.Reader, error) {
	_ = stream.SetReadDeadline(deadline)
	defer func() { _ = stream.SetReadDeadline(time.Time{}) }()
	br := bufio.NewReaderSize(stream, maxStatusLine)
	line, err := br.ReadSlice('\n')
	if err != nil {
		return nil, fmt.Errorf("read stream status: %w", err)
	}
	s := strings.TrimRight(string(line), "\r\n")
	switch {
	case s == statusOK:
		return br, nil
	case strings.HasPrefix(s, statusErr+deniedPrefix):
		return nil, fmt.Errorf("%w: %w: %s", ErrRefused, ErrDenied, strings.TrimPrefix(s, statusErr+deniedPrefix))
	case strings.HasPrefix(s, statusErr):
		return nil, fmt.Errorf("%w: %s", ErrRefused, strings.TrimPrefix(s, statusErr))
	default:
		return nil, fmt.Errorf("bad stream status %q", truncate(s, 64))
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// Pipe copies both ways between a and b until either direction ends, then
// closes both, so a peer going away ends the whole connection. src, when
// not nil, is read instead of a (it holds bytes already buffered from a).
// It returns the bytes copied a→b and b→a.
func Pipe(ctx context.Context, a net.Conn, src io.Reader, b net.Conn) (aToB, bToA int64) {
	if src == nil {
		src = a
	}
	var once sync.Once
	closeBoth := func() {
		once.Do(func() {
			_ = a.Close()
			_ = b.Close()
		})
	}
	stop := context.AfterFunc(ctx, closeBoth)
	defer stop()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		bToA, _ = io.Copy(a, b)
		closeBoth()
	}()
	aToB, _ = io.Copy(b, src)
	closeBoth()
	wg.Wait()
	return aToB, bToA
}

// NodeOptions configure ServeNode.
type NodeOptions struct {
	// Dial connects to a stream's target; an error wrapping ErrDenied is
	// answered as a policy refusal.
	Dial func(ctx context.Context, target Target) (net.Conn, error)
	// MaxStreams bounds the streams served at once; more are refused.
	MaxStreams int
	// DialTimeout bounds Dial.
	DialTimeout time.Duration
	Logger      hclog.Logger
}

// ServeNode is the edge's side of one session: it accepts the streams the
// cloud opens and pipes each to a fresh local connection, until the session
// or ctx ends. It waits for its streams before it returns.
func ServeNode(ctx context.Context, sess *yamux.Session, opts NodeOptions) error {
	if opts.MaxStreams <= 0 {
		return errors.New("tunnel: MaxStreams must be positive")
	}
	if opts.DialTimeout <= 0 {
		opts.DialTimeout = 10 * time.Second
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { _ = sess.Close() })
	defer stop()
	slots := make(chan struct{}, opts.MaxStreams)
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		stream, err := sess.AcceptStream()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("tunnel session: %w", err)
		}
		select {
		case slots <- struct{}{}:
		default:
			// Over the limit: refuse this one, keep the others going.
			opts.Logger.Warn("tunnel stream refused: too many streams", "max_streams", opts.MaxStreams)
			refuse(stream, "too many streams")
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			serveStream(ctx, stream, opts)
		}()
	}
}

func refuse(stream *yamux.Stream, reason string) {
	_ = stream.SetWriteDeadline(time.Now().Add(writeTimeout))
	_, _ = io.WriteString(stream, statusErr+reason+"\n")
	_ = stream.Close()
}

func serveStream(ctx context.Context, stream *yamux.Stream, opts NodeOptions) {
	target, br, err := ReadTarget(stream, time.Now().Add(targetReadTimeout))
	if err != nil {
		opts.Logger.Warn("tunnel stream: bad target line", "stream", stream.StreamID(), "error", err)
		refuse(stream, deniedPrefix+"bad target line: "+err.Error())
		return
	}
	dctx, cancel := context.WithTimeout(ctx, opts.DialTimeout)
	local, err := opts.Dial(dctx, target)
	cancel()
	if errors.Is(err, ErrDenied) {
		opts.Logger.Warn("tunnel stream: target denied", "stream", stream.StreamID(), "target", target.String(), "error", err)
		refuse(stream, deniedPrefix+strings.TrimPrefix(err.Error(), deniedPrefix))
		return
	}
	if err != nil {
		opts.Logger.Warn("tunnel stream: dial failed", "stream", stream.StreamID(), "target", target.String(), "error", err)
		refuse(stream, "dial "+target.String()+": "+err.Error())
		return
	}
	_ = stream.SetWriteDeadline(time.Now().Add(writeTimeout))
	if _, err := io.WriteString(stream, statusOK+"\n"); err != nil {
		_ = local.Close()
		_ = stream.Close()
		return
	}
	_ = stream.SetWriteDeadline(time.Time{})
	up, down := Pipe(ctx, stream, br, local)
	opts.Logger.Trace("tunnel stream done", "stream", stream.StreamID(), "target", target.String(), "bytes_in", up, "bytes_out", down)
}
