package edgehub

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgehive/edgehive/sdk/sdktest"
)

const testJWT = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJleHAiOjE3MjI5NTAwMDB9.c2lnbmF0dXJl"

// newCertService is the cloud's certificate service: /ca.crt and /edge.crt.
func newCertService(t *testing.T, p *testPKI) *httptest.Server {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ca.crt", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write(p.ca.Raw) })
	mux.HandleFunc("GET /edge.crt", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+testJWT {
			http.Error(w, "bad token", http.StatusUnauthorized)
			return
		}
		body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		csr, err := x509.ParseCertificateRequest(body)
		if err != nil || csr.CheckSignature() != nil {
			http.Error(w, "bad csr", http.StatusInternalServerError)
			return
		}
		node := r.Header.Get("NodeName")
		if csr.Subject.CommonName != "system:node:"+node || len(csr.Subject.Organization) != 1 || csr.Subject.Organization[0] != "system:nodes" {
			http.Error(w, "bad subject "+csr.Subject.String(), http.StatusInternalServerError)
			return
		}
		der := p.sign(t, &x509.Certificate{Subject: csr.Subject, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}, csr.PublicKey)
		_, _ = w.Write(der)
	})
	srv := httptest.NewUnstartedServer(mux)
	srv.TLS = &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{p.server}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

func tokenFor(p *testPKI, jwt string) string {
	sum := sha256.Sum256(p.ca.Raw)
	return hex.EncodeToString(sum[:]) + "." + jwt
}

func TestBootstrap(t *testing.T) {
	p := newPKI(t)
	srv := newCertService(t, p)
	dir := t.TempDir()
	ca, crt, key := filepath.Join(dir, "ca", "rootCA.crt"), filepath.Join(dir, "certs", "server.crt"), filepath.Join(dir, "certs", "server.key")
	ctx := context.Background()
	if err := Bootstrap(ctx, srv.URL, tokenFor(p, testJWT), "edge-1", ca, crt, key); err != nil {
		t.Fatal(err)
	}
	for path, mode := range map[string]os.FileMode{ca: 0o644, crt: 0o644, key: 0o600} {
		st, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != mode {
			t.Errorf("%s mode %v, want %v", path, st.Mode().Perm(), mode)
		}
	}
	pair, err := tls.LoadX509KeyPair(crt, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(pair.Certificate[0])
	if leaf.Subject.CommonName != "system:node:edge-1" {
		t.Fatalf("CN %q", leaf.Subject.CommonName)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: p.pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatal(err)
	}
	caPEM, _ := os.ReadFile(ca)
	if !strings.HasPrefix(string(caPEM), "-----BEGIN CERTIFICATE-----") {
		t.Fatalf("CA file %q", caPEM)
	}
	keyPEM, _ := os.ReadFile(key)
	if !strings.HasPrefix(string(keyPEM), "-----BEGIN EC PRIVATE KEY-----") {
		t.Fatal("key is not an EC PRIVATE KEY PEM")
	}
}

func TestBootstrapRefusals(t *testing.T) {
	p := newPKI(t)
	srv := newCertService(t, p)
	other := newPKI(t)
	for name, tt := range map[string]struct{ token, want string }{
		"malformed token":    {"abc", "token"},
		"upper-case hash":    {strings.ToUpper(tokenFor(p, testJWT)[:64]) + "." + testJWT, "hex"},
		"CA hash mismatch":   {tokenFor(other, testJWT), "does not match"},
		"rejected signature": {tokenFor(p, "a.b.c"), "401"},
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			err := Bootstrap(context.Background(), srv.URL, tt.token, "edge-1",
				filepath.Join(dir, "ca.crt"), filepath.Join(dir, "n.crt"), filepath.Join(dir, "n.key"))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
			if _, err := os.Stat(filepath.Join(dir, "n.crt")); err == nil {
				t.Fatal("a certificate was written")
			}
		})
	}
}

// With a token and no certificate the module bootstraps before dialling.
func TestModuleBootstraps(t *testing.T) {
	p := newPKI(t)
	certSrv := newCertService(t, p)
	cloud := newFakeCloud(t, p)
	dir := t.TempDir()
	m := New()
	m.minBackoff, m.maxBackoff = 20*time.Millisecond, 200*time.Millisecond
	cfg := `{"server":"` + cloud.addr() + `","https_server":"` + certSrv.URL + `","token":"` + tokenFor(p, testJWT) +
		`","tls_ca_file":"` + filepath.Join(dir, "ca.crt") + `","tls_cert_file":"` + filepath.Join(dir, "n.crt") +
		`","tls_private_key_file":"` + filepath.Join(dir, "n.key") + `"}`
	h := sdktest.New(t, m, sdktest.Options{ConfigJSON: cfg})
	cc := cloud.accept(t)
	if cc.cn != "system:node:"+node {
		t.Fatalf("client CN %q", cc.cn)
	}
	waitSent(t, h, "connected", event(moduleMeta, cloudConnected, 1))
}
