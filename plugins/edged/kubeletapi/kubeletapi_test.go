package kubeletapi

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	statsapi "k8s.io/kubelet/pkg/apis/stats/v1alpha1"
)

func TestParseLogOptions(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		query   string
		want    logOptions
		wantErr string
	}{
		{query: "", want: logOptions{tail: -1, limitBytes: -1}},
		{query: "follow=true&tailLines=10&timestamps=1&previous=false&limitBytes=500",
			want: logOptions{follow: true, tail: 10, timestamps: true, limitBytes: 500}},
		{query: "tailLines=0", want: logOptions{tail: 0, limitBytes: -1}},
		{query: "sinceSeconds=60", want: logOptions{tail: -1, limitBytes: -1, since: now.Add(-time.Minute)}},
		{query: "sinceTime=2026-01-01T00:00:00Z", want: logOptions{tail: -1, limitBytes: -1, since: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}},
		{query: "previous=true", want: logOptions{tail: -1, limitBytes: -1, previous: true}},
		{query: "tailLines=-1", wantErr: "tailLines"},
		{query: "tailLines=x", wantErr: "tailLines"},
		{query: "limitBytes=0", wantErr: "limitBytes"},
		{query: "sinceSeconds=0", wantErr: "sinceSeconds"},
		{query: "sinceTime=yesterday", wantErr: "sinceTime"},
		{query: "sinceSeconds=5&sinceTime=2026-01-01T00:00:00Z", wantErr: "at most one"},
		{query: "follow=maybe", wantErr: "follow"},
	}
	for _, tc := range tests {
		t.Run(tc.query, func(t *testing.T) {
			q, _ := url.ParseQuery(tc.query)
			got, err := parseLogOptions(q, now)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one naming %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestParseCRIRecord(t *testing.T) {
	tests := []struct {
		line    string
		want    criRecord
		wantErr bool
	}{
		{line: "2026-01-02T03:04:05.123456789Z stdout F hello world",
			want: criRecord{time: time.Date(2026, 1, 2, 3, 4, 5, 123456789, time.UTC), stream: "stdout", text: []byte("hello world")}},
		{line: "2026-01-02T03:04:05Z stderr P part",
			want: criRecord{time: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), stream: "stderr", partial: true, text: []byte("part")}},
		{line: "2026-01-02T03:04:05Z stdout F",
			want: criRecord{time: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), stream: "stdout"}},
		{line: "2026-01-02T03:04:05Z stdout F  two  spaces ",
			want: criRecord{time: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), stream: "stdout", text: []byte(" two  spaces ")}},
		{line: "garbage", wantErr: true},
		{line: "notatime stdout F x", wantErr: true},
		{line: "2026-01-02T03:04:05Z stdin F x", wantErr: true},
		{line: "2026-01-02T03:04:05Z stdout X x", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.line, func(t *testing.T) {
			got, err := parseCRIRecord([]byte(tc.line))
			if tc.wantErr {
				if err == nil {
					t.Fatalf("no error, got %+v", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !got.time.Equal(tc.want.time) || got.stream != tc.want.stream || got.partial != tc.want.partial || string(got.text) != string(tc.want.text) {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

// testLog is a CRI log file: line N written at base+N seconds; line 3 in two
// partial records; one line that is not CRI.
const testLog = `2026-01-02T03:00:01Z stdout F one
2026-01-02T03:00:02Z stderr F two
2026-01-02T03:00:03Z stdout P thr
2026-01-02T03:00:03.5Z stdout F ee
not a cri line
2026-01-02T03:00:04Z stdout F four
`

func TestCopyLogsEndingMidLine(t *testing.T) {
	// "echo -n DONE; cat file-without-newline": the last output has no
	// newline, so the runtime wrote it as partial records only.
	file := filepath.Join(t.TempDir(), "0.log")
	log := "2026-01-02T03:00:01Z stdout F first\n2026-01-02T03:00:02Z stdout P DO\n2026-01-02T03:00:03Z stdout P NE\n"
	if err := os.WriteFile(file, []byte(log), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		opts logOptions
		want string
	}{
		{"all", logOptions{tail: -1, limitBytes: -1}, "first\nDONE"},
		{"tail 1", logOptions{tail: 1, limitBytes: -1}, "DONE"},
		{"follow", logOptions{tail: -1, limitBytes: -1, follow: true}, "first\nDONE"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			if err := copyLogs(context.Background(), file, tc.opts, &logWriter{w: &out, left: -1}, func() bool { return false }, time.Millisecond); err != nil {
				t.Fatal(err)
			}
			if out.String() != tc.want {
				t.Fatalf("got %q, want %q", out.String(), tc.want)
			}
		})
	}
}

func TestCopyLogs(t *testing.T) {
	file := filepath.Join(t.TempDir(), "0.log")
	if err := os.WriteFile(file, []byte(testLog), 0o644); err != nil {
		t.Fatal(err)
	}
	base := time.Date(2026, 1, 2, 3, 0, 0, 0, time.UTC)
	tests := []struct {
		name string
		opts logOptions
		want string
	}{
		{name: "all", opts: logOptions{tail: -1, limitBytes: -1}, want: "one\ntwo\nthree\nfour\n"},
		{name: "tail 2", opts: logOptions{tail: 2, limitBytes: -1}, want: "three\nfour\n"},
		{name: "tail 0", opts: logOptions{tail: 0, limitBytes: -1}, want: ""},
		{name: "tail more than there is", opts: logOptions{tail: 10, limitBytes: -1}, want: "one\ntwo\nthree\nfour\n"},
		{name: "since", opts: logOptions{tail: -1, limitBytes: -1, since: base.Add(2500 * time.Millisecond)}, want: "three\nfour\n"},
		{name: "limitBytes", opts: logOptions{tail: -1, limitBytes: 6}, want: "one\ntw"},
		{name: "timestamps", opts: logOptions{tail: 1, limitBytes: -1, timestamps: true}, want: "2026-01-02T03:00:04Z four\n"},
		{name: "timestamps of a joined line are its first record's", opts: logOptions{tail: 2, limitBytes: -1, timestamps: true},
			want: "2026-01-02T03:00:03Z three\n2026-01-02T03:00:04Z four\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			err := copyLogs(context.Background(), file, tc.opts, &logWriter{w: &out, left: tc.opts.limitBytes}, func() bool { return false }, time.Millisecond)
			if err != nil && err != errLimit {
				t.Fatal(err)
			}
			if out.String() != tc.want {
				t.Fatalf("got %q, want %q", out.String(), tc.want)
			}
		})
	}
}

// syncBuffer is a bytes.Buffer safe for a writer and a reader goroutine.
type syncBuffer struct {
	ch chan []byte
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.ch <- append([]byte(nil), p...)
	return len(p), nil
}

func TestCopyLogsFollow(t *testing.T) {
	file := filepath.Join(t.TempDir(), "0.log")
	if err := os.WriteFile(file, []byte(testLog), 0o644); err != nil {
		t.Fatal(err)
	}
	out := &syncBuffer{ch: make(chan []byte, 100)}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- copyLogs(ctx, file, logOptions{follow: true, tail: 1, limitBytes: -1}, &logWriter{w: out, left: -1},
			func() bool { return true }, 5*time.Millisecond)
	}()
	expect := func(want string) {
		t.Helper()
		select {
		case got := <-out.ch:
			if string(got) != want {
				t.Fatalf("got %q, want %q", got, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no %q", want)
		}
	}
	expect("four\n")
	f, err := os.OpenFile(file, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// A record written in two pieces is sent once whole.
	_, _ = f.WriteString("2026-01-02T03:00:05Z stdout F fi")
	time.Sleep(30 * time.Millisecond)
	_, _ = f.WriteString("ve\n")
	expect("five\n")
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestParseStreamOptions(t *testing.T) {
	tests := []struct {
		query   string
		exec    bool
		want    streamOptions
		wantErr string
	}{
		{query: "command=ls&command=-l&output=1&error=1", exec: true,
			want: streamOptions{command: []string{"ls", "-l"}, stdout: true, stderr: true}},
		{query: "command=sh&input=1&output=1&tty=1&error=1", exec: true,
			want: streamOptions{command: []string{"sh"}, stdin: true, stdout: true, tty: true}},
		{query: "command=sh&stdin=true&stdout=true", exec: true,
			want: streamOptions{command: []string{"sh"}, stdin: true, stdout: true}},
		{query: "output=1", want: streamOptions{stdout: true}},
		{query: "output=1", exec: true, wantErr: "command is required"},
		{query: "command=ls", exec: true, wantErr: "at least one"},
		{query: "command=ls&output=yes", exec: true, wantErr: "output"},
	}
	for _, tc := range tests {
		t.Run(tc.query, func(t *testing.T) {
			q, _ := url.ParseQuery(tc.query)
			got, err := parseStreamOptions(q, tc.exec)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestParsePorts(t *testing.T) {
	tests := []struct {
		query   string
		want    []int32
		wantErr bool
	}{
		{query: "", want: nil},
		{query: "port=80&port=8080", want: []int32{80, 8080}},
		{query: "port=0", wantErr: true},
		{query: "port=65536", wantErr: true},
		{query: "port=http", wantErr: true},
	}
	for _, tc := range tests {
		q, _ := url.ParseQuery(tc.query)
		got, err := parsePorts(q)
		if (err != nil) != tc.wantErr || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%q: got %v, %v", tc.query, got, err)
		}
	}
}

func TestParseProc(t *testing.T) {
	stat := "cpu  100 20 30 1000 5 6 7 8 0 0\ncpu0 50 10 15 500 2 3 3 4 0 0\nbtime 1700000000\n"
	usage, boot, err := parseProcStat([]byte(stat))
	if err != nil {
		t.Fatal(err)
	}
	// user+nice+system+irq+softirq+steal = 171 jiffies of 10 ms.
	if usage != 171*uint64(10*time.Millisecond) || boot.Unix() != 1700000000 {
		t.Fatalf("usage %d boot %v", usage, boot)
	}
	for _, bad := range []string{"", "cpu 1 2\n", "cpu a b c d e f g h\n"} {
		if _, _, err := parseProcStat([]byte(bad)); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
	mi, err := parseMeminfo([]byte("MemTotal:  1000 kB\nMemFree:   200 kB\nMemAvailable: 600 kB\nBuffers: 1 kB\n"))
	if err != nil || mi != (meminfo{total: 1024000, free: 204800, available: 614400}) {
		t.Fatalf("%+v %v", mi, err)
	}
	if _, err := parseMeminfo([]byte("MemTotal: 10 kB\n")); err == nil {
		t.Error("partial meminfo: no error")
	}
}

func TestResourceMetrics(t *testing.T) {
	at := metav1.NewTime(time.UnixMilli(1700000000123))
	sum := &statsapi.Summary{
		Node: statsapi.NodeStats{CPU: &statsapi.CPUStats{Time: at, UsageCoreNanoSeconds: u64(2_500_000_000)},
			Memory: &statsapi.MemoryStats{Time: at, WorkingSetBytes: u64(4096)}},
		Pods: []statsapi.PodStats{{
			PodRef: statsapi.PodReference{Name: `we"b`, Namespace: "default"},
			CPU:    &statsapi.CPUStats{Time: at, UsageCoreNanoSeconds: u64(1_000_000)},
			Memory: &statsapi.MemoryStats{Time: at, WorkingSetBytes: u64(100)},
			Containers: []statsapi.ContainerStats{{Name: "app", StartTime: metav1.NewTime(time.Unix(1700000000, 0)),
				CPU:    &statsapi.CPUStats{Time: at, UsageCoreNanoSeconds: u64(1_000_000)},
				Memory: &statsapi.MemoryStats{Time: at, WorkingSetBytes: u64(100)}}},
		}},
	}
	got := string(resourceMetrics(sum))
	for _, want := range []string{
		"# TYPE container_cpu_usage_seconds_total counter\n",
		`container_cpu_usage_seconds_total{container="app",namespace="default",pod="we\"b"} 0.001 1700000000123` + "\n",
		`container_memory_working_set_bytes{container="app",namespace="default",pod="we\"b"} 100 1700000000123` + "\n",
		`container_start_time_seconds{container="app",namespace="default",pod="we\"b"} 1.7e+09` + "\n",
		"node_cpu_usage_seconds_total 2.5 1700000000123\n",
		"node_memory_working_set_bytes 4096 1700000000123\n",
		`pod_cpu_usage_seconds_total{namespace="default",pod="we\"b"} 0.001 1700000000123` + "\n",
		`pod_memory_working_set_bytes{namespace="default",pod="we\"b"} 100 1700000000123` + "\n",
		"resource_scrape_error 0\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("missing %q in\n%s", want, got)
		}
	}
}

// testPKI is a CA with a client certificate and a stranger's (another CA's).
type testPKI struct {
	dir                  string
	caFile               string
	client, other, named tls.Certificate
}

func newCA(t *testing.T, cn string) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return c, key
}

func clientCert(t *testing.T, ca *x509.Certificate, caKey *ecdsa.PrivateKey, cn string) tls.Certificate {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func newPKI(t *testing.T) testPKI {
	dir := t.TempDir()
	ca, caKey := newCA(t, "kubelet-client-ca")
	other, otherKey := newCA(t, "other-ca")
	p := testPKI{dir: dir, caFile: filepath.Join(dir, "ca.crt"),
		client: clientCert(t, ca, caKey, "kube-apiserver-kubelet-client"),
		named:  clientCert(t, ca, caKey, "someone-else"),
		other:  clientCert(t, other, otherKey, "kube-apiserver-kubelet-client")}
	if err := os.WriteFile(p.caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

type staticSource struct{ pods []*v1.Pod }

func (s staticSource) Pods() []*v1.Pod       { return s.pods }
func (s staticSource) LogDir(*v1.Pod) string { return "" }
func (s staticSource) Runtime() Runtime      { return nil }

func TestAuthentication(t *testing.T) {
	pki := newPKI(t)
	srv, err := New(Config{Listen: "127.0.0.1:0", CertDir: filepath.Join(pki.dir, "serving"), ClientCAFile: pki.caFile,
		AuthorizedUsers: []string{"kube-apiserver-kubelet-client"}, NodeName: "node-a"},
		staticSource{pods: []*v1.Pod{{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "default"}}}}, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown(context.Background())

	// The generated serving certificate names the node and loopback.
	servingPEM, err := os.ReadFile(filepath.Join(pki.dir, "serving", selfSignedCert))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(servingPEM)
	get := func(certs []tls.Certificate, path string) (int, string) {
		t.Helper()
		c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, Certificates: certs, ServerName: "node-a"}}}
		resp, err := c.Get("https://" + srv.Addr().String() + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	tests := []struct {
		name  string
		certs []tls.Certificate
		path  string
		code  int
		body  string
	}{
		{name: "no certificate", path: "/pods", code: http.StatusUnauthorized},
		{name: "another CA's certificate", certs: []tls.Certificate{pki.other}, path: "/pods", code: -1},
		{name: "not an authorized user", certs: []tls.Certificate{pki.named}, path: "/pods", code: http.StatusForbidden},
		{name: "pods", certs: []tls.Certificate{pki.client}, path: "/pods", code: http.StatusOK, body: `"name":"p"`},
		{name: "healthz without runtime", certs: []tls.Certificate{pki.client}, path: "/healthz", code: http.StatusServiceUnavailable},
		{name: "logs of a missing pod", certs: []tls.Certificate{pki.client}, path: "/containerLogs/default/q/c", code: http.StatusNotFound},
		{name: "logs of a missing container", certs: []tls.Certificate{pki.client}, path: "/containerLogs/default/p/c", code: http.StatusNotFound},
		{name: "exec without runtime", certs: []tls.Certificate{pki.client}, path: "/exec/default/p/c?command=ls&output=1", code: http.StatusServiceUnavailable},
		{name: "exec without command", certs: []tls.Certificate{pki.client}, path: "/exec/default/p/c?output=1", code: http.StatusBadRequest},
		{name: "stats without runtime", certs: []tls.Certificate{pki.client}, path: "/stats/summary", code: http.StatusServiceUnavailable},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.code == -1 {
				// A certificate from an unknown CA fails the handshake, or
				// (Go's client sends none the server's CA list does not
				// name) the request is unauthenticated.
				c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, Certificates: tc.certs, ServerName: "node-a"}}}
				if resp, err := c.Get("https://" + srv.Addr().String() + tc.path); err == nil {
					resp.Body.Close()
					if resp.StatusCode != http.StatusUnauthorized {
						t.Fatalf("request with a foreign certificate answered %d", resp.StatusCode)
					}
				}
				return
			}
			code, body := get(tc.certs, tc.path)
			if code != tc.code || !strings.Contains(body, tc.body) {
				t.Fatalf("got %d %q, want %d with %q", code, body, tc.code, tc.body)
			}
		})
	}
}

func TestSelfSignedReused(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	c1, _, err := selfSigned(dir, "node-a", nil, now)
	if err != nil {
		t.Fatal(err)
	}
	first, _ := os.ReadFile(c1)
	if _, _, err := selfSigned(dir, "node-a", nil, now.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	again, _ := os.ReadFile(c1)
	if !bytes.Equal(first, again) {
		t.Fatal("a valid certificate was replaced")
	}
	// Near its end (or for another node name) it is replaced.
	if _, _, err := selfSigned(dir, "node-a", nil, now.Add(certValidity-time.Hour)); err != nil {
		t.Fatal(err)
	}
	renewed, _ := os.ReadFile(c1)
	if bytes.Equal(first, renewed) {
		t.Fatal("an expiring certificate was kept")
	}
}

func TestNewErrors(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.crt")
	_ = os.WriteFile(bad, []byte("not pem"), 0o644)
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{name: "no client CA", cfg: Config{CertDir: dir}, want: "client_ca_file is required"},
		{name: "missing client CA", cfg: Config{CertDir: dir, ClientCAFile: filepath.Join(dir, "nope")}, want: "client CA"},
		{name: "client CA not PEM", cfg: Config{CertDir: dir, ClientCAFile: bad}, want: "no PEM"},
	} {
		if _, err := New(tc.cfg, staticSource{}, hclog.NewNullLogger()); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
}
