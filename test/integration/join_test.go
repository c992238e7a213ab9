package integration

import (
	"crypto/x509"
	"encoding/pem"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgehive/edgehive/internal/testenv"
)

func TestJoinBootstrapsCertificateAndWritesAValidConfig(t *testing.T) {
	p := testenv.NewPKI(t)
	srv := p.CertService(t)
	u, _ := url.Parse(srv.URL)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "etc", "edgehive.hcl")
	data := filepath.Join(dir, "data")
	join := func(token string, extra ...string) (string, error) {
		args := append([]string{"join", "-cloud", "127.0.0.1", "-https-port", u.Port(), "-token", token,
			"-node", "edge-7", "-config", cfg, "-data-dir", data}, extra...)
		out, err := exec.Command(edgehiveBin(), args...).CombinedOutput()
		return string(out), err
	}

	if out, err := join(p.Token("not.a-valid.jwt")); err == nil || !strings.Contains(out, "certificate") {
		t.Fatalf("a wrong token was accepted: %v\n%s", err, out)
	}
	if _, err := os.Stat(cfg); err == nil {
		t.Fatal("a failed join wrote a config")
	}
	if out, err := join(p.Token(testenv.TestJWT)); err != nil {
		t.Fatalf("join: %v\n%s", err, out)
	}
	raw, err := os.ReadFile(filepath.Join(data, "certs", "node.crt"))
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(raw)
	if block == nil {
		t.Fatal("node.crt is not PEM")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: p.Pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil || cert.Subject.CommonName != "system:node:edge-7" {
		t.Fatalf("node certificate %s: %v", cert.Subject, err)
	}
	if fi, err := os.Stat(filepath.Join(data, "certs", "node.key")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("node key mode: %v %v", fi.Mode(), err)
	}
	out, err := exec.Command(edgehiveBin(), "validate", "-config", cfg).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "configuration is valid: 6 plugins") {
		t.Fatalf("the written config does not validate: %v\n%s", err, out)
	}
	written, _ := os.ReadFile(cfg)
	if !strings.Contains(string(written), `server               = "127.0.0.1:10000"`) || !strings.Contains(string(written), `node_name = "edge-7"`) {
		t.Fatalf("config:\n%s", written)
	}
	if out, err := join(p.Token(testenv.TestJWT)); err == nil || !strings.Contains(out, "exists") {
		t.Fatalf("join overwrote a config without -force: %v\n%s", err, out)
	}
}
