package cloudhub

import (
	"strings"
	"testing"
	"time"
)

// Outside input: bearer tokens and the ExtKeyUsages header never panic,
// and only tokens this CA signed pass.
func FuzzVerifyJWT(f *testing.F) {
	now := time.Unix(1_800_000_000, 0)
	ca, err := NewCA(now)
	if err != nil {
		f.Fatal(err)
	}
	good := ca.NewToken(now.Add(time.Hour))
	_, jwt, _ := strings.Cut(good, ".")
	f.Add(jwt)
	f.Add("a.b.c")
	f.Add("eyJhbGciOiJub25lIn0.eyJleHAiOjF9.")
	f.Add("")
	f.Fuzz(func(t *testing.T, tok string) {
		_, err := ca.VerifyJWT(tok, now)
		if err == nil && tok != jwt {
			// A different string may only pass if it is the same JWT.
			t.Fatalf("accepted %q", tok)
		}
	})
}

func FuzzParseUsages(f *testing.F) {
	for _, s := range []string{"", "[1]", "[2,1]", "[0]", "{}", "[1e99]", "null"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, h string) {
		usages, err := parseUsages(h)
		if err != nil {
			return
		}
		for _, u := range usages {
			if u != 1 && u != 2 {
				t.Fatalf("%q gave usage %d", h, u)
			}
		}
	})
}
