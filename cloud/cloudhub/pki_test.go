package cloudhub

import (
	"context"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

func TestCACreatedOnceAndShared(t *testing.T) {
	ctx := context.Background()
	client := fake.NewClientset()
	s := Secrets{Client: client, Namespace: "kubeedge"}
	now := time.Now()
	ca1, err := s.CA(ctx, now)
	if err != nil {
		t.Fatal(err)
	}
	// A second replica (same API) reads the same CA.
	ca2, err := Secrets{Client: client, Namespace: "kubeedge"}.CA(ctx, now)
	if err != nil {
		t.Fatal(err)
	}
	if !ca1.Cert.Equal(ca2.Cert) {
		t.Fatal("second call made a different CA")
	}
	sec, err := client.CoreV1().Secrets("kubeedge").Get(ctx, CASecretName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := x509.ParseCertificate(sec.Data[CADataKey]); err != nil {
		t.Fatalf("cadata is not DER: %v", err)
	}
	if _, err := x509.ParseECPrivateKey(sec.Data[CAKeyDataKey]); err != nil {
		t.Fatalf("cakeydata is not a SEC 1 DER key: %v", err)
	}
	if ca1.Cert.Subject.CommonName != "KubeEdge" || !ca1.Cert.IsCA {
		t.Fatalf("CA subject %v IsCA %v", ca1.Cert.Subject, ca1.Cert.IsCA)
	}
	if _, err := client.CoreV1().Namespaces().Get(ctx, "kubeedge", metav1.GetOptions{}); err != nil {
		t.Fatalf("namespace not created: %v", err)
	}
}

// Two replicas race: this one sees no secret, another creates it before our
// Create; we must end up with the other's CA.
func TestCACreateConflictUsesTheWinner(t *testing.T) {
	ctx := context.Background()
	winner, err := NewCA(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	client := fake.NewClientset()
	client.PrependReactor("create", "secrets", func(a k8stesting.Action) (bool, runtime.Object, error) {
		// The other replica's secret lands first.
		other := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: CASecretName, Namespace: "kubeedge"},
			Data: map[string][]byte{CADataKey: winner.Cert.Raw, CAKeyDataKey: winner.keyDER}}
		if err := client.Tracker().Add(other); err != nil {
			t.Errorf("tracker add: %v", err)
		}
		return true, nil, apierrors.NewAlreadyExists(schema.GroupResource{Resource: "secrets"}, CASecretName)
	})
	got, err := Secrets{Client: client, Namespace: "kubeedge"}.CA(ctx, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if !got.Cert.Equal(winner.Cert) {
		t.Fatal("did not adopt the CA another replica created")
	}
}

func TestCAFromBrokenSecretIsAnError(t *testing.T) {
	client := fake.NewClientset(&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: CASecretName, Namespace: "kubeedge"},
		Data: map[string][]byte{CADataKey: []byte("junk")}})
	_, err := Secrets{Client: client, Namespace: "kubeedge"}.CA(context.Background(), time.Now())
	if err == nil || !strings.Contains(err.Error(), "casecret") {
		t.Fatalf("err = %v, want one naming the secret", err)
	}
}

func TestServerCert(t *testing.T) {
	ctx := context.Background()
	client := fake.NewClientset()
	s := Secrets{Client: client, Namespace: "kubeedge"}
	now := time.Now()
	ca, err := s.CA(ctx, now)
	if err != nil {
		t.Fatal(err)
	}
	lo := []net.IP{net.ParseIP("127.0.0.1")}
	first, stored, err := s.ServerCert(ctx, ca, lo, []string{"cloud.example"}, now)
	if err != nil || !stored {
		t.Fatalf("first: stored=%v err=%v", stored, err)
	}
	leaf := first.Leaf
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: ca.Pool(), DNSName: "cloud.example",
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		t.Fatalf("server cert does not verify for its DNS name: %v", err)
	}
	if err := leaf.VerifyHostname("127.0.0.1"); err != nil {
		t.Fatalf("no IP SAN: %v", err)
	}
	// Same addresses: the stored one is reused.
	again, _, err := s.ServerCert(ctx, ca, lo, nil, now)
	if err != nil || !again.Leaf.Equal(leaf) {
		t.Fatalf("stored certificate not reused (err %v)", err)
	}
	// Another address: a fresh one for this replica; the stored one stays.
	other := []net.IP{net.ParseIP("10.1.2.3")}
	fresh, stored, err := s.ServerCert(ctx, ca, other, nil, now)
	if err != nil || stored || fresh.Leaf.Equal(leaf) {
		t.Fatalf("other address: stored=%v same=%v err=%v", stored, fresh.Leaf.Equal(leaf), err)
	}
	if err := fresh.Leaf.VerifyHostname("10.1.2.3"); err != nil {
		t.Fatal(err)
	}
	sec, _ := client.CoreV1().Secrets("kubeedge").Get(ctx, ServerSecretName, metav1.GetOptions{})
	if string(sec.Data[ServerCertKey]) != string(leaf.Raw) {
		t.Fatal("the stored server certificate was overwritten")
	}
}

func TestTokenFormatAndVerify(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	ca, err := NewCA(now)
	if err != nil {
		t.Fatal(err)
	}
	other, err := NewCA(now)
	if err != nil {
		t.Fatal(err)
	}
	tok := ca.NewToken(now.Add(time.Hour))
	hash, jwt, _ := strings.Cut(tok, ".")
	if len(hash) != 64 || strings.ToLower(hash) != hash || strings.Count(jwt, ".") != 2 {
		t.Fatalf("token %q is not <64 lowercase hex>.<JWT>", tok)
	}
	if _, err := hex.DecodeString(hash); err != nil {
		t.Fatal(err)
	}
	hdr, _ := b64.DecodeString(strings.Split(jwt, ".")[0])
	if string(hdr) != `{"alg":"HS256","typ":"JWT"}` {
		t.Fatalf("header %s", hdr)
	}
	claims, _ := b64.DecodeString(strings.Split(jwt, ".")[1])
	if string(claims) != `{"exp":1800003600}` {
		t.Fatalf("claims %s", claims)
	}
	parts := strings.Split(jwt, ".")
	tests := []struct {
		name  string
		ca    *CA
		token string
		at    time.Time
		ok    bool
	}{
		{"valid", ca, tok, now, true},
		{"expired", ca, tok, now.Add(time.Hour), false},
		{"other CA", other, tok, now, false},
		{"forged claims", ca, hash + "." + parts[0] + "." + b64.EncodeToString([]byte(`{"exp":9999999999}`)) + "." + parts[2], now, false},
		{"alg none", ca, hash + "." + b64.EncodeToString([]byte(`{"alg":"none"}`)) + "." + parts[1] + ".", now, false},
		{"not a JWT", ca, hash + ".abc", now, false},
		{"empty", ca, "", now, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.ca.VerifyToken(tt.token, tt.at)
			if (err == nil) != tt.ok {
				t.Fatalf("err = %v, want ok=%v", err, tt.ok)
			}
			if err != nil && !errors.Is(err, ErrBadToken) {
				t.Fatalf("err %v is not ErrBadToken", err)
			}
		})
	}
}

func TestTokenSecretReusedThenRegenerated(t *testing.T) {
	ctx := context.Background()
	client := fake.NewClientset()
	s := Secrets{Client: client, Namespace: "kubeedge"}
	start := time.Now()
	ca, err := s.CA(ctx, start)
	if err != nil {
		t.Fatal(err)
	}
	ttl := 24 * time.Hour
	t1, err := s.Token(ctx, ca, ttl, start)
	if err != nil {
		t.Fatal(err)
	}
	sec, _ := client.CoreV1().Secrets("kubeedge").Get(ctx, TokenSecretName, metav1.GetOptions{})
	if string(sec.Data[TokenDataKey]) != t1 {
		t.Fatal("tokendata is not the token")
	}
	// Eleven hours later more than half is left: the same token.
	t2, err := s.Token(ctx, ca, ttl, start.Add(11*time.Hour))
	if err != nil || t2 != t1 {
		t.Fatalf("token changed too early (err %v)", err)
	}
	// Thirteen hours later less than half is left: a new one, stored.
	t3, err := s.Token(ctx, ca, ttl, start.Add(13*time.Hour))
	if err != nil || t3 == t1 {
		t.Fatalf("token not regenerated (err %v)", err)
	}
	if _, err := ca.VerifyToken(t3, start.Add(36*time.Hour)); err != nil {
		t.Fatalf("new token's expiry: %v", err)
	}
	sec, _ = client.CoreV1().Secrets("kubeedge").Get(ctx, TokenSecretName, metav1.GetOptions{})
	if string(sec.Data[TokenDataKey]) != t3 {
		t.Fatal("regenerated token not stored")
	}
	// The old token still works until it expires (stateless verification).
	if _, err := ca.VerifyToken(t1, start.Add(13*time.Hour)); err != nil {
		t.Fatalf("old token refused before its expiry: %v", err)
	}
}
