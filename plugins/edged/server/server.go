// Package server is edged's read-only HTTP API on loopback, KubeEdge's
// 10350 port: /healthz, /pods and container logs.
package server

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"

	v1 "k8s.io/api/core/v1"

	kubecontainer "github.com/edgehive/edgehive/plugins/edged/container"
)

// Source is what the API shows: edged's pods with their current status, and
// where a pod's container logs are.
type Source interface {
	Pods() []*v1.Pod
	LogDir(pod *v1.Pod) string
}

// New returns the API's handler.
func New(src Source) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok"))
	})
	mux.HandleFunc("GET /pods", func(w http.ResponseWriter, _ *http.Request) {
		list := v1.PodList{}
		list.APIVersion, list.Kind = "v1", "PodList"
		for _, p := range src.Pods() {
			list.Items = append(list.Items, *p)
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(list)
	})
	mux.HandleFunc("GET /containerLogs/{namespace}/{pod}/{container}", func(w http.ResponseWriter, r *http.Request) {
		serveLogs(w, r, src)
	})
	return mux
}

func serveLogs(w http.ResponseWriter, r *http.Request, src Source) {
	ns, name, container := r.PathValue("namespace"), r.PathValue("pod"), r.PathValue("container")
	var pod *v1.Pod
	for _, p := range src.Pods() {
		if p.Namespace == ns && p.Name == name {
			pod = p
		}
	}
	if pod == nil {
		http.Error(w, fmt.Sprintf("pod %s/%s not found", ns, name), http.StatusNotFound)
		return
	}
	q := r.URL.Query()
	tail := -1
	if v := q.Get("tailLines"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			http.Error(w, fmt.Sprintf("tailLines %q: want a number >= 0", v), http.StatusBadRequest)
			return
		}
		tail = n
	}
	stamps := q.Get("timestamps") == "true" || q.Get("timestamps") == "1"
	file, err := kubecontainer.LogFile(filepath.Join(src.LogDir(pod), container), q.Get("previous") == "true")
	if err != nil {
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	}
	lines, err := readCRILog(file, stamps)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	if tail >= 0 && tail < len(lines) {
		lines = lines[len(lines)-tail:]
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	for _, l := range lines {
		_, _ = w.Write(l)
	}
}

// readCRILog turns CRI log lines ("<time> <stream> <P|F> <text>") into the
// text the container wrote; partial lines (P) are joined with what follows.
func readCRILog(file string, stamps bool) ([][]byte, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out [][]byte
	var partial []byte
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		fields := bytes.SplitN(sc.Bytes(), []byte(" "), 4)
		if len(fields) < 4 || (string(fields[1]) != "stdout" && string(fields[1]) != "stderr") ||
			(string(fields[2]) != "P" && string(fields[2]) != "F") {
			continue // not a CRI log line
		}
		if partial == nil && stamps {
			partial = append(partial, fields[0]...)
			partial = append(partial, ' ')
		}
		partial = append(partial, fields[3]...)
		if string(fields[2]) == "P" {
			continue
		}
		out = append(out, append(partial, '\n'))
		partial = nil
	}
	if partial != nil {
		out = append(out, append(partial, '\n'))
	}
	return out, sc.Err()
}
