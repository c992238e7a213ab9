// Command curl is a small HTTP client packed as /usr/bin/curl in the local
// e2e agnhost image. Upstream's agnhost image carries curl, and the
// conformance tests' exec hooks run "curl http://…"; Debian's curl is
// dynamically linked and cannot go into a busybox root. It does what those
// tests need: a request to one URL, the body to stdout or a file.
//
//	curl [-s] [-S] [-f] [-k] [-L] [-i] [-X METHOD] [-d DATA] [-H 'K: V'] [-m SECONDS] [-o FILE] URL
package main

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

type options struct {
	url, method, data, output  string
	headers                    []string
	silent, showError, fail    bool
	insecure, follow, withHead bool
	timeout                    time.Duration
}

func parse(args []string) (options, error) {
	o := options{}
	value := func(i *int, flag string) (string, error) {
		if *i+1 >= len(args) {
			return "", fmt.Errorf("option %s needs a value", flag)
		}
		*i++
		return args[*i], nil
	}
	for i := 0; i < len(args); i++ {
		a := args[i]
		if !strings.HasPrefix(a, "-") || a == "-" {
			if o.url != "" {
				return o, fmt.Errorf("one URL only (%q and %q)", o.url, a)
			}
			o.url = a
			continue
		}
		var err error
		switch a {
		case "-X", "--request":
			o.method, err = value(&i, a)
		case "-d", "--data", "--data-raw", "--data-binary":
			o.data, err = value(&i, a)
		case "-H", "--header":
			var h string
			h, err = value(&i, a)
			o.headers = append(o.headers, h)
		case "-o", "--output":
			o.output, err = value(&i, a)
		case "-m", "--max-time":
			var s string
			if s, err = value(&i, a); err == nil {
				var secs float64
				if secs, err = strconv.ParseFloat(s, 64); err == nil {
					o.timeout = time.Duration(secs * float64(time.Second))
				}
			}
		case "--silent":
			o.silent = true
		case "--show-error":
			o.showError = true
		case "--fail":
			o.fail = true
		case "--insecure":
			o.insecure = true
		case "--location":
			o.follow = true
		case "--include":
			o.withHead = true
		default:
			// Short flags, alone or together ("-sS").
			for _, c := range a[1:] {
				switch c {
				case 's':
					o.silent = true
				case 'S':
					o.showError = true
				case 'f':
					o.fail = true
				case 'k':
					o.insecure = true
				case 'L':
					o.follow = true
				case 'i':
					o.withHead = true
				default:
					return o, fmt.Errorf("option %s is not supported", a)
				}
			}
		}
		if err != nil {
			return o, err
		}
	}
	if o.url == "" {
		return o, errors.New("no URL given")
	}
	if !strings.Contains(o.url, "://") {
		o.url = "http://" + o.url
	}
	if o.method == "" {
		o.method = http.MethodGet
		if o.data != "" {
			o.method = http.MethodPost
		}
	}
	return o, nil
}

// run returns curl's exit code: 0, 22 for an HTTP error with -f, 28 for a
// timeout, 7 when it could not connect, 2 for bad usage.
func run(o options, stdout, stderr io.Writer) int {
	complain := func(code int, err error) int {
		if !o.silent || o.showError {
			fmt.Fprintf(stderr, "curl: (%d) %v\n", code, err)
		}
		return code
	}
	var body io.Reader
	if o.data != "" {
		body = strings.NewReader(o.data)
	}
	req, err := http.NewRequest(o.method, o.url, body)
	if err != nil {
		return complain(3, err)
	}
	for _, h := range o.headers {
		k, v, ok := strings.Cut(h, ":")
		if !ok {
			return complain(2, fmt.Errorf("header %q is not 'Name: value'", h))
		}
		req.Header.Add(strings.TrimSpace(k), strings.TrimSpace(v))
	}
	if o.data != "" && req.Header.Get("Content-Type") == "" {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	client := &http.Client{
		Timeout:   o.timeout,
		Transport: &http.Transport{Proxy: http.ProxyFromEnvironment, TLSClientConfig: &tls.Config{InsecureSkipVerify: o.insecure}}, //nolint:gosec // -k asks for it
	}
	if !o.follow {
		client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	}
	resp, err := client.Do(req)
	if err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) || strings.Contains(err.Error(), "Client.Timeout") {
			return complain(28, err)
		}
		return complain(7, err)
	}
	defer resp.Body.Close()
	if o.fail && resp.StatusCode >= 400 {
		return complain(22, fmt.Errorf("the requested URL returned error: %d", resp.StatusCode))
	}
	out := stdout
	if o.output != "" && o.output != "-" {
		f, err := os.Create(o.output)
		if err != nil {
			return complain(23, err)
		}
		defer f.Close()
		out = f
	}
	if o.withHead {
		fmt.Fprintf(out, "%s %s\r\n", resp.Proto, resp.Status)
		_ = resp.Header.Write(out)
		fmt.Fprint(out, "\r\n")
	}
	if _, err := io.Copy(out, resp.Body); err != nil {
		return complain(56, err)
	}
	return 0
}

func main() {
	o, err := parse(os.Args[1:])
	if err != nil {
		fmt.Fprintf(os.Stderr, "curl: %v\n", err)
		os.Exit(2)
	}
	os.Exit(run(o, os.Stdout, os.Stderr))
}
