package edgehub

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgehive/edgehive/internal/testenv"
	"github.com/edgehive/edgehive/sdk/sdktest"
)

const testJWT = testenv.TestJWT

func newCertService(t *testing.T, p *testPKI) *httptest.Server { return p.CertService(t) }

func tokenFor(p *testPKI, jwt string) string { return p.Token(jwt) }

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
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: p.Pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
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
