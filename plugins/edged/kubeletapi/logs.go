package kubeletapi

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"github.com/edgehive/edgehive/plugins/edged/container"
)

// logOptions are the kubelet's container log query parameters.
type logOptions struct {
	follow     bool
	tail       int64 // lines from the end; -1 is all
	since      time.Time
	timestamps bool
	previous   bool
	limitBytes int64 // -1 is no limit
}

func boolParam(q url.Values, key string) (bool, error) {
	v := q.Get(key)
	if v == "" {
		return false, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, fmt.Errorf("%s %q: want true or false", key, v)
	}
	return b, nil
}

// parseLogOptions reads follow, tailLines, sinceSeconds, sinceTime,
// timestamps, previous and limitBytes; now anchors sinceSeconds.
func parseLogOptions(q url.Values, now time.Time) (logOptions, error) {
	o := logOptions{tail: -1, limitBytes: -1}
	var err error
	if o.follow, err = boolParam(q, "follow"); err != nil {
		return o, err
	}
	if o.timestamps, err = boolParam(q, "timestamps"); err != nil {
		return o, err
	}
	if o.previous, err = boolParam(q, "previous"); err != nil {
		return o, err
	}
	if v := q.Get("tailLines"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return o, fmt.Errorf("tailLines %q: want a number >= 0", v)
		}
		o.tail = n
	}
	if v := q.Get("limitBytes"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 1 {
			return o, fmt.Errorf("limitBytes %q: want a number >= 1", v)
		}
		o.limitBytes = n
	}
	secs, stime := q.Get("sinceSeconds"), q.Get("sinceTime")
	if secs != "" && stime != "" {
		return o, errors.New("sinceSeconds and sinceTime: give at most one")
	}
	if secs != "" {
		n, err := strconv.ParseInt(secs, 10, 64)
		if err != nil || n < 1 {
			return o, fmt.Errorf("sinceSeconds %q: want a number >= 1", secs)
		}
		o.since = now.Add(-time.Duration(n) * time.Second)
	}
	if stime != "" {
		t, err := time.Parse(time.RFC3339, stime)
		if err != nil {
			return o, fmt.Errorf("sinceTime %q: want an RFC 3339 time", stime)
		}
		o.since = t
	}
	return o, nil
}

// logLine is one whole line a container wrote (partial CRI records joined).
type logLine struct {
	time time.Time
	text []byte // with its newline
}

// criRecord is one line of a CRI log file: "<time> <stream> <P|F> <text>".
type criRecord struct {
	time    time.Time
	stream  string
	partial bool
	text    []byte
}

// parseCRIRecord parses one CRI log line (without its newline).
func parseCRIRecord(line []byte) (criRecord, error) {
	fields := bytes.SplitN(line, []byte(" "), 4)
	if len(fields) < 3 {
		return criRecord{}, fmt.Errorf("CRI log line %q: want <time> <stream> <P|F> <text>", line)
	}
	t, err := time.Parse(time.RFC3339Nano, string(fields[0]))
	if err != nil {
		return criRecord{}, fmt.Errorf("CRI log line: time %q: %w", fields[0], err)
	}
	r := criRecord{time: t, stream: string(fields[1])}
	if r.stream != "stdout" && r.stream != "stderr" {
		return criRecord{}, fmt.Errorf("CRI log line: stream %q: want stdout or stderr", fields[1])
	}
	switch string(fields[2]) {
	case "P":
		r.partial = true
	case "F":
	default:
		return criRecord{}, fmt.Errorf("CRI log line: tag %q: want P or F", fields[2])
	}
	if len(fields) == 4 {
		r.text = fields[3]
	}
	return r, nil
}

// lineJoiner turns CRI records into whole lines; a partial record's text is
// held until the record that ends it (per stream).
type lineJoiner struct {
	pending map[string]*logLine
}

func (j *lineJoiner) add(r criRecord) (logLine, bool) {
	if j.pending == nil {
		j.pending = map[string]*logLine{}
	}
	p := j.pending[r.stream]
	if p == nil {
		p = &logLine{time: r.time}
		j.pending[r.stream] = p
	}
	p.text = append(p.text, r.text...)
	if r.partial {
		return logLine{}, false
	}
	delete(j.pending, r.stream)
	p.text = append(p.text, '\n')
	return *p, true
}

// flush returns the partial lines held, oldest first, and forgets them: at
// the end of what the file has, output without a newline ("echo -n", or a
// process that exited mid-line) is sent as it is, as the kubelet does.
func (j *lineJoiner) flush() []logLine {
	var out []logLine
	for stream, p := range j.pending {
		out = append(out, *p)
		delete(j.pending, stream)
	}
	slices.SortFunc(out, func(a, b logLine) int { return a.time.Compare(b.time) })
	return out
}

// format is a line as it is sent: with its time first when asked.
func (o logOptions) format(l logLine) []byte {
	if !o.timestamps {
		return l.text
	}
	return append([]byte(l.time.Format(time.RFC3339Nano)+" "), l.text...)
}

// errLimit ends a log response that reached limitBytes.
var errLimit = errors.New("limitBytes reached")

// logWriter writes lines up to limitBytes and flushes when following.
type logWriter struct {
	w     io.Writer
	left  int64 // -1: no limit
	flush func()
}

func (lw *logWriter) write(b []byte) error {
	if lw.left >= 0 {
		if lw.left == 0 {
			return errLimit
		}
		if int64(len(b)) > lw.left {
			b = b[:lw.left]
		}
		lw.left -= int64(len(b))
	}
	if _, err := lw.w.Write(b); err != nil {
		return fmt.Errorf("write log: %w", err)
	}
	if lw.left == 0 {
		return errLimit
	}
	return nil
}

// copyLogs writes the log file's lines as o asks. Following, it keeps
// reading as the file grows until ctx ends or running reports the container
// gone and the file has no more.
func copyLogs(ctx context.Context, file string, o logOptions, lw *logWriter, running func() bool, poll time.Duration) error {
	f, err := os.Open(file)
	if err != nil {
		return fmt.Errorf("open log: %w", err)
	}
	defer f.Close()
	rd := bufio.NewReaderSize(f, 64<<10)
	var j lineJoiner
	var held []byte // an unfinished last line (the writer is mid-line)
	// next returns the next whole line, or io.EOF when the file has no more yet.
	next := func() (logLine, error) {
		for {
			chunk, err := rd.ReadBytes('\n')
			held = append(held, chunk...)
			if err != nil {
				if errors.Is(err, io.EOF) {
					return logLine{}, io.EOF
				}
				return logLine{}, fmt.Errorf("read log: %w", err)
			}
			rec, perr := parseCRIRecord(bytes.TrimSuffix(held, []byte("\n")))
			held = held[:0]
			if perr != nil {
				continue // not written by the runtime: skipped as the kubelet does
			}
			if l, ok := j.add(rec); ok {
				if !o.since.IsZero() && l.time.Before(o.since) {
					continue
				}
				return l, nil
			}
		}
	}

	// The lines there now, with the tail applied.
	var lines []logLine
	keep := func(l logLine) {
		lines = append(lines, l)
		if o.tail >= 0 && int64(len(lines)) > o.tail {
			lines = lines[1:]
		}
	}
	for {
		l, err := next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		keep(l)
	}
	for _, l := range j.flush() {
		if o.since.IsZero() || !l.time.Before(o.since) {
			keep(l)
		}
	}
	for _, l := range lines {
		if err := lw.write(o.format(l)); err != nil {
			return err
		}
	}
	if lw.flush != nil {
		lw.flush()
	}
	if !o.follow {
		return nil
	}
	lastCheck := time.Now()
	for {
		l, err := next()
		if err == nil {
			if err := lw.write(o.format(l)); err != nil {
				return err
			}
			if lw.flush != nil {
				lw.flush()
			}
			continue
		}
		if !errors.Is(err, io.EOF) {
			return err
		}
		for _, l := range j.flush() {
			if err := lw.write(o.format(l)); err != nil {
				return err
			}
		}
		if time.Since(lastCheck) >= time.Second {
			lastCheck = time.Now()
			if !running() {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(poll):
		}
	}
}

func (s *Server) serveLogs(w http.ResponseWriter, r *http.Request) {
	pod, err := s.findPod(r)
	if err != nil {
		writeError(w, err)
		return
	}
	name := r.PathValue("container")
	if !container.InSpec(pod, name) {
		writeError(w, errorf(http.StatusNotFound, "container %q not in pod %s/%s", name, pod.Namespace, pod.Name))
		return
	}
	o, err := parseLogOptions(r.URL.Query(), time.Now())
	if err != nil {
		writeError(w, errorf(http.StatusBadRequest, "%w", err))
		return
	}
	dir := s.src.LogDir(pod)
	if dir == "" {
		writeError(w, errorf(http.StatusServiceUnavailable, "container runtime not connected"))
		return
	}
	file, err := container.LogFile(filepath.Join(dir, name), o.previous)
	if err != nil {
		writeError(w, errorf(http.StatusNotFound, "%w", err))
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	lw := &logWriter{w: w, left: o.limitBytes}
	if f, ok := w.(http.Flusher); ok {
		lw.flush = f.Flush
	}
	// A previous instance has ended: following it stops at its end.
	running := func() bool {
		if o.previous {
			return false
		}
		ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
		defer cancel()
		_, err := s.runningContainer(ctx, pod, name)
		return err == nil
	}
	if err := copyLogs(r.Context(), file, o, lw, running, 100*time.Millisecond); err != nil && !errors.Is(err, errLimit) {
		s.log.Debug("container logs ended", "pod", pod.Namespace+"/"+pod.Name, "container", name, "error", err)
	}
}
