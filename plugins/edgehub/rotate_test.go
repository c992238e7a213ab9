package edgehub

import (
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/edgehive/edgehive/sdk/sdktest"
)

// renewService is the cloud's certificate service as KubeEdge's cloudhub runs
// it for renewals: a client certificate that chains to the CA with
// clientAuth, O system:nodes and CN system:node:<NodeName> authenticates the
// request; without one, the bearer token must match.
type renewService struct {
	p          *testPKI
	srv        *httptest.Server
	jwt        string
	lifetime   time.Duration // of the certificates it signs
	refuseCert atomic.Bool   // as if client-certificate renewal were off
	byCert     atomic.Int32
	byToken    atomic.Int32
}

func newRenewService(t *testing.T, p *testPKI, jwt string) *renewService {
	rs := &renewService{p: p, jwt: jwt, lifetime: time.Hour}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /edge.crt", func(w http.ResponseWriter, r *http.Request) {
		node := r.Header.Get("NodeName")
		switch {
		case len(r.TLS.PeerCertificates) > 0 && !rs.refuseCert.Load():
			peer := r.TLS.PeerCertificates[0]
			if peer.Subject.CommonName != "system:node:"+node || len(peer.Subject.Organization) == 0 || peer.Subject.Organization[0] != "system:nodes" {
				http.Error(w, "certificate is not this node's", http.StatusUnauthorized)
				return
			}
			rs.byCert.Add(1)
		case r.Header.Get("Authorization") == "Bearer "+rs.jwt:
			rs.byToken.Add(1)
		default:
			http.Error(w, "unauthorised", http.StatusUnauthorized)
			return
		}
		body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		csr, err := x509.ParseCertificateRequest(body)
		if err != nil || csr.CheckSignature() != nil || csr.Subject.CommonName != "system:node:"+node {
			http.Error(w, "bad csr", http.StatusInternalServerError)
			return
		}
		_, _ = w.Write(signFor(t, p, csr.Subject, csr.PublicKey, time.Now(), rs.lifetime))
	})
	rs.srv = httptest.NewUnstartedServer(mux)
	rs.srv.TLS = &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{p.Server},
		ClientCAs: p.Pool, ClientAuth: tls.VerifyClientCertIfGiven}
	rs.srv.StartTLS()
	t.Cleanup(rs.srv.Close)
	return rs
}

var testSerial atomic.Int64

// signFor issues a node certificate valid from notBefore for life.
func signFor(t testing.TB, p *testPKI, subj pkix.Name, pub any, notBefore time.Time, life time.Duration) []byte {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(5000 + testSerial.Add(1)), Subject: subj,
		NotBefore: notBefore, NotAfter: notBefore.Add(life),
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.CA, pub, p.CAKey)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// jwtWithExp is a syntactically valid JWT whose exp claim is exp.
func jwtWithExp(exp time.Time) string {
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(`{"alg":"HS256","typ":"JWT"}`)) + "." + enc([]byte(fmt.Sprintf(`{"exp":%d}`, exp.Unix()))) + "." + enc([]byte("sig"))
}

type certFiles struct{ ca, cert, key string }

// shortLivedFiles writes the CA and a node certificate valid from now for life.
func shortLivedFiles(t *testing.T, p *testPKI, life time.Duration) certFiles {
	t.Helper()
	dir := t.TempDir()
	key := newKey(t)
	der := signFor(t, p, pkix.Name{CommonName: "system:node:" + node, Organization: []string{"system:nodes"}}, &key.PublicKey, time.Now(), life)
	keyDER, _ := x509.MarshalECPrivateKey(key)
	f := certFiles{ca: filepath.Join(dir, "ca.crt"), cert: filepath.Join(dir, "node.crt"), key: filepath.Join(dir, "node.key")}
	for path, blk := range map[string]*pem.Block{
		f.ca: {Type: "CERTIFICATE", Bytes: p.CA.Raw}, f.cert: {Type: "CERTIFICATE", Bytes: der}, f.key: {Type: "EC PRIVATE KEY", Bytes: keyDER},
	} {
		if err := os.WriteFile(path, pem.EncodeToMemory(blk), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

func leafOf(t *testing.T, f certFiles) *x509.Certificate {
	t.Helper()
	pair, err := tls.LoadX509KeyPair(f.cert, f.key)
	if err != nil {
		t.Fatalf("the stored pair does not load: %v", err)
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	return leaf
}

func TestCertificateRotation(t *testing.T) {
	tests := []struct {
		name       string
		refuseCert bool
		token      string
		byCert     int32
		byToken    int32
	}{
		{name: "with the current certificate", byCert: 1},
		{name: "token fallback when the certificate is refused", refuseCert: true, token: "valid", byToken: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newPKI(t)
			cloud := newFakeCloud(t, p)
			jwt := jwtWithExp(time.Now().Add(time.Hour))
			rs := newRenewService(t, p, jwt)
			rs.refuseCert.Store(tt.refuseCert)
			files := shortLivedFiles(t, p, 4*time.Second)
			old := leafOf(t, files)
			token := ""
			if tt.token != "" {
				token = p.Token(jwt)
			}
			m := New()
			m.minBackoff, m.maxBackoff = 20*time.Millisecond, 200*time.Millisecond
			m.rotateFraction = func() float64 { return 0.5 } // renew 2 s in
			cfg := fmt.Sprintf(`{"server":%q,"https_server":%q,"token":%q,"tls_ca_file":%q,"tls_cert_file":%q,"tls_private_key_file":%q}`,
				cloud.addr(), rs.srv.URL, token, files.ca, files.cert, files.key)
			h := sdktest.New(t, m, sdktest.Options{ConfigJSON: cfg})

			first := cloud.accept(t)
			if first.serial != old.SerialNumber.String() {
				t.Fatalf("first connection with serial %s, want %s", first.serial, old.SerialNumber)
			}
			waitSent(t, h, "connected", event(moduleMeta, cloudConnected, 1))
			second := cloud.accept(t) // after the renewal, with the new certificate
			renewed := leafOf(t, files)
			if renewed.SerialNumber.Cmp(old.SerialNumber) == 0 || second.serial != renewed.SerialNumber.String() {
				t.Fatalf("reconnected with serial %s; stored %s; old %s", second.serial, renewed.SerialNumber, old.SerialNumber)
			}
			if renewed.NotAfter.Sub(renewed.NotBefore) != time.Hour || renewed.Subject.CommonName != "system:node:"+node {
				t.Fatalf("renewed certificate %s valid %s", renewed.Subject, renewed.NotAfter.Sub(renewed.NotBefore))
			}
			waitSent(t, h, "disconnected for the new certificate", event(moduleMeta, cloudDisconnected, 1))
			waitSent(t, h, "connected again", event(moduleMeta, cloudConnected, 2))
			if rs.byCert.Load() != tt.byCert || rs.byToken.Load() != tt.byToken || m.rotations.Load() != 1 {
				t.Fatalf("renewals: by certificate %d, by token %d, rotations %d", rs.byCert.Load(), rs.byToken.Load(), m.rotations.Load())
			}
			if _, err := os.Stat(files.cert + nextCertSuffix); !os.IsNotExist(err) {
				t.Fatalf("leftover %s: %v", files.cert+nextCertSuffix, err)
			}
			if st, _ := os.Stat(files.key); st.Mode().Perm() != 0o600 {
				t.Fatalf("key mode %v", st.Mode().Perm())
			}
		})
	}
}

// Refused renewals (no token, or an expired one) change nothing on disk and
// are retried; the link stays up on the old certificate meanwhile.
func TestCertificateRotationRefused(t *testing.T) {
	p := newPKI(t)
	cloud := newFakeCloud(t, p)
	rs := newRenewService(t, p, "never")
	rs.refuseCert.Store(true)
	files := shortLivedFiles(t, p, 3*time.Second)
	before, _ := os.ReadFile(files.cert)
	expired := p.Token(jwtWithExp(time.Now().Add(-time.Minute)))
	m := New()
	m.rotateFraction = func() float64 { return 0.1 }
	cfg := fmt.Sprintf(`{"server":%q,"https_server":%q,"token":%q,"tls_ca_file":%q,"tls_cert_file":%q,"tls_private_key_file":%q}`,
		cloud.addr(), rs.srv.URL, expired, files.ca, files.cert, files.key)
	h := sdktest.New(t, m, sdktest.Options{ConfigJSON: cfg})
	cloud.accept(t)
	waitSent(t, h, "connected", event(moduleMeta, cloudConnected, 1))
	time.Sleep(1500 * time.Millisecond) // past the renewal point, one failed attempt
	after, _ := os.ReadFile(files.cert)
	if string(before) != string(after) || m.rotations.Load() != 0 || rs.byToken.Load() != 0 {
		t.Fatalf("a refused renewal changed the certificate (rotations %d, by token %d)", m.rotations.Load(), rs.byToken.Load())
	}
	if countEvents(h, moduleMeta, cloudDisconnected) != 0 {
		t.Fatal("the link was dropped although nothing was renewed")
	}
}

func TestTokenExpired(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	for _, tt := range []struct {
		jwt  string
		want bool
	}{
		{jwtWithExp(now.Add(time.Second)), false},
		{jwtWithExp(now), true},
		{jwtWithExp(now.Add(-time.Hour)), true},
		{"a.b.c", false}, // unreadable: the server decides
		{"abc", false},
	} {
		if got := tokenExpired(tt.jwt, now); got != tt.want {
			t.Errorf("tokenExpired(%s) = %v, want %v", tt.jwt, got, tt.want)
		}
	}
}

// A renewal interrupted after the new key was put in place leaves the new
// certificate at <cert>.next; loading finishes it.
func TestInterruptedRenewalRecovered(t *testing.T) {
	p := newPKI(t)
	files := shortLivedFiles(t, p, time.Hour)
	key := newKey(t)
	der := signFor(t, p, pkix.Name{CommonName: "system:node:" + node, Organization: []string{"system:nodes"}}, &key.PublicKey, time.Now(), time.Hour)
	keyDER, _ := x509.MarshalECPrivateKey(key)
	if err := writePEM(files.cert+nextCertSuffix, "CERTIFICATE", der, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := writePEM(files.key, "EC PRIVATE KEY", keyDER, 0o600); err != nil {
		t.Fatal(err)
	}
	m := New()
	m.cfg = defaultConfig()
	m.cfg.TLSCertFile, m.cfg.TLSPrivateKeyFile = files.cert, files.key
	m.logger = hclog.NewNullLogger()
	pair, err := m.loadNodeCert()
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(pair.Certificate[0])
	if leaf.SerialNumber.Cmp(leafOf(t, files).SerialNumber) != 0 {
		t.Fatal("the recovered certificate is not the one in place")
	}
	if _, err := os.Stat(files.cert + nextCertSuffix); !os.IsNotExist(err) {
		t.Fatal("the .next file is still there")
	}
}
