package testenv

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"
)

// PKI is a cloud CA, KubeEdge-style, with a server certificate for 127.0.0.1.
type PKI struct {
	CA     *x509.Certificate
	CAKey  *ecdsa.PrivateKey
	Server tls.Certificate
	Pool   *x509.CertPool
	serial atomic.Int64
}

// NewPKI makes a CA valid for an hour around now.
func NewPKI(t testing.TB) *PKI {
	t.Helper()
	caKey := NewKey(t)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "KubeEdge", Organization: []string{"KubeEdge"}},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(der)
	p := &PKI{CA: ca, CAKey: caKey, Pool: x509.NewCertPool()}
	p.Pool.AddCert(ca)
	srvKey := NewKey(t)
	srvDER := p.Sign(t, &x509.Certificate{
		Subject: pkix.Name{CommonName: "KubeEdge"}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}, &srvKey.PublicKey)
	p.Server = tls.Certificate{Certificate: [][]byte{srvDER}, PrivateKey: srvKey}
	return p
}

// NewKey makes an ECDSA P-256 key.
func NewKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// Sign issues a certificate from tmpl for pub, valid for an hour around now.
func (p *PKI) Sign(t testing.TB, tmpl *x509.Certificate, pub any) []byte {
	tmpl.SerialNumber = big.NewInt(100 + p.serial.Add(1))
	tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Hour), time.Now().Add(time.Hour)
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.CA, pub, p.CAKey)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// TestJWT is a syntactically valid JWT the certificate service accepts.
const TestJWT = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJleHAiOjE3MjI5NTAwMDB9.c2lnbmF0dXJl"

// Token is the join token for this CA: the CA's SHA-256, a dot, and jwt.
func (p *PKI) Token(jwt string) string {
	sum := sha256.Sum256(p.CA.Raw)
	return hex.EncodeToString(sum[:]) + "." + jwt
}

// CertService is the cloud's certificate bootstrap service on loopback:
// GET /ca.crt, and GET /edge.crt signing a CSR for a bearer of TestJWT.
func (p *PKI) CertService(t testing.TB) *httptest.Server {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ca.crt", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write(p.CA.Raw) })
	mux.HandleFunc("GET /edge.crt", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+TestJWT {
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
		der := p.Sign(t, &x509.Certificate{Subject: csr.Subject, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}, csr.PublicKey)
		_, _ = w.Write(der)
	})
	srv := httptest.NewUnstartedServer(mux)
	srv.TLS = &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{p.Server}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}
