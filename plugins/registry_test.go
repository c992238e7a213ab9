package plugins

import (
	"slices"
	"testing"
)

func TestBuiltin(t *testing.T) {
	want := []string{"devicetwin", "edged", "edgehub", "eventbus", "metamanager", "servicebus"}
	if got := Names(); !slices.Equal(got, want) {
		t.Fatalf("Names() = %v, want %v", got, want)
	}
	groups := map[string]string{}
	for name, factory := range Builtin() {
		a, b := factory(), factory()
		if a == b {
			t.Errorf("%s: the factory returned the same module twice", name)
		}
		info := a.Info()
		if info.Name != name {
			t.Errorf("registered as %q, Info().Name is %q", name, info.Name)
		}
		if err := a.ConfigSchema().Validate(); err != nil {
			t.Errorf("%s: %v", name, err)
		}
		groups[name] = info.Group
	}
	wantGroups := map[string]string{"edged": "edged", "edgehub": "hub", "metamanager": "meta", "eventbus": "bus", "devicetwin": "twin", "servicebus": "servicebus"}
	for name, g := range wantGroups {
		if groups[name] != g {
			t.Errorf("%s: group %q, want %q", name, groups[name], g)
		}
	}
	m := Builtin()
	delete(m, "edged")
	if _, ok := Builtin()["edged"]; !ok {
		t.Fatal("Builtin shares its map between calls")
	}
}
