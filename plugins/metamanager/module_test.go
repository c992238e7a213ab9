package metamanager

import (
	"testing"

	"github.com/edgehive/edgehive/plugins/internal/plugintest"
	"github.com/edgehive/edgehive/sdk"
	"github.com/edgehive/edgehive/sdk/sdktest"
)

func newModule() sdk.Module { return New() }

func TestModule(t *testing.T) {
	plugintest.Run(t, plugintest.Case{New: newModule, Name: "metamanager", Group: "meta", Version: Version, Sample: "sample.hcl"})
}

func TestDefaults(t *testing.T) {
	plugintest.DefaultsAgree(t, schema(), defaultConfig())
}

func TestUnhandledCounted(t *testing.T) {
	m := New()
	h := sdktest.New(t, m, sdktest.Options{})
	msg := sdk.NewMessage("").BuildRouter("edged", sdk.GroupUser, "default/thing/a", sdk.OpUpdate)
	for range 2 {
		if err := h.Deliver(msg); err != nil {
			t.Fatal(err)
		}
	}
	if err := h.Deliver(sdk.NewMessage("").BuildRouter("edged", sdk.GroupUser, "default/thing/b", sdk.OpDelete)); err != nil {
		t.Fatal(err)
	}
	if got := m.unhandled.Load(); got != 2 {
		t.Fatalf("unhandled = %d, want 2 (the redelivery is dropped)", got)
	}
	if len(h.Sent()) != 0 {
		t.Fatalf("sent %+v", h.Sent())
	}
}
