// Package plugintest is the test suite every built-in module runs: identity,
// schema, sample config, and the message behaviour they share.
package plugintest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	ctyjson "github.com/zclconf/go-cty/cty/json"

	"github.com/edgehive/edgehive/plugins/internal/pluginkit"
	"github.com/edgehive/edgehive/sdk"
	"github.com/edgehive/edgehive/sdk/sdktest"
)

// Case describes the module under test.
type Case struct {
	New     func() sdk.Module
	Name    string
	Group   string
	Version string
	Sample  string // path of sample.hcl
	Config  string // config JSON the module is started with (e.g. an ephemeral port); "" for defaults
	// Handles is set by a module whose real message handling has replaced
	// the placeholder: its answers are its own, so the suite checks only that
	// any message is survived (no panic) and a redelivery has no effect.
	Handles bool
}

// Run runs the shared suite.
func Run(t *testing.T, c Case) {
	t.Helper()
	t.Run("info", func(t *testing.T) {
		info := c.New().Info()
		if info.Name != c.Name || info.Group != c.Group || info.Version != c.Version || info.Description == "" {
			t.Fatalf("Info() = %+v", info)
		}
		if !slices.Equal(info.APIVersions, []string{sdk.APIVersion1}) {
			t.Fatalf("APIVersions = %v", info.APIVersions)
		}
	})
	// Modules still on the placeholder count what they do not handle.
	if _, ok := c.New().(interface{ Unhandled() uint64 }); ok {
		t.Run("unhandled messages are counted once", func(t *testing.T) { checkUnhandled(t, c) })
	}
	t.Run("schema", func(t *testing.T) {
		s := c.New().ConfigSchema()
		if s == nil {
			t.Fatal("no schema")
		}
		if err := s.Validate(); err != nil {
			t.Fatal(err)
		}
		for _, a := range s.Attributes {
			if a.Description == "" || (a.Default == nil && !a.Required) {
				t.Errorf("attribute %q needs a description and a default", a.Name)
			}
		}
	})
	t.Run("sample", func(t *testing.T) {
		raw, keys := SampleJSON(t, c.Sample)
		var want []string
		sch := c.New().ConfigSchema()
		for _, a := range sch.Attributes {
			want = append(want, a.Name)
		}
		for _, b := range sch.Blocks {
			want = append(want, b.Name)
		}
		sort.Strings(want)
		if !slices.Equal(keys, want) {
			t.Fatalf("%s sets %v, want every key of the schema %v", c.Sample, keys, want)
		}
		m := c.New()
		cfg, err := sdktest.BuildConfig(m, sdktest.Options{ConfigJSON: raw, DataDir: t.TempDir()})
		if err != nil {
			t.Fatal(err)
		}
		if err := m.SetConfig(cfg); err != nil {
			t.Fatalf("SetConfig(sample) = %v", err)
		}
	})
	t.Run("defaults", func(t *testing.T) {
		sdktest.New(t, c.New(), sdktest.Options{ConfigJSON: c.Config})
	})
	t.Run("unknown key", func(t *testing.T) {
		m := c.New()
		cfg, err := sdktest.BuildConfig(m, sdktest.Options{ConfigJSON: `{"no_such_key":1}`, RawConfig: true})
		if err != nil {
			t.Fatal(err)
		}
		if err := m.SetConfig(cfg); err == nil {
			t.Fatal("SetConfig accepted an unknown key")
		}
	})
	if c.Handles {
		t.Run("messages are survived", func(t *testing.T) { checkSurvives(t, c) })
	}
	// A module still on the placeholder gets the placeholder's answers checked.
	_, placeholder := c.New().(interface{ Unhandled() uint64 })
	if placeholder {
		t.Run("placeholder messages", func(t *testing.T) {
			h := sdktest.New(t, c.New(), sdktest.Options{ConfigJSON: c.Config})
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()

			tests := []struct {
				name    string
				sync    bool
				op, res string
				want    string // handled text in the answer; "" means no answer
			}{
				{"sync query", true, sdk.OpQuery, "default/pod/nginx", sdk.OpQuery + " default/pod/nginx"},
				{"sync without resource", true, sdk.OpKeepalive, "", sdk.OpKeepalive},
				{"async insert", false, sdk.OpInsert, "default/pod/nginx", ""},
				{"async query", false, sdk.OpQuery, "default/pod/nginx", ""},
			}
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					before := len(h.Sent())
					msg := sdk.NewMessage("").BuildRouter("tester", sdk.GroupUser, tt.res, tt.op)
					msg.Header.Sync = tt.sync
					if err := h.Deliver(msg); err != nil {
						t.Fatalf("Deliver: %v", err)
					}
					if tt.want == "" {
						if got := h.Sent(); len(got) != before {
							t.Fatalf("an async message was answered: %+v", got[before:])
						}
						return
					}
					sent, ok := h.WaitSent(ctx, sdktest.ResponseTo(msg.Header.ID))
					if !ok {
						t.Fatal("no answer")
					}
					var reply pluginkit.Reply
					if err := sent.Message.DecodeContent(&reply); err != nil {
						t.Fatal(err)
					}
					want := pluginkit.Reply{Module: c.Name, Version: c.Version, Handled: tt.want}
					if reply != want || sent.Message.Router.Operation != sdk.OpResponse {
						t.Fatalf("answer %s %+v, want %+v", sent.Message, reply, want)
					}
					// A redelivery of the same message is not answered twice.
					if err := h.Deliver(msg); err != nil {
						t.Fatal(err)
					}
					if n := countResponses(h.Sent(), msg.Header.ID); n != 1 {
						t.Fatalf("%d answers after a redelivery, want 1", n)
					}
				})
			}
		})
	}
	t.Run("health", func(t *testing.T) {
		h := sdktest.New(t, c.New(), sdktest.Options{ConfigJSON: c.Config})
		if err := h.Health(context.Background()); err != nil {
			t.Fatal(err)
		}
	})
}

// checkSurvives delivers messages of every kind a module may meet, well or
// badly formed, twice each: Handle may refuse them (an error) but must not
// panic, and the duplicate delivery must send nothing.
func checkSurvives(t *testing.T, c Case) {
	h := sdktest.New(t, c.New(), sdktest.Options{ConfigJSON: c.Config})
	tests := []struct {
		name, source, group, op, res, content string
		sync                                  bool
	}{
		{"sync query", "tester", sdk.GroupUser, sdk.OpQuery, "default/pod/nginx", "", true},
		{"async query", "tester", sdk.GroupUser, sdk.OpQuery, "default/pod/nginx", "", false},
		{"async insert", "tester", sdk.GroupUser, sdk.OpInsert, "default/pod/nginx", `{}`, false},
		{"sync without resource", "tester", sdk.GroupUser, sdk.OpKeepalive, "", "", true},
		{"cloud insert without content", "edgecontroller", sdk.WireGroupResource, sdk.OpInsert, "default/pod/x", "", false},
		{"cloud insert with a number", "edgecontroller", sdk.WireGroupResource, sdk.OpUpdate, "default/pod/x", `42`, false},
		{"cloud insert on a bad resource", "edgecontroller", sdk.WireGroupResource, sdk.OpInsert, "nonsense", `{}`, false},
		{"edged query on a bad resource", "edged", sdk.GroupMeta, sdk.OpQuery, "/", "", true},
		{"edged update without resource", "edged", sdk.GroupMeta, sdk.OpUpdate, "", `{}`, false},
		{"unknown operation", "edgecontroller", sdk.WireGroupResource, "frobnicate", "default/pod/x", `"x"`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			msg := sdk.NewMessage("").BuildRouter(tt.source, tt.group, tt.res, tt.op)
			msg.Header.Sync = tt.sync
			if tt.content != "" {
				msg.Content = json.RawMessage(tt.content)
			}
			first := h.Deliver(msg)
			if errors.Is(first, sdktest.ErrPanic) {
				t.Fatal(first)
			}
			// A handled message is not handled again; a refused one may be
			// retried, and is refused the same way.
			before := len(h.Sent())
			second := h.Deliver(msg)
			if errors.Is(second, sdktest.ErrPanic) || (first == nil) != (second == nil) {
				t.Fatalf("first delivery: %v, the same message again: %v", first, second)
			}
			if first == nil {
				if got := h.Sent(); len(got) != before {
					t.Fatalf("a duplicate delivery sent %+v", got[before:])
				}
			}
		})
	}
}

func countResponses(sent []sdktest.Sent, parent string) int {
	n := 0
	for _, s := range sent {
		if s.Kind == sdktest.KindResponse && s.Target == parent {
			n++
		}
	}
	return n
}

// SampleJSON parses a sample.hcl holding one config block of attributes and
// returns the block as the JSON the host would pass, and its sorted keys.
func SampleJSON(t testing.TB, path string) (string, []string) {
	t.Helper()
	src, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	raw, keys, err := sampleJSON(src, path)
	if err != nil {
		t.Fatal(err)
	}
	return raw, keys
}

func sampleJSON(src []byte, path string) (string, []string, error) {
	file, diags := hclsyntax.ParseConfig(src, path, hcl.InitialPos)
	if diags.HasErrors() {
		return "", nil, diags
	}
	body := file.Body.(*hclsyntax.Body)
	if len(body.Attributes) != 0 || len(body.Blocks) != 1 || body.Blocks[0].Type != "config" {
		return "", nil, fmt.Errorf("%s: want exactly one config { ... } block", path)
	}
	out, keys, err := blockJSON(body.Blocks[0].Body, path)
	if err != nil {
		return "", nil, err
	}
	sort.Strings(keys)
	b, err := json.Marshal(out)
	if err != nil {
		return "", nil, err
	}
	return string(b), keys, nil
}

// blockJSON turns a block's attributes, and its nested blocks (each given at
// most once, as the schema's non-repeated blocks are), into JSON values; the
// keys are the names of both.
func blockJSON(inner *hclsyntax.Body, path string) (map[string]json.RawMessage, []string, error) {
	out := map[string]json.RawMessage{}
	var keys []string
	for name, attr := range inner.Attributes {
		v, diags := attr.Expr.Value(nil)
		if diags.HasErrors() {
			return nil, nil, diags
		}
		b, err := ctyjson.SimpleJSONValue{Value: v}.MarshalJSON()
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %s: %w", path, name, err)
		}
		out[name] = b
		keys = append(keys, name)
	}
	for _, blk := range inner.Blocks {
		if _, dup := out[blk.Type]; dup || len(blk.Labels) != 0 {
			return nil, nil, fmt.Errorf("%s: block %q: want one unlabelled block", path, blk.Type)
		}
		nested, _, err := blockJSON(blk.Body, path)
		if err != nil {
			return nil, nil, err
		}
		b, err := json.Marshal(nested)
		if err != nil {
			return nil, nil, err
		}
		out[blk.Type] = b
		keys = append(keys, blk.Type)
	}
	return out, keys, nil
}

// DefaultsAgree checks that the schema's defaults, filled in as the host fills
// them and decoded into a zero T, give want: the module's own defaults.
func DefaultsAgree[T any](t *testing.T, schema *sdk.Schema, want T) {
	t.Helper()
	raw, err := sdktest.ApplySchema(schema, nil)
	if err != nil {
		t.Fatal(err)
	}
	var got T
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&got); err != nil {
		t.Fatalf("decode schema defaults %s: %v", raw, err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("schema defaults decode to\n%+v\nthe module's defaults are\n%+v", got, want)
	}
}

// RejectsBadConfig passes each config block (JSON, the key of cases) through
// the host's checks and SetConfig and requires an error containing the
// text it maps to (usually the key's name).
func RejectsBadConfig(t *testing.T, newModule func() sdk.Module, cases map[string]string) {
	t.Helper()
	blocks := make([]string, 0, len(cases))
	for b := range cases {
		blocks = append(blocks, b)
	}
	sort.Strings(blocks)
	for _, block := range blocks {
		want := cases[block]
		t.Run(block, func(t *testing.T) {
			m := newModule()
			cfg, err := sdktest.BuildConfig(m, sdktest.Options{ConfigJSON: block, DataDir: t.TempDir()})
			if err == nil {
				err = m.SetConfig(cfg)
			}
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("got %v, want an error containing %q", err, want)
			}
		})
	}
}

func checkUnhandled(t *testing.T, c Case) {
	m := c.New()
	counter := m.(interface{ Unhandled() uint64 })
	h := sdktest.New(t, m, sdktest.Options{DataDir: t.TempDir()})
	msg := sdk.NewMessage("").BuildRouter("metamanager", sdk.GroupUser, "default/thing/a", sdk.OpUpdate)
	for range 2 { // the second delivery is a duplicate and is dropped
		if err := h.Deliver(msg); err != nil {
			t.Fatal(err)
		}
	}
	if err := h.Deliver(sdk.NewMessage("").BuildRouter("metamanager", sdk.GroupUser, "default/thing/b", sdk.OpDelete)); err != nil {
		t.Fatal(err)
	}
	if got := counter.Unhandled(); got != 2 {
		t.Fatalf("unhandled = %d, want 2", got)
	}
	if len(h.Sent()) != 0 {
		t.Fatalf("sent %+v", h.Sent())
	}
}
