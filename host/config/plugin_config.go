package config

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hcldec"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
	ctyjson "github.com/zclconf/go-cty/cty/json"

	"github.com/edgehive/edgehive/sdk"
)

// DecodePluginConfig decodes p.ConfigBody against the schema the plugin
// declared and returns the JSON the host hands to the plugin's SetConfig.
//
// Attributes absent from the body get the schema default; absent optional
// attributes without a default, and absent optional non-repeated blocks, are
// left out of the JSON. Absent repeated blocks become []. Numbers are JSON
// numbers; TypeDuration values stay strings but must parse with
// time.ParseDuration. A missing config block is decoded as an empty one, so
// defaults still apply and missing required attributes are reported at
// p.DeclRange. A nil schema accepts only an empty config block.
func DecodePluginConfig(p *PluginConfig, schema *sdk.Schema) (json.RawMessage, hcl.Diagnostics) {
	if schema == nil {
		schema = &sdk.Schema{}
	}
	spec, err := specFor(schema)
	if err != nil {
		return nil, hcl.Diagnostics{{
			Severity: hcl.DiagError,
			Summary:  "Invalid plugin config schema",
			Detail:   fmt.Sprintf("Plugin %q declared a config schema the host cannot use: %v.", p.Name, err),
			Subject:  p.DeclRange.Ptr(),
		}}
	}
	body := p.ConfigBody
	if body == nil {
		// An empty native-syntax body located at the plugin header, so that
		// "missing required" diagnostics point at the plugin block.
		body = &hclsyntax.Body{SrcRange: p.DeclRange, EndRange: p.DeclRange}
	}
	val, diags := hcldec.Decode(body, spec, nil)
	for _, d := range diags {
		if d.Subject == nil || d.Subject.Filename == "" {
			d.Subject = p.DeclRange.Ptr()
		}
	}
	sortDiags(diags)
	if diags.HasErrors() {
		return nil, diags
	}
	out, err := json.Marshal(toJSON(val))
	if err != nil {
		return nil, append(diags, &hcl.Diagnostic{
			Severity: hcl.DiagError,
			Summary:  "Cannot encode plugin config",
			Detail:   fmt.Sprintf("Plugin %q: %v.", p.Name, err),
			Subject:  p.DeclRange.Ptr(),
		})
	}
	return out, diags
}

func ctyType(t sdk.AttrType) (cty.Type, error) {
	switch t {
	case sdk.TypeString, sdk.TypeDuration:
		return cty.String, nil
	case sdk.TypeNumber:
		return cty.Number, nil
	case sdk.TypeBool:
		return cty.Bool, nil
	case sdk.TypeListOfString:
		return cty.List(cty.String), nil
	case sdk.TypeMapOfString:
		return cty.Map(cty.String), nil
	case sdk.TypeListOfNumber:
		return cty.List(cty.Number), nil
	}
	return cty.NilType, fmt.Errorf("unknown type %s", t)
}

// specFor converts a plugin schema to an hcldec spec. It checks the schema
// itself too (names, types, defaults), because a schema received over gRPC
// has not been through sdk.Schema.Validate in this process.
func specFor(s *sdk.Schema) (hcldec.ObjectSpec, error) {
	spec := hcldec.ObjectSpec{}
	for _, a := range s.Attributes {
		if a.Name == "" || !hclsyntax.ValidIdentifier(a.Name) {
			return nil, fmt.Errorf("attribute name %q is not a valid identifier", a.Name)
		}
		if _, dup := spec[a.Name]; dup {
			return nil, fmt.Errorf("%q declared twice", a.Name)
		}
		ty, err := ctyType(a.Type)
		if err != nil {
			return nil, fmt.Errorf("attribute %q: %w", a.Name, err)
		}
		var as hcldec.Spec = &hcldec.AttrSpec{Name: a.Name, Type: ty, Required: a.Required}
		if a.Type == sdk.TypeDuration {
			as = &hcldec.ValidateSpec{Wrapped: as, Func: durationCheck(a.Name)}
		}
		if a.Default != nil {
			def, err := defaultValue(a, ty)
			if err != nil {
				return nil, fmt.Errorf("attribute %q: %w", a.Name, err)
			}
			if !def.IsNull() {
				if a.Required {
					return nil, fmt.Errorf("attribute %q is required and has a default", a.Name)
				}
				as = &hcldec.DefaultSpec{Primary: as, Default: &hcldec.LiteralSpec{Value: def}}
			}
		}
		spec[a.Name] = as
	}
	for _, b := range s.Blocks {
		if b.Name == "" || !hclsyntax.ValidIdentifier(b.Name) {
			return nil, fmt.Errorf("block name %q is not a valid identifier", b.Name)
		}
		if _, dup := spec[b.Name]; dup {
			return nil, fmt.Errorf("%q declared twice", b.Name)
		}
		nested, err := specFor(&b.Schema)
		if err != nil {
			return nil, fmt.Errorf("block %q: %w", b.Name, err)
		}
		if b.Repeated {
			min := 0
			if b.Required {
				min = 1
			}
			spec[b.Name] = &hcldec.BlockListSpec{TypeName: b.Name, Nested: nested, MinItems: min}
		} else {
			spec[b.Name] = &hcldec.BlockSpec{TypeName: b.Name, Nested: nested, Required: b.Required}
		}
	}
	return spec, nil
}

func durationCheck(name string) func(cty.Value) hcl.Diagnostics {
	return func(v cty.Value) hcl.Diagnostics {
		if v.IsNull() || !v.IsKnown() {
			return nil
		}
		if _, err := time.ParseDuration(v.AsString()); err != nil {
			return hcl.Diagnostics{{
				Severity: hcl.DiagError,
				Summary:  "Invalid duration",
				Detail: fmt.Sprintf("Inappropriate value for attribute %q: %v; use a number with a unit, such as \"200ms\", \"5s\" or \"5m\".",
					name, err),
			}}
		}
		return nil
	}
}

// defaultValue converts a schema default (a Go value, or json.RawMessage
// when the schema came over gRPC) to a cty value of type ty.
func defaultValue(a sdk.Attribute, ty cty.Type) (cty.Value, error) {
	var raw []byte
	switch v := a.Default.(type) {
	case json.RawMessage:
		raw = v
	case []byte:
		raw = v
	default:
		b, err := json.Marshal(v)
		if err != nil {
			return cty.NilVal, fmt.Errorf("encode default: %w", err)
		}
		raw = b
	}
	val, err := ctyjson.Unmarshal(raw, ty)
	if err != nil {
		return cty.NilVal, fmt.Errorf("default %s is not a %s: %w", raw, a.Type, err)
	}
	if a.Type == sdk.TypeDuration && !val.IsNull() {
		if _, err := time.ParseDuration(val.AsString()); err != nil {
			return cty.NilVal, fmt.Errorf("default: %w", err)
		}
	}
	return val, nil
}

// toJSON converts a decoded, wholly known cty value to a value
// encoding/json marshals as intended: null object attributes are dropped,
// numbers keep their exact decimal text.
func toJSON(v cty.Value) any {
	if v.IsNull() {
		return nil
	}
	ty := v.Type()
	switch {
	case ty == cty.String:
		return v.AsString()
	case ty == cty.Number:
		return json.Number(v.AsBigFloat().Text('f', -1))
	case ty == cty.Bool:
		return v.True()
	case ty.IsListType() || ty.IsSetType() || ty.IsTupleType():
		out := make([]any, 0, v.LengthInt())
		for it := v.ElementIterator(); it.Next(); {
			_, e := it.Element()
			out = append(out, toJSON(e))
		}
		return out
	case ty.IsMapType():
		out := make(map[string]any, v.LengthInt())
		for it := v.ElementIterator(); it.Next(); {
			k, e := it.Element()
			out[k.AsString()] = toJSON(e)
		}
		return out
	case ty.IsObjectType():
		out := map[string]any{}
		for it := v.ElementIterator(); it.Next(); {
			k, e := it.Element()
			if e.IsNull() {
				continue
			}
			out[k.AsString()] = toJSON(e)
		}
		return out
	}
	return nil
}
