package edgehub

import (
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/edgehive/edgehive/internal/testenv"
	"github.com/edgehive/edgehive/sdk"
)

// testPKI is the cloud CA of the tests.
type testPKI struct{ *testenv.PKI }

func newPKI(t *testing.T) *testPKI { return &testPKI{testenv.NewPKI(t)} }

func newKey(t *testing.T) *ecdsa.PrivateKey { return testenv.NewKey(t) }

func (p *testPKI) sign(t testing.TB, tmpl *x509.Certificate, pub any) []byte {
	return p.Sign(t, tmpl, pub)
}

// nodeFiles writes the CA and a node certificate and key; it returns a config
// JSON fragment naming them.
func (p *testPKI) nodeFiles(t *testing.T, node string) string {
	t.Helper()
	dir := t.TempDir()
	key := newKey(t)
	der := p.sign(t, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "system:node:" + node, Organization: []string{"system:nodes"}},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, &key.PublicKey)
	keyDER, _ := x509.MarshalECPrivateKey(key)
	write := func(name, typ string, b []byte) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: b}), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	ca := write("ca.crt", "CERTIFICATE", p.CA.Raw)
	crt := write("node.crt", "CERTIFICATE", der)
	k := write("node.key", "EC PRIVATE KEY", keyDER)
	return `"tls_ca_file":"` + ca + `","tls_cert_file":"` + crt + `","tls_private_key_file":"` + k + `"`
}

// fakeCloud is a minimal cloudhub: TLS with required client certificates,
// upgrading every request to a websocket.
type fakeCloud struct {
	t      *testing.T
	srv    *httptest.Server
	conns  chan *cloudConn
	silent bool        // do not read: no pongs, no frames consumed
	refuse atomic.Bool // answer 503 instead of upgrading
}

type cloudConn struct {
	ws     *websocket.Conn
	header http.Header
	path   string
	cn     string
	serial string            // of the client certificate
	frames chan *sdk.Message // every frame but keepalives
	keeps  chan *sdk.Message
	closed chan struct{}
}

func newFakeCloud(t *testing.T, p *testPKI) *fakeCloud {
	c := &fakeCloud{t: t, conns: make(chan *cloudConn, 16)}
	up := websocket.Upgrader{}
	c.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if c.refuse.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		cc := &cloudConn{ws: ws, header: r.Header.Clone(), path: r.URL.Path,
			frames: make(chan *sdk.Message, 100), keeps: make(chan *sdk.Message, 100), closed: make(chan struct{})}
		if len(r.TLS.PeerCertificates) > 0 {
			cc.cn = r.TLS.PeerCertificates[0].Subject.CommonName
			cc.serial = r.TLS.PeerCertificates[0].SerialNumber.String()
		}
		c.conns <- cc
		if c.silent {
			return
		}
		go func() {
			defer close(cc.closed)
			for {
				_, data, err := ws.ReadMessage()
				if err != nil {
					return
				}
				var m sdk.Message
				if err := json.Unmarshal(data, &m); err != nil {
					t.Errorf("cloud got a bad frame %q", data)
					return
				}
				if strings.Contains(string(data), `"sync"`) {
					t.Errorf("header.sync on the wire: %s", data)
				}
				if m.Router.Operation == sdk.OpKeepalive {
					cc.keeps <- &m
				} else {
					cc.frames <- &m
				}
			}
		}()
	}))
	c.srv.TLS = &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{p.Server},
		ClientCAs: p.Pool, ClientAuth: tls.RequireAndVerifyClientCert}
	c.srv.StartTLS()
	t.Cleanup(c.srv.Close)
	return c
}

func (c *fakeCloud) addr() string { return strings.TrimPrefix(c.srv.URL, "https://") }

func (c *fakeCloud) accept(t *testing.T) *cloudConn {
	t.Helper()
	select {
	case cc := <-c.conns:
		return cc
	case <-time.After(10 * time.Second):
		t.Fatal("the edge did not connect")
		return nil
	}
}

func (cc *cloudConn) send(t *testing.T, m *sdk.Message) {
	t.Helper()
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	if err := cc.ws.WriteMessage(websocket.TextMessage, append(b, '\n')); err != nil {
		t.Fatal(err)
	}
}

func (cc *cloudConn) next(t *testing.T) *sdk.Message {
	t.Helper()
	select {
	case m := <-cc.frames:
		return m
	case <-time.After(10 * time.Second):
		t.Fatal("no frame from the edge")
		return nil
	}
}
