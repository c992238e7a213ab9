package supervisor

import (
	"strings"
	"testing"
	"time"

	"github.com/edgehive/edgehive/sdk"
)

func TestBackoff(t *testing.T) {
	const (
		delay    = 100 * time.Millisecond
		maxDelay = 3 * time.Second
	)
	// The un-jittered wait before restart n: delay doubled per failure, capped.
	full := []time.Duration{
		1:  100 * time.Millisecond,
		2:  200 * time.Millisecond,
		3:  400 * time.Millisecond,
		4:  800 * time.Millisecond,
		5:  1600 * time.Millisecond,
		6:  3 * time.Second, // 3.2s capped
		7:  3 * time.Second,
		8:  3 * time.Second,
		9:  3 * time.Second,
		10: 3 * time.Second,
	}
	for n := 1; n <= 10; n++ {
		for _, r := range []float64{0, 0.5, 1} {
			got := Backoff(delay, maxDelay, n, func() float64 { return r })
			d := full[n]
			want := d/2 + time.Duration(r*float64(d-d/2))
			if got != want {
				t.Errorf("Backoff(n=%d, rnd=%v) = %v, want %v", n, r, got, want)
			}
			if got < d/2 || got > d {
				t.Errorf("Backoff(n=%d, rnd=%v) = %v, outside [%v, %v]", n, r, got, d/2, d)
			}
			if got > maxDelay {
				t.Errorf("Backoff(n=%d) = %v exceeds max %v", n, got, maxDelay)
			}
		}
		if n > 1 && full[n-1] < maxDelay {
			lo := Backoff(delay, maxDelay, n, func() float64 { return 0 })
			prevLo := Backoff(delay, maxDelay, n-1, func() float64 { return 0 })
			if lo != min(2*prevLo, maxDelay/2) {
				t.Errorf("n=%d: lower bound %v is not double %v (capped)", n, lo, prevLo)
			}
		}
	}
}

func TestBackoffEdges(t *testing.T) {
	one := func() float64 { return 1 }
	zero := func() float64 { return 0 }
	tests := []struct {
		name       string
		delay, max time.Duration
		n          int
		rnd        func() float64
		want       time.Duration
	}{
		{name: "n=0 counts as the first restart", delay: time.Second, max: time.Minute, n: 0, rnd: one, want: time.Second},
		{name: "negative n counts as the first restart", delay: time.Second, max: time.Minute, n: -5, rnd: zero, want: 500 * time.Millisecond},
		{name: "delay above max is capped", delay: time.Minute, max: 10 * time.Second, n: 1, rnd: one, want: 10 * time.Second},
		{name: "delay equal to max", delay: 10 * time.Second, max: 10 * time.Second, n: 4, rnd: zero, want: 5 * time.Second},
		{name: "zero delay", delay: 0, max: time.Minute, n: 3, rnd: one, want: 0},
		{name: "huge n does not overflow", delay: time.Second, max: 30 * time.Second, n: 1 << 30, rnd: one, want: 30 * time.Second},
		{name: "defaults: 1s up to 30s, 6th restart", delay: time.Second, max: 30 * time.Second, n: 6, rnd: one, want: 30 * time.Second},
		{name: "defaults: 5th restart", delay: time.Second, max: 30 * time.Second, n: 5, rnd: zero, want: 8 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Backoff(tt.delay, tt.max, tt.n, tt.rnd); got != tt.want {
				t.Fatalf("Backoff(%v, %v, %d) = %v, want %v", tt.delay, tt.max, tt.n, got, tt.want)
			}
		})
	}
}

func TestNegotiateAPIVersion(t *testing.T) {
	tests := []struct {
		name    string
		plugin  []string
		want    string
		wantErr bool
	}{
		{name: "v1 only", plugin: []string{sdk.APIVersion1}, want: sdk.APIVersion1},
		{name: "newer and v1", plugin: []string{"v2", "v1"}, want: sdk.APIVersion1},
		{name: "v1 listed after unknowns", plugin: []string{"v0", "v9", "v1"}, want: sdk.APIVersion1},
		{name: "duplicates", plugin: []string{"v1", "v1"}, want: sdk.APIVersion1},
		{name: "only a newer version", plugin: []string{"v2"}, wantErr: true},
		{name: "none", plugin: nil, wantErr: true},
		{name: "empty string", plugin: []string{""}, wantErr: true},
		{name: "case matters", plugin: []string{"V1"}, wantErr: true},
		{name: "no prefix match", plugin: []string{"v1beta1", "v10"}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := NegotiateAPIVersion(tt.plugin)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("NegotiateAPIVersion(%q) = %q, want an error", tt.plugin, got)
				}
				if got != "" || !strings.Contains(err.Error(), "no common plugin API version") {
					t.Errorf("got %q, err %v", got, err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("NegotiateAPIVersion(%q) = %q, %v; want %q", tt.plugin, got, err, tt.want)
			}
		})
	}
}
