package cloudhub

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// Secrets cloudhive keeps its credentials in, with KubeEdge's names and keys
// so that a namespace prepared by cloudcore (or keadm) works unchanged. Every
// value is DER: certificates as x509 DER, keys as SEC 1 EC private keys.
const (
	CASecretName     = "casecret"
	CADataKey        = "cadata"
	CAKeyDataKey     = "cakeydata"
	ServerSecretName = "cloudcoresecret"
	ServerCertKey    = "cloudcoredata"
	ServerKeyKey     = "cloudcorekeydata"
	TokenSecretName  = "tokensecret"
	TokenDataKey     = "tokendata"
)

// Certificate subjects and lifetimes, as KubeEdge issues them.
const (
	caCommonName       = "KubeEdge"
	serverCommonName   = "KubeEdge"
	nodeCommonPrefix   = "system:node:"
	nodeOrganization   = "system:nodes"
	caValidity         = 100 * 365 * 24 * time.Hour
	serverValidity     = 100 * 365 * 24 * time.Hour
	DefaultNodeCertTTL = 365 * 24 * time.Hour
	// serverRenewBefore: a stored server certificate closer than this to its
	// end is replaced by a fresh one.
	serverRenewBefore = 30 * 24 * time.Hour
)

// CA is the cloud certificate authority: it signs the server certificate,
// node certificates and (with its key's DER as HMAC key) the join tokens.
type CA struct {
	Cert   *x509.Certificate
	Key    *ecdsa.PrivateKey
	keyDER []byte
}

// Pool returns a pool holding only the CA.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// NewCA makes a self-signed ECDSA P-256 CA valid from now.
func NewCA(now time.Time) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("CA key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: caCommonName},
		NotBefore:             now.Add(-time.Minute).UTC(),
		NotAfter:              now.Add(caValidity).UTC(),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("CA certificate: %w", err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("CA key: %w", err)
	}
	return parseCA(der, keyDER)
}

// parseCA reads a CA certificate and its EC key (SEC 1 or PKCS #8), both DER.
func parseCA(certDER, keyDER []byte) (*CA, error) {
	cert, err := x509.ParseCertificate(certDER)
	if err != nil {
		return nil, fmt.Errorf("CA certificate: %w", err)
	}
	key, err := parseECKey(keyDER)
	if err != nil {
		return nil, fmt.Errorf("CA key: %w", err)
	}
	if pub, ok := cert.PublicKey.(*ecdsa.PublicKey); !ok || !pub.Equal(&key.PublicKey) {
		return nil, errors.New("CA key does not match the CA certificate")
	}
	if !cert.IsCA {
		return nil, errors.New("CA certificate is not a CA")
	}
	return &CA{Cert: cert, Key: key, keyDER: keyDER}, nil
}

func parseECKey(der []byte) (*ecdsa.PrivateKey, error) {
	if k, err := x509.ParseECPrivateKey(der); err == nil {
		return k, nil
	}
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, fmt.Errorf("neither SEC 1 nor PKCS #8 EC key: %w", err)
	}
	ec, ok := k.(*ecdsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("key is %T, want ECDSA", k)
	}
	return ec, nil
}

func randomSerial() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("serial number: %w", err)
	}
	return n.Add(n, big.NewInt(1)), nil
}

// IssueServer issues the websocket/bootstrap server certificate for the
// given addresses and names; it returns the pair and its DER parts.
func (ca *CA) IssueServer(ips []net.IP, dnsNames []string, now time.Time) (tls.Certificate, []byte, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, nil, fmt.Errorf("server key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return tls.Certificate{}, nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: serverCommonName, Organization: []string{serverCommonName}},
		NotBefore:    now.Add(-time.Minute).UTC(),
		NotAfter:     now.Add(serverValidity).UTC(),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  ips,
		DNSNames:     dnsNames,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		return tls.Certificate{}, nil, nil, fmt.Errorf("server certificate: %w", err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return tls.Certificate{}, nil, nil, fmt.Errorf("server key: %w", err)
	}
	pair, err := serverPair(der, keyDER)
	return pair, der, keyDER, err
}

func serverPair(certDER, keyDER []byte) (tls.Certificate, error) {
	cert, err := x509.ParseCertificate(certDER)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("server certificate: %w", err)
	}
	key, err := parseECKey(keyDER)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("server key: %w", err)
	}
	if pub, ok := cert.PublicKey.(*ecdsa.PublicKey); !ok || !pub.Equal(&key.PublicKey) {
		return tls.Certificate{}, errors.New("server key does not match its certificate")
	}
	return tls.Certificate{Certificate: [][]byte{certDER}, PrivateKey: key, Leaf: cert}, nil
}

// SignNode signs a node's CSR: the subject keeps only CN and O, which the
// caller has checked; usages default to clientAuth.
func (ca *CA) SignNode(csr *x509.CertificateRequest, usages []x509.ExtKeyUsage, validity time.Duration, now time.Time) ([]byte, error) {
	if len(usages) == 0 {
		usages = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: csr.Subject.CommonName, Organization: csr.Subject.Organization},
		NotBefore:    now.Add(-time.Minute).UTC(),
		NotAfter:     now.Add(validity).UTC(),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  usages,
		IPAddresses:  csr.IPAddresses,
		DNSNames:     csr.DNSNames,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, csr.PublicKey, ca.Key)
	if err != nil {
		return nil, fmt.Errorf("sign node certificate: %w", err)
	}
	return der, nil
}

// Secrets reads and writes cloudhive's credentials in one namespace. It keeps
// no state of its own: two replicas using the same namespace agree on the CA
// because creation resolves conflicts by reading the winner's secret.
type Secrets struct {
	Client    kubernetes.Interface
	Namespace string
}

// ensureNamespace creates the namespace when it is missing.
func (s Secrets) ensureNamespace(ctx context.Context) error {
	_, err := s.Client.CoreV1().Namespaces().Get(ctx, s.Namespace, metav1.GetOptions{})
	if err == nil {
		return nil
	}
	if !apierrors.IsNotFound(err) {
		// No read access to namespaces is fine: the secret calls will tell.
		if apierrors.IsForbidden(err) {
			return nil
		}
		return fmt.Errorf("namespace %s: %w", s.Namespace, err)
	}
	_, err = s.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: s.Namespace}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create namespace %s: %w", s.Namespace, err)
	}
	return nil
}

// getOrCreate returns the secret name, creating it from make when it is
// absent. When another replica creates it first, theirs is returned.
func (s Secrets) getOrCreate(ctx context.Context, name string, make func() (map[string][]byte, error)) (*corev1.Secret, bool, error) {
	secrets := s.Client.CoreV1().Secrets(s.Namespace)
	sec, err := secrets.Get(ctx, name, metav1.GetOptions{})
	if err == nil {
		return sec, false, nil
	}
	if !apierrors.IsNotFound(err) {
		return nil, false, fmt.Errorf("get secret %s/%s: %w", s.Namespace, name, err)
	}
	data, err := make()
	if err != nil {
		return nil, false, err
	}
	if err := s.ensureNamespace(ctx); err != nil {
		return nil, false, err
	}
	created, err := secrets.Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: s.Namespace,
			Labels: map[string]string{"app.kubernetes.io/managed-by": "cloudhive"}},
		Type: corev1.SecretTypeOpaque,
		Data: data,
	}, metav1.CreateOptions{})
	if err == nil {
		return created, true, nil
	}
	if !apierrors.IsAlreadyExists(err) {
		return nil, false, fmt.Errorf("create secret %s/%s: %w", s.Namespace, name, err)
	}
	sec, err = secrets.Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, false, fmt.Errorf("get secret %s/%s after a create conflict: %w", s.Namespace, name, err)
	}
	return sec, false, nil
}

// CA returns the CA from its secret, creating both when absent.
func (s Secrets) CA(ctx context.Context, now time.Time) (*CA, error) {
	sec, _, err := s.getOrCreate(ctx, CASecretName, func() (map[string][]byte, error) {
		ca, err := NewCA(now)
		if err != nil {
			return nil, err
		}
		return map[string][]byte{CADataKey: ca.Cert.Raw, CAKeyDataKey: ca.keyDER}, nil
	})
	if err != nil {
		return nil, err
	}
	ca, err := parseCA(sec.Data[CADataKey], sec.Data[CAKeyDataKey])
	if err != nil {
		return nil, fmt.Errorf("secret %s/%s: %w", s.Namespace, CASecretName, err)
	}
	return ca, nil
}

// ServerCert returns the server certificate from its secret when it is
// signed by ca, covers ips and dnsNames and is not near its end; otherwise it
// issues one. A fresh one is stored only when the secret is absent, so
// replicas with different addresses never overwrite each other's.
func (s Secrets) ServerCert(ctx context.Context, ca *CA, ips []net.IP, dnsNames []string, now time.Time) (tls.Certificate, bool, error) {
	var issued *tls.Certificate
	sec, created, err := s.getOrCreate(ctx, ServerSecretName, func() (map[string][]byte, error) {
		pair, der, keyDER, err := ca.IssueServer(ips, dnsNames, now)
		if err != nil {
			return nil, err
		}
		issued = &pair
		return map[string][]byte{ServerCertKey: der, ServerKeyKey: keyDER}, nil
	})
	if err != nil {
		return tls.Certificate{}, false, err
	}
	if created && issued != nil {
		return *issued, true, nil
	}
	pair, err := serverPair(sec.Data[ServerCertKey], sec.Data[ServerKeyKey])
	if err == nil && serverCertFits(pair.Leaf, ca, ips, dnsNames, now) {
		return pair, false, nil
	}
	pair, _, _, err = ca.IssueServer(ips, dnsNames, now)
	return pair, false, err
}

// serverCertFits: signed by ca, valid for a while yet, with every address.
func serverCertFits(cert *x509.Certificate, ca *CA, ips []net.IP, dnsNames []string, now time.Time) bool {
	if cert.CheckSignatureFrom(ca.Cert) != nil || now.Before(cert.NotBefore) || now.Add(serverRenewBefore).After(cert.NotAfter) {
		return false
	}
	for _, ip := range ips {
		if !slices.ContainsFunc(cert.IPAddresses, ip.Equal) {
			return false
		}
	}
	for _, n := range dnsNames {
		if !slices.Contains(cert.DNSNames, n) {
			return false
		}
	}
	return true
}
