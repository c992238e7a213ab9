package main

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		args    []string
		want    options
		wantErr bool
	}{
		{args: []string{"http://a/x"}, want: options{url: "http://a/x", method: "GET"}},
		{args: []string{"-sS", "-f", "a:8080/echo?msg=x"}, want: options{url: "http://a:8080/echo?msg=x", method: "GET", silent: true, showError: true, fail: true}},
		{args: []string{"-d", "k=v", "-H", "X-A: 1", "http://a"}, want: options{url: "http://a", method: "POST", data: "k=v", headers: []string{"X-A: 1"}}},
		{args: []string{"-X", "PUT", "--max-time", "1.5", "http://a"}, want: options{url: "http://a", method: "PUT", timeout: 1500_000_000}},
		{args: []string{}, wantErr: true},
		{args: []string{"-Z", "http://a"}, wantErr: true},
		{args: []string{"-o"}, wantErr: true},
		{args: []string{"http://a", "http://b"}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			got, err := parse(tt.args)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err %v, want error %v", err, tt.wantErr)
			}
			if err == nil && (got.url != tt.want.url || got.method != tt.want.method || got.data != tt.want.data ||
				!slices.Equal(got.headers, tt.want.headers) || got.silent != tt.want.silent || got.showError != tt.want.showError ||
				got.fail != tt.want.fail || got.timeout != tt.want.timeout) {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestRun(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/missing" {
			http.NotFound(w, r)
			return
		}
		b, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %s %s %s", r.Method, r.URL.RequestURI(), r.Header.Get("X-A"), b)
	}))
	defer srv.Close()
	tests := []struct {
		args     []string
		code     int
		stdout   string
		inStderr string
	}{
		{[]string{srv.URL + "/echo?msg=poststart"}, 0, "GET /echo?msg=poststart  ", ""},
		{[]string{"-d", "x=1", "-H", "X-A: h", srv.URL + "/p"}, 0, "POST /p h x=1", ""},
		{[]string{srv.URL + "/missing"}, 0, "404 page not found\n", ""},
		{[]string{"-f", srv.URL + "/missing"}, 22, "", "error: 404"},
		{[]string{"-s", "-f", srv.URL + "/missing"}, 22, "", ""},
		{[]string{"http://127.0.0.1:1/"}, 7, "", "curl: (7)"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			o, err := parse(tt.args)
			if err != nil {
				t.Fatal(err)
			}
			var stdout, stderr bytes.Buffer
			if code := run(o, &stdout, &stderr); code != tt.code {
				t.Fatalf("exit %d, want %d (stderr %q)", code, tt.code, stderr.String())
			}
			if stdout.String() != tt.stdout || (tt.inStderr == "" && stderr.Len() != 0) || !strings.Contains(stderr.String(), tt.inStderr) {
				t.Fatalf("stdout %q stderr %q", stdout.String(), stderr.String())
			}
		})
	}
}
