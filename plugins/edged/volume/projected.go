package volume

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	v1 "k8s.io/api/core/v1"
)

// PluginProjected is the kubelet's directory name for projected volumes.
const PluginProjected = "kubernetes.io~projected"

// defaultTokenExpiration is the kubelet's token lifetime when the source sets none.
const defaultTokenExpiration = 3600

// Token is a service account token and when it expires.
type Token struct {
	Value   string
	Expires time.Time
}

// TokenFetcher asks for a service account token bound to pod.
type TokenFetcher func(ctx context.Context, pod *v1.Pod, serviceAccount, audience string, expirationSeconds int64) (Token, error)

type tokenKey struct {
	uid, sa, audience string
	exp               int64
}

// token returns a cached token until 80% of its life has passed (the
// kubelet's rotation point), then a new one.
func (m *Manager) token(ctx context.Context, pod *v1.Pod, src *v1.ServiceAccountTokenProjection) (string, error) {
	if m.Tokens == nil {
		return "", errors.New("no source of service account tokens")
	}
	exp := int64(defaultTokenExpiration)
	if src.ExpirationSeconds != nil {
		exp = *src.ExpirationSeconds
	}
	sa := pod.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	key := tokenKey{string(pod.UID), sa, src.Audience, exp}
	now := m.clock.Now()
	m.mu.Lock()
	t, ok := m.tokens[key]
	m.mu.Unlock()
	if ok && now.Before(t.Expires.Add(-time.Duration(exp)*time.Second/5)) {
		return t.Value, nil
	}
	t, err := m.Tokens(ctx, pod, sa, src.Audience, exp)
	if err != nil {
		return "", fmt.Errorf("service account token for %s/%s: %w", pod.Namespace, sa, err)
	}
	if t.Expires.IsZero() {
		t.Expires = now.Add(time.Duration(exp) * time.Second)
	}
	m.mu.Lock()
	m.tokens[key] = t
	m.mu.Unlock()
	return t.Value, nil
}

// projected writes the union of its sources: configMaps, secrets,
// downwardAPI items and service account tokens.
func (m *Manager) projected(ctx context.Context, pod *v1.Pod, vol *v1.Volume) (string, error) {
	src := vol.Projected
	dir := m.Dir(pod.UID, PluginProjected, vol.Name)
	if !m.due(dir) {
		return dir, nil
	}
	mode := int32(defaultMode)
	if src.DefaultMode != nil {
		mode = *src.DefaultMode
	}
	payload := map[string]file{}
	merge := func(p map[string]file) {
		for k, v := range p {
			payload[k] = v
		}
	}
	fail := func(err error) (string, error) {
		m.forget(dir)
		if _, serr := os.Lstat(dir + "/" + dataDirName); serr == nil && !errors.Is(err, ErrNotFound) {
			m.log.Warn("projected volume refresh failed, keeping the last content", "pod", pod.Namespace+"/"+pod.Name,
				"volume", vol.Name, "error", err)
			return dir, nil
		}
		return "", err
	}
	for i, s := range src.Sources {
		switch {
		case s.ConfigMap != nil, s.Secret != nil:
			kind, name, items, optional := KindConfigMap, "", []v1.KeyToPath(nil), (*bool)(nil)
			if s.ConfigMap != nil {
				name, items, optional = s.ConfigMap.Name, s.ConfigMap.Items, s.ConfigMap.Optional
			} else {
				kind, name, items, optional = KindSecret, s.Secret.Name, s.Secret.Items, s.Secret.Optional
			}
			opt := optional != nil && *optional
			data, err := m.fetch(ctx, kind, pod.Namespace, name)
			if err != nil {
				if !(opt && errors.Is(err, ErrNotFound)) {
					return fail(fmt.Errorf("source %d: %s %s/%s: %w", i, kind, pod.Namespace, name, err))
				}
				data = nil
			}
			p, err := makePayload(data, items, &mode, opt)
			if err != nil {
				return fail(fmt.Errorf("source %d: %s %s/%s: %w", i, kind, pod.Namespace, name, err))
			}
			merge(p)
		case s.DownwardAPI != nil:
			for _, it := range s.DownwardAPI.Items {
				v, err := m.downwardItem(pod, it)
				if err != nil {
					return fail(fmt.Errorf("source %d: item %q: %w", i, it.Path, err))
				}
				fm := os.FileMode(mode) & 0o777
				if it.Mode != nil {
					fm = os.FileMode(*it.Mode) & 0o777
				}
				payload[it.Path] = file{[]byte(v), fm}
			}
		case s.ServiceAccountToken != nil:
			tok, err := m.token(ctx, pod, s.ServiceAccountToken)
			if err != nil {
				return fail(fmt.Errorf("source %d: %w", i, err))
			}
			payload[s.ServiceAccountToken.Path] = file{[]byte(tok), os.FileMode(mode) & 0o777}
		default:
			return fail(fmt.Errorf("source %d: projection type not supported", i))
		}
	}
	if err := m.write(dir, payload); err != nil {
		m.forget(dir)
		return "", err
	}
	return dir, nil
}
