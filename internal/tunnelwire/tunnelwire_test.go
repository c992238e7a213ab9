package tunnelwire

import (
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"
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
