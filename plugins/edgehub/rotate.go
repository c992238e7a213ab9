package edgehub

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net/http"
	"os"
	"strings"
	"time"
)

// Rotation timing, as KubeEdge's certificate manager does it: renew at a
// random point between 70 % and 90 % of the certificate's lifetime (so that
// many nodes signed at once do not renew at once), retry after 2 s doubling
// to 32 s.
const (
	rotateMinFraction = 0.7
	rotateMaxFraction = 0.9
	rotateMinRetry    = 2 * time.Second
	rotateMaxRetry    = 32 * time.Second
)

// nextCertSuffix names the renewed certificate while it is put in place; a
// leftover one is recovered by loadNodeCert (see renew).
const nextCertSuffix = ".next"

// rotateLoop renews the node certificate before it expires, until ctx ends.
// After a renewal it closes the live connection, so the link redials with the
// new certificate (the offline queue keeps what is sent meanwhile).
func (e *EdgeHub) rotateLoop(ctx context.Context) {
	retry := rotateMinRetry
	for {
		wait := retry
		leaf, err := e.currentLeaf()
		if err == nil {
			wait = time.Until(e.renewAt(leaf))
			e.logger.Info("node certificate renewal scheduled", "not_after", leaf.NotAfter.UTC(), "renew_in", wait.Round(time.Second))
		} else {
			e.logger.Debug("no node certificate to renew yet", "error", err, "retry_in", retry)
		}
		if !sleep(ctx, wait) {
			return
		}
		if err != nil { // the link loop bootstraps it; look again
			retry = min(retry*2, rotateMaxRetry)
			continue
		}
		if err := e.renew(ctx, leaf); err != nil {
			e.logger.Error("node certificate renewal failed", "error", err, "retry_in", retry)
			if !sleep(ctx, retry) {
				return
			}
			retry = min(retry*2, rotateMaxRetry)
			continue
		}
		retry = rotateMinRetry
		e.rotations.Add(1)
		e.logger.Info("node certificate renewed; reconnecting with it")
		e.mu.Lock()
		conn := e.conn
		e.mu.Unlock()
		if conn != nil {
			_ = conn.Close() // the read loop notices and redials
		}
		e.closeTunnel()
	}
}

// tokenExpired reads the JWT's exp claim (Unix seconds); a token without a
// readable one counts as valid and the server decides.
func tokenExpired(jwt string, now time.Time) bool {
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		return false
	}
	payload, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return false
	}
	var claims struct {
		Exp *int64 `json:"exp"`
	}
	if json.Unmarshal(payload, &claims) != nil || claims.Exp == nil {
		return false
	}
	return now.Unix() >= *claims.Exp
}

func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// renewAt is when leaf should be renewed.
func (e *EdgeHub) renewAt(leaf *x509.Certificate) time.Time {
	life := leaf.NotAfter.Sub(leaf.NotBefore)
	return leaf.NotBefore.Add(time.Duration(float64(life) * e.rotateFraction()))
}

func randomRotateFraction() float64 {
	return rotateMinFraction + mrand.Float64()*(rotateMaxFraction-rotateMinFraction)
}

// currentLeaf parses the node certificate on disk.
func (e *EdgeHub) currentLeaf() (*x509.Certificate, error) {
	pair, err := e.loadNodeCert()
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(pair.Certificate[0])
}

// loadNodeCert loads the node certificate and key. A renewal interrupted
// between putting the new key and the new certificate in place leaves the
// certificate at <cert>.next: it is finished here.
func (e *EdgeHub) loadNodeCert() (tls.Certificate, error) {
	e.certMu.Lock()
	defer e.certMu.Unlock()
	pair, err := tls.LoadX509KeyPair(e.cfg.TLSCertFile, e.cfg.TLSPrivateKeyFile)
	if err == nil {
		return pair, nil
	}
	next := e.cfg.TLSCertFile + nextCertSuffix
	if p, nerr := tls.LoadX509KeyPair(next, e.cfg.TLSPrivateKeyFile); nerr == nil {
		if rerr := os.Rename(next, e.cfg.TLSCertFile); rerr == nil {
			e.logger.Warn("finished an interrupted certificate renewal", "cert", e.cfg.TLSCertFile)
			return p, nil
		}
	}
	return tls.Certificate{}, err
}

// renew asks the certificate service for a new certificate for a new key,
// authenticating with the current certificate as TLS client certificate
// (KubeEdge's cloudhub accepts that for a certificate that chains to its CA,
// has O system:nodes and CN system:node:<NodeName>); when that is refused and
// a token is configured, with the token. The key and certificate are written
// so that no crash leaves a mismatched pair that cannot be repaired.
func (e *EdgeHub) renew(ctx context.Context, leaf *x509.Certificate) error {
	node := e.host.NodeName()
	caPEM, err := os.ReadFile(e.cfg.TLSCAFile)
	if err != nil {
		return fmt.Errorf("renew: cloud CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return fmt.Errorf("renew: cloud CA %s: no PEM certificate", e.cfg.TLSCAFile)
	}
	current, err := e.loadNodeCert()
	if err != nil {
		return fmt.Errorf("renew: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("renew: key: %w", err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: "system:node:" + node, Organization: []string{"system:nodes"}},
	}, key)
	if err != nil {
		return fmt.Errorf("renew: CSR: %w", err)
	}
	url := strings.TrimRight(e.cfg.HTTPSServer, "/") + "/edge.crt"
	hdr := http.Header{}
	hdr.Set("NodeName", node)
	ctx, cancel := context.WithTimeout(ctx, bootstrapTimeout)
	defer cancel()

	withCert := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{
		MinVersion: tls.VersionTLS12, RootCAs: pool, Certificates: []tls.Certificate{current},
	}}}
	certDER, err := get(ctx, withCert, url, csr, hdr)
	withCert.CloseIdleConnections()
	if err != nil {
		certErr := err
		if e.cfg.Token == "" {
			return fmt.Errorf("renew with the current certificate: %w", certErr)
		}
		_, jwt, terr := parseToken(e.cfg.Token)
		if terr == nil && tokenExpired(jwt, time.Now()) {
			terr = errors.New("the token has expired")
		}
		if terr != nil {
			return errors.Join(fmt.Errorf("renew with the current certificate: %w", certErr), fmt.Errorf("no token fallback: %w", terr))
		}
		e.logger.Warn("renewal with the current certificate refused; trying the token", "error", certErr)
		hdr.Set("Authorization", "Bearer "+jwt)
		withToken := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool}}}
		certDER, err = get(ctx, withToken, url, csr, hdr)
		withToken.CloseIdleConnections()
		if err != nil {
			return errors.Join(fmt.Errorf("renew with the current certificate: %w", certErr),
				fmt.Errorf("renew with the token: %w", err))
		}
	}
	cert, err := x509.ParseCertificate(certDER)
	if err != nil {
		return fmt.Errorf("renew: parse certificate: %w", err)
	}
	if pub, ok := cert.PublicKey.(*ecdsa.PublicKey); !ok || !pub.Equal(&key.PublicKey) {
		return errors.New("renew: the certificate is not for the key sent")
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return fmt.Errorf("renew: certificate: %w", err)
	}
	if cert.Subject.CommonName != "system:node:"+node {
		return fmt.Errorf("renew: certificate CN %q, want system:node:%s", cert.Subject.CommonName, node)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return fmt.Errorf("renew: key: %w", err)
	}

	// Certificate first to <cert>.next, then the key, then the certificate
	// into place; each step is a rename of a complete file. A crash after the
	// key leaves the new pair split over <cert>.next and <key>, which
	// loadNodeCert finishes.
	e.certMu.Lock()
	defer e.certMu.Unlock()
	next := e.cfg.TLSCertFile + nextCertSuffix
	if err := writePEM(next, "CERTIFICATE", certDER, 0o644); err != nil {
		return fmt.Errorf("renew: %w", err)
	}
	if err := writePEM(e.cfg.TLSPrivateKeyFile, "EC PRIVATE KEY", keyDER, 0o600); err != nil {
		_ = os.Remove(next)
		return fmt.Errorf("renew: %w", err)
	}
	if err := os.Rename(next, e.cfg.TLSCertFile); err != nil {
		return fmt.Errorf("renew: %w", err)
	}
	return nil
}
