package cloudhub_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/edgehive/edgehive/cloud/cloudhub"
	"github.com/edgehive/edgehive/internal/testenv"
	"github.com/edgehive/edgehive/plugins/edgehub"
)

func csrDER(t *testing.T, cn string, org ...string) []byte {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: cn, Organization: org}}, testenv.NewKey(t))
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func (e *env) certClient(clientCert *tls.Certificate) *http.Client {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: e.ca.Pool()}
	if clientCert != nil {
		cfg.Certificates = []tls.Certificate{*clientCert}
	}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg}}
}

func (e *env) get(client *http.Client, path string, body []byte, hdr map[string]string) (int, []byte) {
	e.t.Helper()
	req, err := http.NewRequest(http.MethodGet, e.certsURL+path, bytes.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := client.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, data
}

func jwtOf(token string) string {
	_, jwt, _ := strings.Cut(token, ".")
	return jwt
}

func TestCACertIsDERMatchingTheToken(t *testing.T) {
	e := newEnv(t, nil)
	code, body := e.get(e.certClient(nil), "/ca.crt", nil, nil)
	if code != http.StatusOK {
		t.Fatalf("status %d", code)
	}
	if !bytes.Equal(body, e.ca.Cert.Raw) {
		t.Fatal("/ca.crt is not the CA's DER")
	}
	sum := sha256.Sum256(body)
	if !strings.HasPrefix(e.token, hex.EncodeToString(sum[:])+".") {
		t.Fatal("token prefix is not the served CA's hash")
	}
}

func TestEdgeCert(t *testing.T) {
	e := newEnv(t, nil)
	other, err := cloudhub.NewCA(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	valid := "Bearer " + jwtOf(e.token)
	node1 := e.bootstrap("n1")
	pair, err := tls.LoadX509KeyPair(node1.cert, node1.key)
	if err != nil {
		t.Fatal(err)
	}
	good := csrDER(t, "system:node:n1", "system:nodes")
	tests := []struct {
		name       string
		clientCert *tls.Certificate
		body       []byte
		hdr        map[string]string
		status     int
	}{
		{"token", nil, good, map[string]string{"Authorization": valid, "NodeName": "n1"}, 200},
		{"token without NodeName", nil, good, map[string]string{"Authorization": valid}, 200},
		{"token from another CA", nil, good, map[string]string{"Authorization": "Bearer " + jwtOf(other.NewToken(time.Now().Add(time.Hour))), "NodeName": "n1"}, 401},
		{"expired token", nil, good, map[string]string{"Authorization": "Bearer " + jwtOf(e.ca.NewToken(time.Now().Add(-time.Second))), "NodeName": "n1"}, 401},
		{"not bearer", nil, good, map[string]string{"Authorization": "Basic " + jwtOf(e.token), "NodeName": "n1"}, 401},
		{"no credentials", nil, good, map[string]string{"NodeName": "n1"}, 401},
		{"rotation with the node's certificate", &pair, good, map[string]string{"NodeName": "n1"}, 200},
		{"rotation for another node", &pair, csrDER(t, "system:node:n2", "system:nodes"), map[string]string{"NodeName": "n2"}, 401},
		{"CSR not DER", nil, []byte("-----BEGIN CERTIFICATE REQUEST-----"), map[string]string{"Authorization": valid, "NodeName": "n1"}, 400},
		{"empty CSR", nil, nil, map[string]string{"Authorization": valid, "NodeName": "n1"}, 400},
		{"CSR for another node", nil, csrDER(t, "system:node:n2", "system:nodes"), map[string]string{"Authorization": valid, "NodeName": "n1"}, 400},
		{"CSR without system:node prefix", nil, csrDER(t, "n1", "system:nodes"), map[string]string{"Authorization": valid}, 400},
		{"CSR with the wrong organization", nil, csrDER(t, "system:node:n1", "system:masters"), map[string]string{"Authorization": valid, "NodeName": "n1"}, 400},
		{"bad ExtKeyUsages", nil, good, map[string]string{"Authorization": valid, "NodeName": "n1", "ExtKeyUsages": "[0]"}, 400},
		{"too large", nil, bytes.Repeat([]byte{0x30}, 1<<20+10), map[string]string{"Authorization": valid, "NodeName": "n1"}, 413},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, body := e.get(e.certClient(tt.clientCert), "/edge.crt", tt.body, tt.hdr)
			if code != tt.status {
				t.Fatalf("status %d (%s), want %d", code, body, tt.status)
			}
			if code != 200 {
				return
			}
			cert, err := x509.ParseCertificate(body)
			if err != nil {
				t.Fatal(err)
			}
			if cert.Subject.CommonName != "system:node:n1" || strings.Join(cert.Subject.Organization, ",") != "system:nodes" {
				t.Fatalf("subject %v", cert.Subject)
			}
			if len(cert.ExtKeyUsage) != 1 || cert.ExtKeyUsage[0] != x509.ExtKeyUsageClientAuth {
				t.Fatalf("EKU %v", cert.ExtKeyUsage)
			}
			if d := time.Until(cert.NotAfter); d < 364*24*time.Hour || d > 366*24*time.Hour {
				t.Fatalf("valid for %v, want a year", d)
			}
			if _, err := cert.Verify(x509.VerifyOptions{Roots: e.ca.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestBootstrapWithAWrongTokenIsRefused(t *testing.T) {
	e := newEnv(t, nil)
	dir := t.TempDir()
	// Right CA hash, JWT signed with another key: the CA check passes, the
	// certificate request gets 401.
	other, err := cloudhub.NewCA(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	hash, _, _ := strings.Cut(e.token, ".")
	wrong := hash + "." + jwtOf(other.NewToken(time.Now().Add(time.Hour)))
	err = edgehub.Bootstrap(context.Background(), e.certsURL, wrong, "n1", dir+"/ca", dir+"/crt", dir+"/key")
	if err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("err = %v, want a 401", err)
	}
	// A token for another CA fails the CA check before any request.
	err = edgehub.Bootstrap(context.Background(), e.certsURL, other.NewToken(time.Now().Add(time.Hour)), "n1", dir+"/ca", dir+"/crt", dir+"/key")
	if err == nil || !strings.Contains(err.Error(), "does not match") {
		t.Fatalf("err = %v, want a CA mismatch", err)
	}
}

func TestNodeLookup(t *testing.T) {
	e := newEnv(t, nil)
	c := e.certClient(nil)
	if code, body := e.get(c, "/node/n1", nil, nil); code != 404 || !strings.Contains(string(body), "Node not found") {
		t.Fatalf("missing node: %d %s", code, body)
	}
	if _, err := e.client.CoreV1().Nodes().Create(context.Background(), &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if code, body := e.get(c, "/node/n1", nil, nil); code != 200 || string(body) != "Node found" {
		t.Fatalf("node: %d %s", code, body)
	}
}
