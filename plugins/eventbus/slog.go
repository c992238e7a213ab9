package eventbus

import (
	"context"
	"log/slog"
	"strings"

	"github.com/hashicorp/go-hclog"
)

// hclogHandler passes the embedded broker's slog records to the module's
// hclog logger, at warning level and above. A connection closed under a
// read, which the broker reports whenever a client goes away, is debug.
type hclogHandler struct {
	logger hclog.Logger
	attrs  []any
}

func newBrokerLogger(logger hclog.Logger) *slog.Logger {
	return slog.New(&hclogHandler{logger: logger})
}

func (h *hclogHandler) Enabled(_ context.Context, l slog.Level) bool {
	return l >= slog.LevelWarn || h.logger.IsDebug()
}

func (h *hclogHandler) Handle(_ context.Context, r slog.Record) error {
	args := append([]any(nil), h.attrs...)
	closed := false
	r.Attrs(func(a slog.Attr) bool {
		v := a.Value.Resolve().String()
		if strings.Contains(v, "use of closed network connection") || strings.Contains(v, "EOF") {
			closed = true
		}
		args = append(args, a.Key, v)
		return true
	})
	msg := r.Message
	if msg == "" {
		msg = "broker"
	}
	switch {
	case closed || r.Level < slog.LevelInfo:
		h.logger.Debug(msg, args...)
	case r.Level < slog.LevelWarn:
		h.logger.Info(msg, args...)
	case r.Level < slog.LevelError:
		h.logger.Warn(msg, args...)
	default:
		h.logger.Error(msg, args...)
	}
	return nil
}

func (h *hclogHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	n := &hclogHandler{logger: h.logger, attrs: append([]any(nil), h.attrs...)}
	for _, a := range attrs {
		n.attrs = append(n.attrs, a.Key, a.Value.Resolve().String())
	}
	return n
}

func (h *hclogHandler) WithGroup(name string) slog.Handler {
	return &hclogHandler{logger: h.logger.Named(name), attrs: h.attrs}
}
