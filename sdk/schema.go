package sdk

import (
	"encoding/json"
	"fmt"
	"time"

	pluginv1 "github.com/edgehive/edgehive/sdk/proto/plugin/v1"
)

// AttrType is the type of a config attribute.
type AttrType int

// Attribute types a plugin can declare.
const (
	TypeString AttrType = iota + 1
	TypeNumber
	TypeBool
	TypeDuration
	TypeListOfString
	TypeMapOfString
	TypeListOfNumber
)

func (t AttrType) String() string {
	switch t {
	case TypeString:
		return "string"
	case TypeNumber:
		return "number"
	case TypeBool:
		return "bool"
	case TypeDuration:
		return "duration"
	case TypeListOfString:
		return "list(string)"
	case TypeMapOfString:
		return "map(string)"
	case TypeListOfNumber:
		return "list(number)"
	}
	return fmt.Sprintf("AttrType(%d)", int(t))
}

// Schema declares the attributes and blocks a plugin accepts in its HCL
// config block. Anything not declared is an error at load time.
type Schema struct {
	Attributes []Attribute
	Blocks     []Block
}

// Attribute is one "name = value" in a config block.
type Attribute struct {
	Name        string
	Type        AttrType
	Required    bool
	Default     any // filled in when the attribute is absent; must match Type
	Description string
}

// Block is a nested block with a schema of its own.
type Block struct {
	Name        string
	Schema      Schema
	Repeated    bool
	Required    bool
	Description string
}

// Validate checks the schema itself: names present and unique, types known,
// defaults of the declared type.
func (s *Schema) Validate() error {
	seen := map[string]bool{}
	for _, a := range s.Attributes {
		if a.Name == "" {
			return fmt.Errorf("schema: attribute with empty name")
		}
		if seen[a.Name] {
			return fmt.Errorf("schema: %q declared twice", a.Name)
		}
		seen[a.Name] = true
		if a.Type < TypeString || a.Type > TypeListOfNumber {
			return fmt.Errorf("schema: attribute %q: unknown type %d", a.Name, a.Type)
		}
		if a.Default != nil {
			if a.Required {
				return fmt.Errorf("schema: attribute %q is required and has a default", a.Name)
			}
			if err := checkDefault(a); err != nil {
				return err
			}
		}
	}
	for _, b := range s.Blocks {
		if b.Name == "" {
			return fmt.Errorf("schema: block with empty name")
		}
		if seen[b.Name] {
			return fmt.Errorf("schema: %q declared twice", b.Name)
		}
		seen[b.Name] = true
		if err := b.Schema.Validate(); err != nil {
			return fmt.Errorf("block %q: %w", b.Name, err)
		}
	}
	return nil
}

func checkDefault(a Attribute) error {
	ok := false
	switch v := a.Default.(type) {
	case string:
		ok = a.Type == TypeString
		if a.Type == TypeDuration {
			_, err := time.ParseDuration(v)
			ok = err == nil
		}
	case int, int32, int64, uint, uint32, uint64, float32, float64:
		ok = a.Type == TypeNumber
	case bool:
		ok = a.Type == TypeBool
	case []string:
		ok = a.Type == TypeListOfString
	case map[string]string:
		ok = a.Type == TypeMapOfString
	case []float64, []int:
		ok = a.Type == TypeListOfNumber
	}
	if !ok {
		return fmt.Errorf("schema: attribute %q: default %v (%T) is not a %s", a.Name, a.Default, a.Default, a.Type)
	}
	return nil
}

// ToProto encodes the schema for GetInfo.
func (s *Schema) ToProto() (*pluginv1.Schema, error) {
	out := &pluginv1.Schema{}
	for _, a := range s.Attributes {
		pa := &pluginv1.Attribute{
			Name:        a.Name,
			Type:        pluginv1.Attribute_Type(a.Type),
			Required:    a.Required,
			Description: a.Description,
		}
		if a.Default != nil {
			raw, err := json.Marshal(a.Default)
			if err != nil {
				return nil, fmt.Errorf("schema: attribute %q: encode default: %w", a.Name, err)
			}
			pa.DefaultJson = raw
		}
		out.Attributes = append(out.Attributes, pa)
	}
	for _, b := range s.Blocks {
		inner, err := b.Schema.ToProto()
		if err != nil {
			return nil, fmt.Errorf("block %q: %w", b.Name, err)
		}
		out.Blocks = append(out.Blocks, &pluginv1.Block{
			Name: b.Name, Schema: inner, Repeated: b.Repeated, Required: b.Required, Description: b.Description,
		})
	}
	return out, nil
}

// SchemaFromProto decodes a schema received from a plugin. Defaults stay as
// their JSON text (json.RawMessage).
func SchemaFromProto(p *pluginv1.Schema) (*Schema, error) {
	s := &Schema{}
	if p == nil {
		return s, nil
	}
	for _, a := range p.GetAttributes() {
		if a.GetType() < pluginv1.Attribute_TYPE_STRING || a.GetType() > pluginv1.Attribute_TYPE_LIST_OF_NUMBER {
			return nil, fmt.Errorf("schema: attribute %q: unknown type %d", a.GetName(), a.GetType())
		}
		attr := Attribute{Name: a.GetName(), Type: AttrType(a.GetType()), Required: a.GetRequired(), Description: a.GetDescription()}
		if d := a.GetDefaultJson(); len(d) > 0 {
			if !json.Valid(d) {
				return nil, fmt.Errorf("schema: attribute %q: default is not JSON", a.GetName())
			}
			attr.Default = json.RawMessage(d)
		}
		s.Attributes = append(s.Attributes, attr)
	}
	for _, b := range p.GetBlocks() {
		inner, err := SchemaFromProto(b.GetSchema())
		if err != nil {
			return nil, fmt.Errorf("block %q: %w", b.GetName(), err)
		}
		s.Blocks = append(s.Blocks, Block{Name: b.GetName(), Schema: *inner, Repeated: b.GetRepeated(), Required: b.GetRequired(), Description: b.GetDescription()})
	}
	return s, nil
}

// Duration is a time.Duration that decodes from a string such as "5s", the
// form the host passes TypeDuration attributes in.
type Duration time.Duration

// UnmarshalJSON accepts a duration string or a number of nanoseconds.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		v, err := time.ParseDuration(s)
		if err != nil {
			return fmt.Errorf("duration %q: %w", s, err)
		}
		*d = Duration(v)
		return nil
	}
	var n int64
	if err := json.Unmarshal(b, &n); err != nil {
		return fmt.Errorf("duration: want a string like \"5s\": %w", err)
	}
	*d = Duration(n)
	return nil
}

// MarshalJSON writes the duration as a string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// D returns the time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }
