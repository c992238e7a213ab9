package sdktest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/edgehive/edgehive/sdk"
)

// ApplySchema checks a config block, as JSON, against schema the way the host
// checks a plugin's HCL block, and returns it with the defaults of absent
// attributes filled in. Unknown keys, missing required attributes or blocks,
// and values of the wrong type are errors naming the key; all of them are
// reported at once. A JSON null counts as absent.
func ApplySchema(schema *sdk.Schema, raw json.RawMessage) (json.RawMessage, error) {
	obj, err := applyBlock(schema, raw, "")
	if err != nil {
		return nil, err
	}
	out, err := json.Marshal(obj)
	if err != nil {
		return nil, fmt.Errorf("encode config: %w", err)
	}
	return out, nil
}

func applyBlock(schema *sdk.Schema, raw json.RawMessage, path string) (map[string]json.RawMessage, error) {
	var in map[string]json.RawMessage
	if len(bytes.TrimSpace(raw)) == 0 {
		raw = json.RawMessage("{}")
	}
	if err := json.Unmarshal(raw, &in); err != nil || in == nil {
		return nil, fmt.Errorf("%s: want an object", where(path))
	}
	var errs []error
	out := map[string]json.RawMessage{}
	known := map[string]bool{}
	for _, a := range schema.Attributes {
		known[a.Name] = true
		key := join(path, a.Name)
		v, ok := in[a.Name]
		if ok && !isNull(v) {
			if err := checkType(a.Type, v); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", key, err))
				continue
			}
			out[a.Name] = v
			continue
		}
		switch {
		case a.Required:
			errs = append(errs, fmt.Errorf("%s: required attribute is missing", key))
		case a.Default != nil:
			d, err := json.Marshal(a.Default)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: encode default: %w", key, err))
				continue
			}
			out[a.Name] = d
		}
	}
	for _, b := range schema.Blocks {
		known[b.Name] = true
		key := join(path, b.Name)
		v, ok := in[b.Name]
		if !ok || isNull(v) {
			if b.Required {
				errs = append(errs, fmt.Errorf("%s: required block is missing", key))
			}
			continue
		}
		if !b.Repeated {
			inner, err := applyBlock(&b.Schema, v, key)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			out[b.Name], _ = json.Marshal(inner)
			continue
		}
		var items []json.RawMessage
		if err := json.Unmarshal(v, &items); err != nil {
			errs = append(errs, fmt.Errorf("%s: want a list of blocks", key))
			continue
		}
		filled := make([]map[string]json.RawMessage, 0, len(items))
		for i, item := range items {
			inner, err := applyBlock(&b.Schema, item, fmt.Sprintf("%s[%d]", key, i))
			if err != nil {
				errs = append(errs, err)
				continue
			}
			filled = append(filled, inner)
		}
		out[b.Name], _ = json.Marshal(filled)
	}
	var unknown []string
	for k := range in {
		if !known[k] {
			unknown = append(unknown, k)
		}
	}
	sort.Strings(unknown)
	for _, k := range unknown {
		errs = append(errs, fmt.Errorf("%s: unknown key", join(path, k)))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return out, nil
}

func checkType(t sdk.AttrType, v json.RawMessage) error {
	var err error
	switch t {
	case sdk.TypeString:
		var s string
		err = json.Unmarshal(v, &s)
	case sdk.TypeNumber:
		var n float64
		err = json.Unmarshal(v, &n)
	case sdk.TypeBool:
		var b bool
		err = json.Unmarshal(v, &b)
	case sdk.TypeDuration:
		var s string
		if err = json.Unmarshal(v, &s); err == nil {
			if _, perr := time.ParseDuration(s); perr != nil {
				return fmt.Errorf("%q is not a duration such as \"10s\"", s)
			}
		}
	case sdk.TypeListOfString:
		var l []string
		err = json.Unmarshal(v, &l)
	case sdk.TypeMapOfString:
		var m map[string]string
		err = json.Unmarshal(v, &m)
	case sdk.TypeListOfNumber:
		var l []float64
		err = json.Unmarshal(v, &l)
	default:
		return fmt.Errorf("unknown attribute type %d", int(t))
	}
	if err != nil {
		return fmt.Errorf("want a %s, got %s", t, v)
	}
	return nil
}

func isNull(v json.RawMessage) bool { return string(bytes.TrimSpace(v)) == "null" }

func join(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

func where(path string) string {
	if path == "" {
		return "config"
	}
	return path
}
