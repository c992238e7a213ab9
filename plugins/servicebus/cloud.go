package servicebus

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/edgehive/edgehive/sdk"
)

// Operations of KubeEdge's servicebus besides HTTP methods.
const (
	opStart  = "start"  // resource: a cloud target URL applications may call
	opStop   = "stop"   // resource: a cloud target URL to forget
	opUpload = "upload" // answers and edge-to-cloud requests
)

// serverHeader marks answers the bridge made itself rather than the application.
const serverHeader = "edgehive-servicebus"

// appRequest is the content of an HTTP request from the cloud.
type appRequest struct {
	Header http.Header `json:"header"`
	Body   []byte      `json:"body"` // base64 in JSON
	Method string      `json:"method"`
	URL    string      `json:"url"`
}

// appResponse is the content of the answer.
type appResponse struct {
	Header     http.Header `json:"header"`
	StatusCode int         `json:"status_code"`
	Body       []byte      `json:"body"`
}

// errRefused marks a target the bridge will not call.
var errRefused = errors.New("target refused")

// newTargetClient is an HTTP client that only ever connects to loopback
// addresses on the allow-list, whatever a name resolves to, and never
// follows a redirect by itself.
func newTargetClient(timeout time.Duration, allowed func(string) bool) *http.Client {
	dialer := &net.Dialer{
		Timeout: 5 * time.Second,
		Control: func(_, address string, _ syscall.RawConn) error {
			host, _, err := net.SplitHostPort(address)
			if err != nil {
				return err
			}
			if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
				return fmt.Errorf("%w: %s is not a loopback address", errRefused, address)
			}
			return nil
		},
	}
	return &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			Proxy:                 nil, // never through a proxy: the target is on this node
			DialContext:           dialer.DialContext,
			MaxIdleConns:          16,
			IdleConnTimeout:       30 * time.Second,
			ResponseHeaderTimeout: timeout,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// target works out the URL a cloud request is for: the content's url if set,
// else the resource "<port>:<path>" on 127.0.0.1.
func target(msg *sdk.Message, req *appRequest) (*url.URL, error) {
	if req.URL != "" {
		u, err := url.Parse(req.URL)
		if err != nil {
			return nil, fmt.Errorf("url %q: %w", req.URL, err)
		}
		if u.Scheme != "http" || u.Host == "" || u.User != nil {
			return nil, fmt.Errorf("url %q: want http://host:port/path", req.URL)
		}
		return u, nil
	}
	port, path, ok := strings.Cut(msg.Router.Resource, ":")
	n, err := strconv.Atoi(port)
	if !ok || err != nil || n < 1 || n > 65535 || !strings.HasPrefix(path, "/") {
		return nil, fmt.Errorf("resource %q: want <port>:/<path>", msg.Router.Resource)
	}
	return &url.URL{Scheme: "http", Host: net.JoinHostPort("127.0.0.1", port), Path: path}, nil
}

func hostPortOf(u *url.URL) string {
	if u.Port() != "" {
		return u.Host
	}
	return net.JoinHostPort(u.Hostname(), "80")
}

// forwardToApp calls the application and builds the answer message; every
// failure becomes an HTTP status in the answer, never a lost request.
func (s *ServiceBus) forwardToApp(ctx context.Context, msg *sdk.Message) *sdk.Message {
	var req appRequest
	if err := msg.DecodeContent(&req); err != nil {
		return s.failure(msg, http.StatusBadRequest, fmt.Sprintf("bad request content: %v", err))
	}
	method := strings.ToUpper(msg.Router.Operation)
	if req.Method != "" {
		method = strings.ToUpper(req.Method)
	}
	if method == "" || strings.ContainsAny(method, " \t\r\n") {
		return s.failure(msg, http.StatusBadRequest, fmt.Sprintf("bad HTTP method %q", method))
	}
	u, err := target(msg, &req)
	if err != nil {
		return s.failure(msg, http.StatusBadRequest, err.Error())
	}
	if !s.allowed(hostPortOf(u)) {
		s.logger.Warn("refused a target off the allow-list", "target", u.Host, "msg_id", msg.Header.ID)
		return s.failure(msg, http.StatusForbidden, fmt.Sprintf("target %s is not on the allow-list", u.Host))
	}
	if len(req.Body) > s.cfg.MaxBodyBytes {
		return s.failure(msg, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body is %d bytes, the limit is %d", len(req.Body), s.cfg.MaxBodyBytes))
	}
	hreq, err := http.NewRequestWithContext(ctx, method, u.String(), strings.NewReader(string(req.Body)))
	if err != nil {
		return s.failure(msg, http.StatusBadRequest, err.Error())
	}
	for k, vs := range req.Header {
		for _, v := range vs {
			hreq.Header.Add(k, v)
		}
	}
	resp, err := s.client.Do(hreq)
	if err != nil {
		if errors.Is(err, errRefused) {
			s.logger.Warn("refused a non-loopback target", "target", u.Host, "msg_id", msg.Header.ID, "error", err)
			return s.failure(msg, http.StatusForbidden, err.Error())
		}
		var nerr net.Error
		if errors.As(err, &nerr) && nerr.Timeout() {
			return s.failure(msg, http.StatusGatewayTimeout, fmt.Sprintf("no answer from %s within %s", u.Host, s.cfg.Timeout.D()))
		}
		return s.failure(msg, http.StatusBadGateway, err.Error())
	}
	defer resp.Body.Close()
	if loc := resp.Header.Get("Location"); resp.StatusCode >= 300 && resp.StatusCode < 400 && loc != "" {
		next, err := u.Parse(loc)
		if err != nil || !s.allowed(hostPortOf(next)) || !isLoopbackHost(next.Hostname()) {
			s.logger.Warn("refused a redirect off the allow-list", "from", u.Host, "location", loc, "msg_id", msg.Header.ID)
			return s.failure(msg, http.StatusForbidden, fmt.Sprintf("redirect to %q is not on the allow-list", loc))
		}
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, int64(s.cfg.MaxBodyBytes)+1))
	if err != nil {
		return s.failure(msg, http.StatusBadGateway, fmt.Sprintf("reading the answer: %v", err))
	}
	if len(body) > s.cfg.MaxBodyBytes {
		return s.failure(msg, http.StatusBadGateway, fmt.Sprintf("answer body is larger than %d bytes", s.cfg.MaxBodyBytes))
	}
	return s.answer(msg, appResponse{Header: resp.Header, StatusCode: resp.StatusCode, Body: body})
}

func (s *ServiceBus) answer(req *sdk.Message, content appResponse) *sdk.Message {
	resp := sdk.NewMessage(req.Header.ID)
	resp.BuildRouter(Name, sdk.WireGroupUser, "", opUpload)
	_ = resp.FillBody(content) // header, int and bytes always encode
	return resp
}

func (s *ServiceBus) failure(req *sdk.Message, code int, text string) *sdk.Message {
	s.logger.Debug("request failed", "msg_id", req.Header.ID, "status", code, "reason", text)
	return s.answer(req, appResponse{
		Header:     http.Header{"Server": {serverHeader}, "Content-Type": {"text/plain; charset=utf-8"}},
		StatusCode: code,
		Body:       []byte(text),
	})
}

// normalizeHostPort lower-cases the host so that allow-list entries match.
func normalizeHostPort(hp string) string {
	host, port, err := net.SplitHostPort(hp)
	if err != nil {
		return strings.ToLower(hp)
	}
	return net.JoinHostPort(strings.ToLower(host), port)
}

// isLoopbackHost accepts loopback IP literals and "localhost" only: a name
// that needs resolving is not trusted here.
func isLoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
