package main

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/hashicorp/go-hclog"

	"github.com/edgehive/edgehive/cloud/cloudhub"
	"github.com/edgehive/edgehive/sdk"
)

const benchUsage = "usage: cloudhive bench nodes [-nodes N] [-pods N]\n"

func cmdBench(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, benchUsage)
		return 2
	}
	fs := flag.NewFlagSet("bench "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	nodes := fs.Int("nodes", 100, "simulated edge nodes")
	pods := fs.Int("pods", 10, "pods delivered to each node")
	addr := fs.String("addr", "", "(clients) cloudhub address")
	caDir := fs.String("ca-dir", "", "(clients) directory with the CA")
	switch args[0] {
	case "nodes", "nodes-clients":
	default:
		fmt.Fprint(stderr, benchUsage)
		return 2
	}
	if fs.Parse(args[1:]) != nil {
		return 2
	}
	if *nodes <= 0 || *pods <= 0 {
		fmt.Fprintln(stderr, "cloudhive bench: -nodes and -pods must be positive")
		return 2
	}
	var err error
	if args[0] == "nodes" {
		err = benchNodes(*nodes, *pods, stdout, stderr)
	} else {
		err = benchClients(*addr, *caDir, *nodes, *pods, os.Stdin, stdout)
	}
	if err != nil {
		fmt.Fprintf(stderr, "cloudhive bench: %v\n", err)
		return 1
	}
	return 0
}

// benchNodes runs cloudhub in this process and the simulated nodes in a
// child process, so that this process's RSS is cloudhub's alone. Each node
// gets `pods` pods with a resourceVersion (stop-and-wait per node), all nodes
// at once; the child measures each pod's delivery from the moment it was
// handed to Send (carried in the pod) to its arrival.
func benchNodes(nodes, pods int, stdout, stderr io.Writer) error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dir, err := os.MkdirTemp("", "cloudhive-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	ca, err := cloudhub.NewCA(time.Now())
	if err != nil {
		return err
	}
	keyDER, err := x509.MarshalECPrivateKey(ca.Key)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "ca.der"), ca.Cert.Raw, 0o600); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "ca.key"), keyDER, 0o600); err != nil {
		return err
	}
	server, _, _, err := ca.IssueServer([]net.IP{net.IPv4(127, 0, 0, 1)}, nil, time.Now())
	if err != nil {
		return err
	}
	cfg := cloudhub.DefaultConfig()
	cfg.KeepaliveTimeout = 10 * time.Minute
	cfg.NodeLimit = nodes
	hub, err := cloudhub.New(cfg, cloudhub.ServerTLS(server, ca.Pool()), hclog.NewNullLogger(), nil)
	if err != nil {
		return err
	}
	ln, err := cloudhub.Listen(ctx, "127.0.0.1:0", false)
	if err != nil {
		return err
	}
	served := make(chan error, 1)
	go func() { served <- hub.Serve(ctx, ln, &loggingHandler{logger: hclog.NewNullLogger()}) }()
	idle := settledRSS()

	exe, err := os.Executable()
	if err != nil {
		return err
	}
	child := exec.CommandContext(ctx, exe, "bench", "nodes-clients", "-addr", ln.Addr().String(), "-ca-dir", dir,
		"-nodes", strconv.Itoa(nodes), "-pods", strconv.Itoa(pods))
	child.Stderr = stderr
	toChild, err := child.StdinPipe()
	if err != nil {
		return err
	}
	fromChild, err := child.StdoutPipe()
	if err != nil {
		return err
	}
	if err := child.Start(); err != nil {
		return err
	}
	defer func() { _ = child.Process.Kill(); _ = child.Wait() }()
	lines := bufio.NewScanner(fromChild)
	start := time.Now()
	if !lines.Scan() || lines.Text() != "connected" {
		return fmt.Errorf("clients did not connect: %q", lines.Text())
	}
	for hub.Sessions() < nodes {
		if time.Since(start) > 5*time.Minute {
			return fmt.Errorf("%d of %d sessions", hub.Sessions(), nodes)
		}
		time.Sleep(10 * time.Millisecond)
	}
	connectTime := time.Since(start)
	connected := settledRSS()

	var wg sync.WaitGroup
	sendErr := make(chan error, nodes)
	for n := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			node := benchNode(n)
			for p := range pods {
				if err := hub.Send(ctx, node, benchPod(node, p)); err != nil {
					sendErr <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(sendErr)
	if err := <-sendErr; err != nil {
		return err
	}
	if !lines.Scan() {
		return errors.New("clients ended without a result")
	}
	var res struct {
		Received int     `json:"received"`
		P50      float64 `json:"p50_ms"`
		P99      float64 `json:"p99_ms"`
		Max      float64 `json:"max_ms"`
		AllMs    float64 `json:"all_ms"`
	}
	if err := json.Unmarshal(lines.Bytes(), &res); err != nil {
		return fmt.Errorf("clients' result %q: %w", lines.Text(), err)
	}
	loaded := settledRSS()
	_ = toChild.Close()
	out, _ := json.Marshal(map[string]any{
		"case": "nodes", "nodes": nodes, "pods_per_node": pods,
		"rss_bytes": loaded, "rss_idle_bytes": idle, "rss_connected_bytes": connected,
		"bytes_per_node": (loaded - idle) / int64(nodes),
		"connect_ms":     connectTime.Milliseconds(), "delivered": res.Received,
		"p50_ms": res.P50, "p99_ms": res.P99, "max_ms": res.Max, "all_delivered_ms": res.AllMs,
	})
	fmt.Fprintln(stdout, string(out))
	cancel()
	<-served
	return nil
}

func benchNode(n int) string { return fmt.Sprintf("bench-node-%05d", n) }

// benchPod is a pod insert of a typical size, stamped with its send time.
func benchPod(node string, p int) *sdk.Message {
	name := fmt.Sprintf("app-%d", p)
	m := sdk.NewMessage("").BuildRouter("edgecontroller", sdk.WireGroupResource, "node/"+node+"/default/pod/"+name, sdk.OpInsert)
	m.Header.ResourceVersion = strconv.Itoa(1000 + p)
	_ = m.FillBody(map[string]any{
		"apiVersion": "v1", "kind": "Pod",
		"metadata": map[string]any{"name": name, "namespace": "default", "uid": m.Header.ID,
			"resourceVersion": m.Header.ResourceVersion,
			"annotations":     map[string]string{"bench.edgehive.io/sent-unix-nano": strconv.FormatInt(time.Now().UnixNano(), 10)}},
		"spec": map[string]any{"nodeName": node, "containers": []map[string]any{{"name": "app", "image": "busybox:1.36",
			"command": []string{"sleep", "3600"}, "resources": map[string]any{"limits": map[string]string{"cpu": "100m", "memory": "64Mi"}}}}},
	})
	return m
}

// settledRSS is the resident set after a GC, in bytes.
func settledRSS() int64 {
	runtime.GC()
	debug.FreeOSMemory()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb * 1024
		}
	}
	return 0
}

// benchClients is the child: it connects the nodes, prints "connected", ACKs
// every pod, prints the latency figures once all arrived, and waits for its
// stdin to close.
func benchClients(addr, caDir string, nodes, pods int, stdin io.Reader, stdout io.Writer) error {
	caDER, err := os.ReadFile(filepath.Join(caDir, "ca.der"))
	if err != nil {
		return err
	}
	keyDER, err := os.ReadFile(filepath.Join(caDir, "ca.key"))
	if err != nil {
		return err
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		return err
	}
	caKey, err := x509.ParseECPrivateKey(keyDER)
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	pool.AddCert(caCert)

	var mu sync.Mutex
	var latencies []float64
	var first, last time.Time
	total := nodes * pods
	all := make(chan struct{})
	record := func(sent int64) {
		now := time.Now()
		mu.Lock()
		defer mu.Unlock()
		if first.IsZero() {
			first = now
		}
		latencies = append(latencies, float64(now.UnixNano()-sent)/1e6)
		last = now
		if len(latencies) == total {
			close(all)
		}
	}
	conns := make([]*websocket.Conn, nodes)
	sem := make(chan struct{}, 32)
	var wg sync.WaitGroup
	errc := make(chan error, nodes)
	for n := range nodes {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			conn, err := benchDial(addr, benchNode(n), pool, caCert, caKey)
			if err != nil {
				errc <- err
				return
			}
			conns[n] = conn
		}()
	}
	wg.Wait()
	close(errc)
	if err := <-errc; err != nil {
		return err
	}
	for _, c := range conns {
		go benchRead(c, pods, record)
	}
	fmt.Fprintln(stdout, "connected")
	select {
	case <-all:
	case <-time.After(10 * time.Minute):
		return errors.New("not every pod arrived in 10 minutes")
	}
	mu.Lock()
	slices.Sort(latencies)
	pct := func(p float64) float64 { return latencies[min(len(latencies)-1, int(p*float64(len(latencies))))] }
	out, _ := json.Marshal(map[string]any{"received": len(latencies), "p50_ms": pct(0.50), "p99_ms": pct(0.99),
		"max_ms": latencies[len(latencies)-1], "all_ms": float64(last.Sub(first).Microseconds()) / 1000})
	mu.Unlock()
	fmt.Fprintln(stdout, string(out))
	_, _ = io.Copy(io.Discard, stdin)
	for _, c := range conns {
		_ = c.Close()
	}
	return nil
}

func benchDial(addr, node string, pool *x509.CertPool, caCert *x509.Certificate, caKey *ecdsa.PrivateKey) (*websocket.Conn, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	csr := &x509.CertificateRequest{Subject: pkix.Name{CommonName: "system:node:" + node, Organization: []string{"system:nodes"}},
		PublicKey: &key.PublicKey}
	caObj := &cloudhub.CA{Cert: caCert, Key: caKey}
	der, err := caObj.SignNode(csr, nil, time.Hour, time.Now())
	if err != nil {
		return nil, err
	}
	d := websocket.Dialer{HandshakeTimeout: time.Minute, TLSClientConfig: &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool,
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}, ReadBufferSize: 4096, WriteBufferSize: 4096}
	h := http.Header{}
	h.Set("node_id", node)
	h.Set("project_id", "bench")
	h.Set("ConnectionUse", "msg")
	conn, resp, err := d.Dial("wss://"+addr+"/bench/"+node+"/events", h)
	if resp != nil && resp.Body != nil {
		_ = resp.Body.Close()
	}
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", node, err)
	}
	ka, _ := json.Marshal(sdk.NewMessage("").BuildRouter("websocket", sdk.WireGroupResource, "node", sdk.OpKeepalive))
	if err := conn.WriteMessage(websocket.TextMessage, ka); err != nil {
		return nil, err
	}
	return conn, nil
}

// benchRead ACKs each pod once and records its delivery time.
func benchRead(conn *websocket.Conn, pods int, record func(sent int64)) {
	seen := map[string]bool{}
	for len(seen) < pods {
		_, data, err := conn.ReadMessage()
		if err != nil {
			return
		}
		var m struct {
			Header  sdk.MessageHeader `json:"header"`
			Route   sdk.MessageRoute  `json:"route"`
			Content struct {
				Metadata struct{ Annotations map[string]string }
			} `json:"content"`
		}
		if json.Unmarshal(data, &m) != nil {
			continue
		}
		ack := sdk.NewMessage(m.Header.ID).BuildRouter("metamanager", m.Route.Group, m.Route.Resource, sdk.OpResponse)
		_ = ack.FillBody(sdk.AckContent)
		b, _ := json.Marshal(ack)
		if conn.WriteMessage(websocket.TextMessage, b) != nil {
			return
		}
		if seen[m.Header.ID] {
			continue
		}
		seen[m.Header.ID] = true
		sent, _ := strconv.ParseInt(m.Content.Metadata.Annotations["bench.edgehive.io/sent-unix-nano"], 10, 64)
		record(sent)
	}
}
