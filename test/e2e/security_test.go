//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/edgehive/edgehive/internal/e2eenv"
)

// projectID is KubeEdge's default; the cloud does not check the path.
const projectID = "e632aba927ea4ac2b575ec1603d56f10"

// wrongSignature keeps the token's CA hash and JWT header and claims but
// replaces the signature, so only the certificate service can tell.
func wrongSignature(t *testing.T, token string) string {
	t.Helper()
	i := strings.LastIndexByte(token, '.')
	if i < 0 || strings.Count(token, ".") != 3 {
		t.Fatalf("token %q is not <hash>.<JWT>", token)
	}
	return token[:i+1] + base64.RawURLEncoding.EncodeToString(bytes.Repeat([]byte{0x5a}, 32))
}

// dialCloudhub opens the KubeEdge websocket as node with the given client
// certificate, trusting the cloud CA at caFile.
func dialCloudhub(ctx context.Context, cloud *e2eenv.Cloudhive, node, caFile string, cert tls.Certificate) (*websocket.Conn, error) {
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("no certificate in %s", caFile)
	}
	d := websocket.Dialer{
		HandshakeTimeout: 10 * time.Second,
		TLSClientConfig:  &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
	}
	h := http.Header{}
	h.Set("node_id", node)
	h.Set("project_id", projectID)
	h.Set("ConnectionUse", "msg")
	url := fmt.Sprintf("wss://%s/%s/%s/events", net.JoinHostPort("127.0.0.1", fmt.Sprint(cloud.CloudPort())), projectID, node)
	conn, resp, err := d.DialContext(ctx, url, h)
	if resp != nil && resp.Body != nil {
		resp.Body.Close()
	}
	if err != nil {
		status := ""
		if resp != nil {
			status = " (" + resp.Status + ")"
		}
		return nil, fmt.Errorf("dial %s%s: %w", url, status, err)
	}
	return conn, nil
}

// pinger reads the connection (so control frames are handled) and reports
// pongs and the read error that ends it.
type pinger struct {
	conn   *websocket.Conn
	pongs  chan struct{}
	closed chan error
}

func newPinger(conn *websocket.Conn) *pinger {
	p := &pinger{conn: conn, pongs: make(chan struct{}, 8), closed: make(chan error, 1)}
	conn.SetPongHandler(func(string) error {
		select {
		case p.pongs <- struct{}{}:
		default:
		}
		return nil
	})
	go func() {
		for {
			if _, _, err := conn.ReadMessage(); err != nil {
				p.closed <- err
				return
			}
		}
	}()
	return p
}

// alive sends a ping and waits for its pong: the peer still reads this
// connection.
func (p *pinger) alive(timeout time.Duration) error {
	if err := p.conn.WriteControl(websocket.PingMessage, []byte("e2e"), time.Now().Add(timeout)); err != nil {
		return fmt.Errorf("ping: %w", err)
	}
	select {
	case <-p.pongs:
		return nil
	case err := <-p.closed:
		return fmt.Errorf("connection closed: %w", err)
	case <-time.After(timeout):
		return fmt.Errorf("no pong within %s", timeout)
	}
}

// TestCloudhubRefusesBadPeers: a wrong token gets no certificate, a client
// certificate from another CA gets no connection, and a malformed or
// oversized frame crashes nothing: cloudhive stays healthy and the live edge
// keeps working.
func TestCloudhubRefusesBadPeers(t *testing.T) {
	// Not parallel: every edge here shares one containerd, and an edged
	// owns all the pods in it (it removes the others' sandboxes as orphans).
	e := e2eenv.NewEnv(t, false)
	live := e.StartEdge("live")
	// A second node that is joined (it holds a real node certificate) but
	// never started: the test speaks for it on the websocket.
	probe := e2eenv.JoinEdge(t, e.Bin, e.Cloud, e.Token, e2eenv.NodeName("probe"), e.Containerd)
	certsDir := filepath.Join(probe.DataDir, "certs")
	caFile := filepath.Join(certsDir, "ca.crt")
	nodeCert, err := tls.LoadX509KeyPair(filepath.Join(certsDir, "node.crt"), filepath.Join(certsDir, "node.key"))
	if err != nil {
		t.Fatalf("the joined node's certificate: %v", err)
	}

	t.Run("wrong token refused", func(t *testing.T) {
		for name, tok := range map[string]string{
			"bad signature": wrongSignature(t, e.Token),
			"bad CA hash":   strings.Repeat("0", 64) + e.Token[strings.IndexByte(e.Token, '.'):],
			"not a token":   "not-a-token",
		} {
			node := e2eenv.NodeName("badtoken")
			dir := t.TempDir()
			out, err := e2eenv.Join(e.Ctx(60*time.Second), e.Bin, e2eenv.JoinOptions{
				Cloud: e.Cloud, Token: tok, Node: node,
				ConfigFile: filepath.Join(dir, "edgehive.hcl"), DataDir: filepath.Join(dir, "data"),
			})
			if err == nil {
				t.Errorf("%s: join succeeded: %s", name, out)
			}
			if _, serr := os.Stat(filepath.Join(dir, "data", "certs", "node.crt")); serr == nil {
				t.Errorf("%s: a node certificate was written", name)
			}
			if _, serr := os.Stat(filepath.Join(dir, "edgehive.hcl")); serr == nil {
				t.Errorf("%s: a config was written", name)
			}
		}
		if _, err := e.Client.CoreV1().Nodes().Get(e.Ctx(10*time.Second), e2eenv.NodeName("badtoken"), metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("a node with a wrong token exists in the API (get: %v)", err)
		}
	})

	t.Run("client certificate from another CA refused", func(t *testing.T) {
		dir := t.TempDir()
		other, err := e2eenv.NewCA(dir, "other")
		if err != nil {
			t.Fatal(err)
		}
		files, err := other.Issue(dir, "forged", e2eenv.CertSpec{
			CommonName: "system:node:" + probe.Node, Organization: []string{"system:nodes"}, Client: true,
		})
		if err != nil {
			t.Fatal(err)
		}
		forged, err := tls.LoadX509KeyPair(files.CertFile, files.KeyFile)
		if err != nil {
			t.Fatal(err)
		}
		conn, err := dialCloudhub(e.Ctx(20*time.Second), e.Cloud, probe.Node, caFile, forged)
		if err == nil {
			// Some servers finish the handshake and then drop the link:
			// it must not stay usable.
			p := newPinger(conn)
			aerr := p.alive(5 * time.Second)
			conn.Close()
			if aerr == nil {
				t.Fatal("a client certificate from another CA got a working connection")
			}
		}
		// The same dial with the node's real certificate works, so the CA is
		// what was refused.
		conn, err = dialCloudhub(e.Ctx(20*time.Second), e.Cloud, probe.Node, caFile, nodeCert)
		if err != nil {
			t.Fatalf("with the real node certificate: %v", err)
		}
		p := newPinger(conn)
		if err := p.alive(10 * time.Second); err != nil {
			t.Fatalf("with the real node certificate: %v", err)
		}
		conn.Close()
	})

	t.Run("malformed and oversized frames", func(t *testing.T) {
		conn, err := dialCloudhub(e.Ctx(20*time.Second), e.Cloud, probe.Node, caFile, nodeCert)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		p := newPinger(conn)
		if err := p.alive(10 * time.Second); err != nil {
			t.Fatal(err)
		}
		for _, bad := range [][]byte{[]byte("{not json"), []byte(`{"header":42}`), {0xff, 0xfe, 0x00}} {
			if err := conn.WriteMessage(websocket.TextMessage, bad); err != nil {
				t.Fatalf("write malformed frame: %v", err)
			}
		}
		// Malformed frames are dropped; the connection stays.
		if err := p.alive(10 * time.Second); err != nil {
			t.Fatalf("after malformed frames: %v", err)
		}
		// An oversized frame is refused: the cloud closes the link rather
		// than buffer it, and does not fall over.
		big := bytes.Repeat([]byte("x"), 64<<20)
		_ = conn.SetWriteDeadline(time.Now().Add(30 * time.Second))
		werr := conn.WriteMessage(websocket.TextMessage, big)
		select {
		case <-p.closed:
		case <-time.After(30 * time.Second):
			t.Errorf("cloudhive kept the connection after a %d MiB frame (write: %v)", len(big)>>20, werr)
		}
		if exited, err := e.Cloud.Exited(); exited {
			t.Fatalf("cloudhive exited after bad frames: %v", err)
		}
		if err := e.Cloud.WaitHealthy(e.Ctx(10 * time.Second)); err != nil {
			t.Fatal(err)
		}
		// A new connection is served again.
		conn2, err := dialCloudhub(e.Ctx(20*time.Second), e.Cloud, probe.Node, caFile, nodeCert)
		if err != nil {
			t.Fatalf("after an oversized frame: %v", err)
		}
		if err := newPinger(conn2).alive(10 * time.Second); err != nil {
			t.Fatalf("after an oversized frame: %v", err)
		}
		conn2.Close()
	})

	t.Run("live edge unaffected", func(t *testing.T) {
		e := e.Sub(t)
		if exited, err := live.Exited(); exited {
			t.Fatalf("the live edge exited: %v", err)
		}
		p := e.CreatePod("after-bad-peers", live.Node, e2eenv.PodOptions{})
		e.WaitRunning(p.Name, 90*time.Second)
		e.DeletePod(p.Name)
		e.WaitDeleted(p, 60*time.Second)
	})
}
