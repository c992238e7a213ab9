package kubeletapi

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"

	"github.com/hashicorp/go-hclog"
	"k8s.io/apimachinery/pkg/util/proxy"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// streamOptions are exec's and attach's query parameters. The API server
// sends input/output/error/tty=1 (the kubelet's names); stdin/stdout/stderr
// are accepted too.
type streamOptions struct {
	command                    []string
	stdin, stdout, stderr, tty bool
}

func flagParam(q url.Values, keys ...string) (bool, error) {
	for _, k := range keys {
		v := q.Get(k)
		if v == "" {
			continue
		}
		b, err := strconv.ParseBool(v)
		if err != nil {
			return false, fmt.Errorf("%s %q: want 1, 0, true or false", k, v)
		}
		if b {
			return true, nil
		}
	}
	return false, nil
}

func parseStreamOptions(q url.Values, exec bool) (streamOptions, error) {
	var o streamOptions
	var err error
	if o.stdin, err = flagParam(q, "input", "stdin"); err != nil {
		return o, err
	}
	if o.stdout, err = flagParam(q, "output", "stdout"); err != nil {
		return o, err
	}
	if o.stderr, err = flagParam(q, "error", "stderr"); err != nil {
		return o, err
	}
	if o.tty, err = flagParam(q, "tty"); err != nil {
		return o, err
	}
	if !o.stdin && !o.stdout && !o.stderr {
		return o, errors.New("at least one of stdin, stdout or stderr is required")
	}
	if o.tty && o.stderr {
		// A terminal merges stderr into stdout (kubectl asks for both).
		o.stderr = false
	}
	if exec {
		o.command = q["command"]
		if len(o.command) == 0 || o.command[0] == "" {
			return o, errors.New("command is required")
		}
	}
	return o, nil
}

func parsePorts(q url.Values) ([]int32, error) {
	var ports []int32
	for _, v := range q["port"] {
		n, err := strconv.ParseUint(v, 10, 16)
		if err != nil || n == 0 {
			return nil, fmt.Errorf("port %q: want 1..65535", v)
		}
		ports = append(ports, int32(n))
	}
	return ports, nil
}

func (s *Server) serveExec(w http.ResponseWriter, r *http.Request) {
	s.serveStream(w, r, true)
}

func (s *Server) serveAttach(w http.ResponseWriter, r *http.Request) {
	s.serveStream(w, r, false)
}

func (s *Server) serveStream(w http.ResponseWriter, r *http.Request, exec bool) {
	pod, err := s.findPod(r)
	if err != nil {
		writeError(w, err)
		return
	}
	o, err := parseStreamOptions(r.URL.Query(), exec)
	if err != nil {
		writeError(w, errorf(http.StatusBadRequest, "%w", err))
		return
	}
	name := r.PathValue("container")
	id, err := s.runningContainer(r.Context(), pod, name)
	if err != nil {
		writeError(w, err)
		return
	}
	rt, err := s.runtime()
	if err != nil {
		writeError(w, err)
		return
	}
	var streamURL string
	if exec {
		resp, err := rt.Exec(r.Context(), &runtimeapi.ExecRequest{ContainerId: id, Cmd: o.command,
			Tty: o.tty, Stdin: o.stdin, Stdout: o.stdout, Stderr: o.stderr})
		if err != nil {
			writeError(w, fmt.Errorf("exec: %w", err))
			return
		}
		streamURL = resp.Url
	} else {
		resp, err := rt.Attach(r.Context(), &runtimeapi.AttachRequest{ContainerId: id,
			Tty: o.tty, Stdin: o.stdin, Stdout: o.stdout, Stderr: o.stderr})
		if err != nil {
			writeError(w, fmt.Errorf("attach: %w", err))
			return
		}
		streamURL = resp.Url
	}
	s.proxyStream(w, r, streamURL)
}

func (s *Server) servePortForward(w http.ResponseWriter, r *http.Request) {
	pod, err := s.findPod(r)
	if err != nil {
		writeError(w, err)
		return
	}
	ports, err := parsePorts(r.URL.Query())
	if err != nil {
		writeError(w, errorf(http.StatusBadRequest, "%w", err))
		return
	}
	sb, err := s.readySandbox(r.Context(), pod)
	if err != nil {
		writeError(w, err)
		return
	}
	rt, err := s.runtime()
	if err != nil {
		writeError(w, err)
		return
	}
	resp, err := rt.PortForward(r.Context(), &runtimeapi.PortForwardRequest{PodSandboxId: sb, Port: ports})
	if err != nil {
		writeError(w, fmt.Errorf("port-forward: %w", err))
		return
	}
	s.proxyStream(w, r, resp.Url)
}

// proxyStream hands the client's upgrade (SPDY or websocket) to the
// runtime's streaming server at streamURL and copies both ways until either
// side closes.
func (s *Server) proxyStream(w http.ResponseWriter, r *http.Request, streamURL string) {
	u, err := url.Parse(streamURL)
	if err != nil {
		writeError(w, fmt.Errorf("runtime stream URL %q: %w", streamURL, err))
		return
	}
	h := proxy.NewUpgradeAwareHandler(u, nil, false, true, &streamResponder{log: s.log})
	h.ServeHTTP(w, r)
}

// streamResponder reports proxy failures.
type streamResponder struct{ log hclog.Logger }

var _ proxy.ErrorResponder = (*streamResponder)(nil)

func (sr *streamResponder) Error(w http.ResponseWriter, r *http.Request, err error) {
	sr.log.Debug("stream proxy failed", "path", r.URL.Path, "error", err)
	http.Error(w, err.Error(), http.StatusInternalServerError)
}
