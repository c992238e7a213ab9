package servicebus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"sync"

	"github.com/edgehive/edgehive/sdk"
)

// localRequest is what an application on the node posts to the local server.
type localRequest struct {
	Method    string          `json:"method"`
	TargetURL string          `json:"targetURL"`
	Payload   json.RawMessage `json:"payload"`
}

// localReply is the local server's answer.
type localReply struct {
	Code int    `json:"code"`
	Msg  string `json:"msg"`
	Body string `json:"body,omitempty"`
}

// serveLocal forwards an application's request to an allowed cloud target
// and waits for the cloud's answer.
func (s *ServiceBus) serveLocal(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		writeReply(w, http.StatusMethodNotAllowed, localReply{Code: http.StatusMethodNotAllowed, Msg: "POST a JSON request"})
		return
	}
	raw, err := io.ReadAll(http.MaxBytesReader(w, r.Body, int64(s.cfg.MaxBodyBytes)))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeReply(w, http.StatusRequestEntityTooLarge, localReply{Code: http.StatusRequestEntityTooLarge,
				Msg: fmt.Sprintf("request body is larger than %d bytes", s.cfg.MaxBodyBytes)})
			return
		}
		writeReply(w, http.StatusBadRequest, localReply{Code: http.StatusBadRequest, Msg: err.Error()})
		return
	}
	var req localRequest
	if err := json.Unmarshal(raw, &req); err != nil || req.TargetURL == "" {
		writeReply(w, http.StatusBadRequest, localReply{Code: http.StatusBadRequest, Msg: `want {"method":"...","targetURL":"/...","payload":{...}}`})
		return
	}
	if !s.targets.has(req.TargetURL) {
		s.logger.Warn("refused a cloud target that was not started", "target", req.TargetURL)
		writeReply(w, http.StatusForbidden, localReply{Code: http.StatusForbidden, Msg: fmt.Sprintf("target %q is not allowed", req.TargetURL)})
		return
	}
	msg := sdk.NewMessage("")
	msg.BuildRouter(Name, sdk.WireGroupUser, req.TargetURL, opUpload)
	// The whole request goes as bytes, a base64 JSON string, as KubeEdge forwards it.
	msg.Content, _ = json.Marshal(raw)
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.Timeout.D())
	defer cancel()
	answer, err := s.host.SendSync(ctx, cloudModule, msg)
	if err != nil {
		writeReply(w, http.StatusBadGateway, localReply{Code: http.StatusBadGateway, Msg: fmt.Sprintf("no answer from the cloud: %v", err)})
		return
	}
	writeReply(w, http.StatusOK, localReply{Code: http.StatusOK, Msg: "receive response from cloud successfully", Body: answerText(answer)})
}

// answerText is the cloud's answer as text: bytes are decoded from base64.
func answerText(m *sdk.Message) string {
	var b []byte
	if json.Unmarshal(m.Content, &b) == nil {
		return string(b)
	}
	return m.ContentString()
}

func writeReply(w http.ResponseWriter, code int, r localReply) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(r)
}

// targetSet is the set of cloud targets applications may call, kept in a
// file so that it survives restarts.
type targetSet struct {
	mu   sync.Mutex
	file string
	set  map[string]bool
}

func loadTargets(file string) (*targetSet, error) {
	t := &targetSet{file: file, set: map[string]bool{}}
	if file == "" {
		return t, nil
	}
	raw, err := os.ReadFile(file)
	if errors.Is(err, os.ErrNotExist) {
		return t, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read cloud targets: %w", err)
	}
	var list []string
	if err := json.Unmarshal(raw, &list); err != nil {
		return nil, fmt.Errorf("cloud targets file %s: %w", file, err)
	}
	for _, u := range list {
		t.set[u] = true
	}
	return t, nil
}

func (t *targetSet) has(u string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.set[u]
}

func (t *targetSet) add(u string) error {
	if u == "" {
		return errors.New("start: empty target URL")
	}
	return t.update(func() { t.set[u] = true })
}

func (t *targetSet) remove(u string) error { return t.update(func() { delete(t.set, u) }) }

// update changes the set and writes it out atomically.
func (t *targetSet) update(change func()) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	change()
	if t.file == "" {
		return nil
	}
	list := make([]string, 0, len(t.set))
	for u := range t.set {
		list = append(list, u)
	}
	sort.Strings(list)
	raw, _ := json.Marshal(list)
	tmp := t.file + ".tmp"
	if err := os.WriteFile(tmp, raw, 0o600); err != nil {
		return fmt.Errorf("save cloud targets: %w", err)
	}
	if err := os.Rename(tmp, t.file); err != nil {
		return fmt.Errorf("save cloud targets: %w", err)
	}
	return nil
}
