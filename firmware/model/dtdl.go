package model

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
)

// The DTDL v2 subset the tracker's model uses (docs/model.md cites the
// language reference). Anything outside it (components, relationships,
// arrays, maps, extensions) is reported as unsupported rather than waved
// through.

// Context is the DTDL v2 context specifier.
const Context = "dtmi:dtdl:context;2"

// Interface is a DTDL Interface.
type Interface struct {
	Context     json.RawMessage `json:"@context"`
	ID          string          `json:"@id"`
	Type        Types           `json:"@type"`
	DisplayName string          `json:"displayName,omitempty"`
	Description string          `json:"description,omitempty"`
	Comment     string          `json:"comment,omitempty"`
	Contents    []Content       `json:"contents"`
	Schemas     []*Schema       `json:"schemas,omitempty"`

	named map[string]*Schema // Schemas by @id, set by Validate
}

// Content is a Telemetry, Property or Command.
type Content struct {
	Type        Types    `json:"@type"`
	Name        string   `json:"name"`
	DisplayName string   `json:"displayName,omitempty"`
	Description string   `json:"description,omitempty"`
	Comment     string   `json:"comment,omitempty"`
	Schema      *Schema  `json:"schema,omitempty"`
	Unit        string   `json:"unit,omitempty"`
	Writable    bool     `json:"writable,omitempty"`
	Request     *Payload `json:"request,omitempty"`
	Response    *Payload `json:"response,omitempty"`
}

// Kind is the content's class: Telemetry, Property or Command.
func (c *Content) Kind() string {
	if len(c.Type) == 0 {
		return ""
	}
	return c.Type[0]
}

// Payload is a Command's request or response.
type Payload struct {
	Name        string  `json:"name"`
	DisplayName string  `json:"displayName,omitempty"`
	Description string  `json:"description,omitempty"`
	Comment     string  `json:"comment,omitempty"`
	Schema      *Schema `json:"schema"`
}

// Schema is a primitive schema or a reference (Ref, when the JSON is a
// string), or an Object or Enum.
type Schema struct {
	Ref string `json:"-"`

	ID          string      `json:"@id,omitempty"`
	Type        Types       `json:"@type"`
	DisplayName string      `json:"displayName,omitempty"`
	Description string      `json:"description,omitempty"`
	Comment     string      `json:"comment,omitempty"`
	Fields      []Field     `json:"fields,omitempty"`
	ValueSchema string      `json:"valueSchema,omitempty"`
	EnumValues  []EnumValue `json:"enumValues,omitempty"`
}

// UnmarshalJSON takes a string (a primitive schema or a DTMI) or an object,
// rejecting members DTDL does not define.
func (s *Schema) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '"' {
		return json.Unmarshal(b, &s.Ref)
	}
	type plain Schema
	return strict(b, (*plain)(s))
}

// Field is an Object's field.
type Field struct {
	Name        string  `json:"name"`
	DisplayName string  `json:"displayName,omitempty"`
	Description string  `json:"description,omitempty"`
	Comment     string  `json:"comment,omitempty"`
	Schema      *Schema `json:"schema"`
}

// EnumValue is one of an Enum's values.
type EnumValue struct {
	Name        string `json:"name"`
	EnumValue   any    `json:"enumValue"`
	DisplayName string `json:"displayName,omitempty"`
	Description string `json:"description,omitempty"`
	Comment     string `json:"comment,omitempty"`
}

// Types is @type: one IRI or a list of them (a class and its co-types).
type Types []string

// UnmarshalJSON accepts a string or an array of strings.
func (t *Types) UnmarshalJSON(b []byte) error {
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		*t = Types{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return fmt.Errorf("@type %s: want a string or an array of strings", b)
	}
	*t = many
	return nil
}

func strict(b []byte, v any) error {
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	return d.Decode(v)
}

// UnmarshalJSON decodes strictly: a misspelt DTDL member is an error, as it
// is for the DTDL parser.
func (in *Interface) UnmarshalJSON(b []byte) error {
	type plain Interface
	return strict(b, (*plain)(in))
}

// UnmarshalJSON decodes strictly.
func (c *Content) UnmarshalJSON(b []byte) error {
	type plain Content
	return strict(b, (*plain)(c))
}

// UnmarshalJSON decodes strictly.
func (f *Field) UnmarshalJSON(b []byte) error {
	type plain Field
	return strict(b, (*plain)(f))
}

// UnmarshalJSON decodes strictly.
func (p *Payload) UnmarshalJSON(b []byte) error {
	type plain Payload
	return strict(b, (*plain)(p))
}

// UnmarshalJSON decodes strictly.
func (e *EnumValue) UnmarshalJSON(b []byte) error {
	type plain EnumValue
	return strict(b, (*plain)(e))
}

var (
	// A DTMI: "dtmi:" path segments separated by colons, ";" and a version
	// of 1 to 9 digits without a leading zero. A segment has letters,
	// digits and underscores, does not start with a digit and does not end
	// with an underscore; one starting with an underscore is a system
	// segment, not allowed in model documents.
	dtmiRe = regexp.MustCompile(`^dtmi:[A-Za-z](?:[A-Za-z0-9_]*[A-Za-z0-9])?(?::[A-Za-z](?:[A-Za-z0-9_]*[A-Za-z0-9])?)*;[1-9][0-9]{0,8}$`)
	// A name: up to 64 letters, digits and underscores, starting with a
	// letter and ending with a letter or digit.
	nameRe = regexp.MustCompile(`^[A-Za-z](?:[A-Za-z0-9_]{0,62}[A-Za-z0-9])?$`)
)

// ValidDTMI reports whether id is a user DTMI.
func ValidDTMI(id string) bool { return len(id) <= 2048 && dtmiRe.MatchString(id) }

// primitives are DTDL v2's primitive schemas; numeric ones may carry a
// semantic type.
var primitives = map[string]bool{
	"boolean": false, "date": false, "dateTime": false, "duration": false, "string": false, "time": false,
	"double": true, "float": true, "integer": true, "long": true,
}

// semanticUnits are the DTDL v2 semantic types this checker knows and the
// units each allows (the language reference's table, for the types the
// model uses or might).
var semanticUnits = map[string][]string{
	"Temperature":      {"degreeCelsius", "degreeFahrenheit", "kelvin"},
	"Pressure":         {"bar", "inchesOfMercury", "inchesOfWater", "kilopascal", "millibar", "millimetresOfMercury", "pascal", "poundPerSquareInch"},
	"RelativeHumidity": {"percent", "unity"},
	"Latitude":         {"degreeOfArc", "minuteOfArc", "radian", "secondOfArc", "turn"},
	"Longitude":        {"degreeOfArc", "minuteOfArc", "radian", "secondOfArc", "turn"},
	"TimeSpan":         {"day", "hour", "microsecond", "millisecond", "minute", "nanosecond", "second", "year"},
	"DataSize":         {"bit", "byte", "kibibyte", "mebibyte", "gibibyte"},
	"Distance":         {"centimetre", "foot", "kilometre", "metre", "mile", "nauticalMile"},
	"Velocity":         {"kilometrePerHour", "knot", "metrePerSecond", "milePerHour"},
}

// maxDepth is DTDL v2's limit on nested complex schemas.
const maxDepth = 5

// Validate checks the interface against the DTDL v2 rules the model relies
// on: context, DTMIs, names (valid and unique), element classes, semantic
// types with their units on numeric schemas, schemas that resolve to a
// primitive or to an Object or Enum, and the length limits. It returns
// every problem found.
func (in *Interface) Validate() error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf("model: "+format, a...)) }

	var ctx any
	if err := json.Unmarshal(in.Context, &ctx); err != nil || ctx != Context {
		bad("@context %s; want %q", in.Context, Context)
	}
	if !ValidDTMI(in.ID) || len(in.ID) > 128 {
		bad("@id %q is not a DTMI of at most 128 characters", in.ID)
	}
	if !slices.Equal(in.Type, Types{"Interface"}) {
		bad("@type %v; want Interface", in.Type)
	}
	texts(bad, "interface", in.DisplayName, in.Description, in.Comment)

	in.named = map[string]*Schema{}
	for _, s := range in.Schemas {
		if !ValidDTMI(s.ID) {
			bad("schema @id %q is not a DTMI", s.ID)
			continue
		}
		if in.named[s.ID] != nil {
			bad("schema @id %q defined twice", s.ID)
		}
		in.named[s.ID] = s
	}
	for _, s := range in.Schemas {
		in.validateSchema(bad, "schema "+s.ID, s, 1)
	}

	if len(in.Contents) > 300 {
		bad("%d contents; at most 300", len(in.Contents))
	}
	seen := map[string]bool{}
	for i := range in.Contents {
		c := &in.Contents[i]
		where := fmt.Sprintf("%s %q", c.Kind(), c.Name)
		if !nameRe.MatchString(c.Name) {
			bad("%s: invalid name", where)
		}
		if seen[c.Name] {
			bad("%s: name used twice", where)
		}
		seen[c.Name] = true
		texts(bad, where, c.DisplayName, c.Description, c.Comment)
		switch c.Kind() {
		case "Telemetry", "Property":
			if c.Writable && c.Kind() != "Property" {
				bad("%s: only a Property is writable", where)
			}
			if c.Request != nil || c.Response != nil {
				bad("%s: request and response belong to a Command", where)
			}
			if c.Schema == nil {
				bad("%s: no schema", where)
				continue
			}
			in.validateSchema(bad, where, c.Schema, 1)
			in.validateSemantic(bad, where, c)
		case "Command":
			if len(c.Type) != 1 || c.Schema != nil || c.Unit != "" || c.Writable {
				bad("%s: a Command has no co-type, schema, unit or writable", where)
			}
			for _, p := range []*Payload{c.Request, c.Response} {
				if p == nil {
					continue
				}
				if !nameRe.MatchString(p.Name) || p.Schema == nil {
					bad("%s: payload needs a valid name and a schema", where)
					continue
				}
				texts(bad, where+" payload", p.DisplayName, p.Description, p.Comment)
				in.validateSchema(bad, where+" payload", p.Schema, 1)
			}
		default:
			bad("%s: class %v is not Telemetry, Property or Command (not supported here)", where, c.Type)
		}
	}
	return errors.Join(errs...)
}

func (in *Interface) validateSemantic(bad func(string, ...any), where string, c *Content) {
	if len(c.Type) == 1 {
		if c.Unit != "" {
			bad("%s: unit %q without a semantic type", where, c.Unit)
		}
		return
	}
	if len(c.Type) > 2 {
		bad("%s: more than one semantic type %v", where, c.Type[1:])
		return
	}
	units, ok := semanticUnits[c.Type[1]]
	if !ok {
		bad("%s: semantic type %q unknown to this checker", where, c.Type[1])
		return
	}
	if !slices.Contains(units, c.Unit) {
		bad("%s: unit %q is not one of %s's %v", where, c.Unit, c.Type[1], units)
	}
	if !primitives[c.Schema.Ref] {
		bad("%s: a semantic type needs a numeric schema, not %q", where, c.Schema.Ref)
	}
}

func (in *Interface) validateSchema(bad func(string, ...any), where string, s *Schema, depth int) {
	if s.Ref != "" {
		if _, ok := primitives[s.Ref]; ok {
			return
		}
		if in.named[s.Ref] == nil {
			bad("%s: schema %q is neither a primitive nor defined in schemas", where, s.Ref)
		}
		return
	}
	if depth > maxDepth {
		bad("%s: complex schemas nested deeper than %d", where, maxDepth)
		return
	}
	texts(bad, where, s.DisplayName, s.Description, s.Comment)
	switch {
	case slices.Equal(s.Type, Types{"Object"}):
		if len(s.Fields) == 0 || len(s.Fields) > 30 || s.ValueSchema != "" || s.EnumValues != nil {
			bad("%s: an Object has 1 to 30 fields and nothing else", where)
		}
		seen := map[string]bool{}
		for _, f := range s.Fields {
			fw := where + " field " + f.Name
			if !nameRe.MatchString(f.Name) || seen[f.Name] {
				bad("%s: invalid or repeated name", fw)
			}
			seen[f.Name] = true
			texts(bad, fw, f.DisplayName, f.Description, f.Comment)
			if f.Schema == nil {
				bad("%s: no schema", fw)
				continue
			}
			in.validateSchema(bad, fw, f.Schema, depth+1)
		}
	case slices.Equal(s.Type, Types{"Enum"}):
		if s.ValueSchema != "integer" && s.ValueSchema != "string" {
			bad("%s: Enum valueSchema %q; want integer or string", where, s.ValueSchema)
		}
		if len(s.EnumValues) == 0 || len(s.EnumValues) > 100 || s.Fields != nil {
			bad("%s: an Enum has 1 to 100 enumValues and no fields", where)
		}
		names, values := map[string]bool{}, map[any]bool{}
		for _, v := range s.EnumValues {
			if !nameRe.MatchString(v.Name) || names[v.Name] {
				bad("%s: enum value name %q invalid or repeated", where, v.Name)
			}
			names[v.Name] = true
			_, isString := v.EnumValue.(string)
			f, isNum := v.EnumValue.(float64)
			if (s.ValueSchema == "string" && !isString) || (s.ValueSchema == "integer" && (!isNum || f != float64(int32(f)))) {
				bad("%s: enum value %v is not a %s", where, v.EnumValue, s.ValueSchema)
			}
			if values[v.EnumValue] {
				bad("%s: enum value %v repeated", where, v.EnumValue)
			}
			values[v.EnumValue] = true
		}
	default:
		bad("%s: schema class %v is not Object or Enum (not supported here)", where, s.Type)
	}
}

// texts checks the length limits of displayName (64), description and
// comment (512).
func texts(bad func(string, ...any), where, display, desc, comment string) {
	if n := len([]rune(display)); n > 64 {
		bad("%s: displayName is %d characters; at most 64", where, n)
	}
	if n := len([]rune(desc)); n > 512 {
		bad("%s: description is %d characters; at most 512", where, n)
	}
	if n := len([]rune(comment)); n > 512 {
		bad("%s: comment is %d characters; at most 512", where, n)
	}
}
