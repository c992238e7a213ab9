package edgehub

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Certificate service limits.
const (
	bootstrapTimeout = 30 * time.Second
	maxCertBytes     = 1 << 20
)

// Bootstrap obtains the node certificate with a KubeEdge bootstrap token, as
// KubeEdge's edge does on its first start (keadm join):
//
//  1. GET <httpsServer>/ca.crt without verifying the server, and require that
//     the hex SHA-256 of the DER body equals the token's first part;
//  2. create an ECDSA P-256 key and a CSR with CN system:node:<node>, O system:nodes;
//  3. GET <httpsServer>/edge.crt with the CSR (DER) as body, "Authorization:
//     Bearer <JWT>" and "NodeName: <node>", verifying the server with the CA;
//  4. write the CA (PEM, 0644), the certificate (PEM, 0644) and the key (PEM
//     "EC PRIVATE KEY", 0600).
//
// The token is "<64 hex>.<JWT>", the JWT having three dot-separated parts.
func Bootstrap(ctx context.Context, httpsServer, token, node, caFile, certFile, keyFile string) error {
	caHash, jwt, err := parseToken(token)
	if err != nil {
		return err
	}
	if node == "" {
		return errors.New("bootstrap: empty node name")
	}
	base := strings.TrimRight(httpsServer, "/")
	ctx, cancel := context.WithTimeout(ctx, bootstrapTimeout)
	defer cancel()

	// 1. The CA, trusted only through the token's hash.
	insecure := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{
		MinVersion: tls.VersionTLS12, InsecureSkipVerify: true, //nolint:gosec // checked against the token's hash
	}}}
	caDER, err := get(ctx, insecure, base+"/ca.crt", nil, nil)
	if err != nil {
		return fmt.Errorf("bootstrap: fetch CA: %w", err)
	}
	sum := sha256.Sum256(caDER)
	if hex.EncodeToString(sum[:]) != caHash {
		return errors.New("bootstrap: the CA served does not match the token's hash")
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return fmt.Errorf("bootstrap: parse CA: %w", err)
	}

	// 2. Key and CSR.
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("bootstrap: key: %w", err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: "system:node:" + node, Organization: []string{"system:nodes"}},
	}, key)
	if err != nil {
		return fmt.Errorf("bootstrap: CSR: %w", err)
	}

	// 3. The signed certificate, from a server verified with the CA.
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	verified := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{
		MinVersion: tls.VersionTLS12, RootCAs: pool,
	}}}
	hdr := http.Header{}
	hdr.Set("Authorization", "Bearer "+jwt)
	hdr.Set("NodeName", node)
	certDER, err := get(ctx, verified, base+"/edge.crt", csr, hdr)
	if err != nil {
		return fmt.Errorf("bootstrap: fetch node certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(certDER)
	if err != nil {
		return fmt.Errorf("bootstrap: parse node certificate: %w", err)
	}
	if pub, ok := cert.PublicKey.(*ecdsa.PublicKey); !ok || !pub.Equal(&key.PublicKey) {
		return errors.New("bootstrap: the node certificate is not for the key sent")
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return fmt.Errorf("bootstrap: node certificate: %w", err)
	}

	// 4. Files.
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return fmt.Errorf("bootstrap: key: %w", err)
	}
	if err := writePEM(caFile, "CERTIFICATE", caDER, 0o644); err != nil {
		return err
	}
	if err := writePEM(keyFile, "EC PRIVATE KEY", keyDER, 0o600); err != nil {
		return err
	}
	return writePEM(certFile, "CERTIFICATE", certDER, 0o644)
}

// parseToken splits a bootstrap token into the CA hash and the JWT.
func parseToken(token string) (caHash, jwt string, err error) {
	hash, jwt, ok := strings.Cut(strings.TrimSpace(token), ".")
	if !ok || len(hash) != 64 || strings.Count(jwt, ".") != 2 {
		return "", "", errors.New("bootstrap: token is not <64 hex>.<JWT>")
	}
	if _, err := hex.DecodeString(hash); err != nil || strings.ToLower(hash) != hash {
		return "", "", errors.New("bootstrap: token's CA hash is not lowercase hex")
	}
	return hash, jwt, nil
}

func get(ctx context.Context, client *http.Client, url string, body []byte, hdr http.Header) ([]byte, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, rd)
	if err != nil {
		return nil, err
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxCertBytes+1))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %s: %s", url, resp.Status, strings.TrimSpace(string(data)))
	}
	if len(data) > maxCertBytes {
		return nil, fmt.Errorf("%s: answer larger than %d bytes", url, maxCertBytes)
	}
	return data, nil
}

// writePEM writes one PEM block through a temporary file and a rename.
func writePEM(path, typ string, der []byte, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("bootstrap: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("bootstrap: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return fmt.Errorf("bootstrap: %w", err)
	}
	if err := pem.Encode(tmp, &pem.Block{Type: typ, Bytes: der}); err != nil {
		tmp.Close()
		return fmt.Errorf("bootstrap: write %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil { // the rename must not expose an empty file after a power cut
		tmp.Close()
		return fmt.Errorf("bootstrap: write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("bootstrap: write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("bootstrap: %w", err)
	}
	return nil
}
