package cloudhub

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// DefaultTokenTTL is how long a join token is valid (KubeEdge: twice its 12 h
// refresh period).
const DefaultTokenTTL = 24 * time.Hour

// jwtHeader is the only JWT header we issue and accept.
const jwtHeader = `{"alg":"HS256","typ":"JWT"}`

// ErrBadToken is returned for a token that is malformed, forged or expired.
var ErrBadToken = errors.New("invalid join token")

// Strict: one token, one spelling (no variants in unused trailing bits).
var b64 = base64.RawURLEncoding.Strict()

// CAHash is the hex SHA-256 of the CA's DER, the first part of a join token.
func (ca *CA) CAHash() string {
	sum := sha256.Sum256(ca.Cert.Raw)
	return hex.EncodeToString(sum[:])
}

// NewToken returns a join token "<CA hash>.<JWT>" expiring at exp. The JWT is
// HS256 with the CA key's DER as HMAC key and only an "exp" claim, so every
// replica holding the CA verifies it without shared state.
func (ca *CA) NewToken(exp time.Time) string {
	claims := fmt.Sprintf(`{"exp":%d}`, exp.Unix())
	signing := b64.EncodeToString([]byte(jwtHeader)) + "." + b64.EncodeToString([]byte(claims))
	return ca.CAHash() + "." + signing + "." + b64.EncodeToString(ca.mac(signing))
}

func (ca *CA) mac(signing string) []byte {
	m := hmac.New(sha256.New, ca.keyDER)
	m.Write([]byte(signing))
	return m.Sum(nil)
}

// VerifyJWT checks a JWT (the token without its CA hash, as edges send it in
// "Authorization: Bearer") and returns its expiry.
func (ca *CA) VerifyJWT(jwt string, now time.Time) (time.Time, error) {
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		return time.Time{}, fmt.Errorf("%w: not a JWT", ErrBadToken)
	}
	hdr, err := b64.DecodeString(parts[0])
	if err != nil {
		return time.Time{}, fmt.Errorf("%w: header: %w", ErrBadToken, err)
	}
	var h struct {
		Alg string `json:"alg"`
	}
	if err := json.Unmarshal(hdr, &h); err != nil || h.Alg != "HS256" {
		return time.Time{}, fmt.Errorf("%w: algorithm is not HS256", ErrBadToken)
	}
	sig, err := b64.DecodeString(parts[2])
	if err != nil {
		return time.Time{}, fmt.Errorf("%w: signature: %w", ErrBadToken, err)
	}
	if !hmac.Equal(sig, ca.mac(parts[0]+"."+parts[1])) {
		return time.Time{}, fmt.Errorf("%w: signature does not match", ErrBadToken)
	}
	raw, err := b64.DecodeString(parts[1])
	if err != nil {
		return time.Time{}, fmt.Errorf("%w: claims: %w", ErrBadToken, err)
	}
	var c struct {
		Exp *float64 `json:"exp"`
	}
	if err := json.Unmarshal(raw, &c); err != nil || c.Exp == nil {
		return time.Time{}, fmt.Errorf("%w: no exp claim", ErrBadToken)
	}
	exp := time.Unix(int64(*c.Exp), 0)
	if !now.Before(exp) {
		return exp, fmt.Errorf("%w: expired at %s", ErrBadToken, exp.UTC().Format(time.RFC3339))
	}
	return exp, nil
}

// VerifyToken checks a whole join token "<CA hash>.<JWT>".
func (ca *CA) VerifyToken(token string, now time.Time) (time.Time, error) {
	hash, jwt, ok := strings.Cut(strings.TrimSpace(token), ".")
	if !ok || hash != ca.CAHash() {
		return time.Time{}, fmt.Errorf("%w: CA hash does not match this CA", ErrBadToken)
	}
	return ca.VerifyJWT(jwt, now)
}

// Token returns the join token from the token secret when it is valid for at
// least ttl/2 more; otherwise it makes one valid for ttl and stores it
// (creating or updating the secret). On an update conflict the other
// replica's token is used when it is good.
func (s Secrets) Token(ctx context.Context, ca *CA, ttl time.Duration, now time.Time) (string, error) {
	fresh := func(tok string) bool {
		exp, err := ca.VerifyToken(tok, now)
		return err == nil && exp.Sub(now) >= ttl/2
	}
	var made string
	sec, created, err := s.getOrCreate(ctx, TokenSecretName, func() (map[string][]byte, error) {
		made = ca.NewToken(now.Add(ttl))
		return map[string][]byte{TokenDataKey: []byte(made)}, nil
	})
	if err != nil {
		return "", err
	}
	if created {
		return made, nil
	}
	if tok := string(sec.Data[TokenDataKey]); fresh(tok) {
		return tok, nil
	}
	tok := ca.NewToken(now.Add(ttl))
	upd := sec.DeepCopy()
	if upd.Data == nil {
		upd.Data = map[string][]byte{}
	}
	upd.Data[TokenDataKey] = []byte(tok)
	secrets := s.Client.CoreV1().Secrets(s.Namespace)
	if _, err := secrets.Update(ctx, upd, metav1.UpdateOptions{}); err != nil {
		if !apierrors.IsConflict(err) {
			return "", fmt.Errorf("update secret %s/%s: %w", s.Namespace, TokenSecretName, err)
		}
		again, gerr := secrets.Get(ctx, TokenSecretName, metav1.GetOptions{})
		if gerr != nil {
			return "", fmt.Errorf("get secret %s/%s after a conflict: %w", s.Namespace, TokenSecretName, gerr)
		}
		if other := string(again.Data[TokenDataKey]); fresh(other) {
			return other, nil
		}
		return "", fmt.Errorf("update secret %s/%s: %w", s.Namespace, TokenSecretName, err)
	}
	return tok, nil
}
