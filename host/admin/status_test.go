package admin

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/edgehive/edgehive/host/metrics"
)

func TestWriteStatusTable(t *testing.T) {
	plugins := newFakeBackend().plugins
	plugins = append(plugins,
		PluginStatus{Name: "devicetwin", Group: "twin", State: metrics.StateFailed, Restarts: 10,
			LastError: "exit status 2:\tpanic: nil map\nwrite\n" + strings.Repeat("x", 80)},
		PluginStatus{Name: "servicebus", State: metrics.StateDisabled},
	)
	var buf bytes.Buffer
	if err := WriteStatusTable(&buf, plugins); err != nil {
		t.Fatal(err)
	}
	want := `NAME         GROUP  STATE     VERSION  PID   RESTARTS  UPTIME  QUEUE  LAST ERROR
edged        edged  running   1.0.0    1234  1         1h2m3s  3      -
metamanager  meta   running   1.0.0    1235  0         59s     0      -
devicetwin   twin   failed    -        -     10        -       0      exit status 2: panic: nil map write xxxxxxxxxxxxxxxxxxxxxxx…
servicebus   -      disabled  -        -     0         -       0      -
`
	if got := buf.String(); got != want {
		t.Fatalf("table:\n%s\nwant:\n%s", got, want)
	}
}

func TestWriteStatusTableEmpty(t *testing.T) {
	var buf bytes.Buffer
	if err := WriteStatusTable(&buf, nil); err != nil {
		t.Fatal(err)
	}
	if got, want := buf.String(), "NAME  GROUP  STATE  VERSION  PID  RESTARTS  UPTIME  QUEUE  LAST ERROR\n"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func TestUptime(t *testing.T) {
	for _, tc := range []struct {
		sec  float64
		want string
	}{
		{0, "-"}, {-1, "-"}, {0.4, "0s"}, {59.99, "59s"}, {3723.9, "1h2m3s"}, {86400 * 2, "48h0m0s"},
	} {
		if got := uptime(tc.sec); got != tc.want {
			t.Errorf("uptime(%v) = %q, want %q", tc.sec, got, tc.want)
		}
	}
}

func TestWriteStatusJSON(t *testing.T) {
	var buf bytes.Buffer
	if err := WriteStatusJSON(&buf, nil); err != nil {
		t.Fatal(err)
	}
	if got := buf.String(); got != "[]\n" {
		t.Fatalf("empty = %q, want \"[]\\n\"", got)
	}

	buf.Reset()
	in := newFakeBackend().plugins
	if err := WriteStatusJSON(&buf, in); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), "\n  {\n    \"name\": \"edged\",") {
		t.Fatalf("not indented:\n%s", buf.String())
	}
	var out []PluginStatus
	if err := json.Unmarshal(buf.Bytes(), &out); err != nil {
		t.Fatal(err)
	}
	if len(out) != 2 || out[0].Name != "edged" || out[0].UptimeSeconds != 3723.9 || out[0].APIVersion != "v1" {
		t.Fatalf("round trip = %+v", out)
	}
}
