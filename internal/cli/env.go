package cli

import (
	"fmt"
	"maps"
	"os"
	"reflect"
	"strconv"
	"strings"

	"github.com/kelseyhightower/envconfig"
)

// Env is where a command's settings come from: the process environment,
// and values set by the command that started it (the add-on's options, the
// demo's defaults), which take precedence. It is never written to the
// process environment, so that one command's settings cannot leak into
// another's, or into a test's.
type Env struct {
	set map[string]string
}

// processEnv is the process environment, with nothing set over it.
func processEnv() Env { return Env{} }

// With returns e with vars set over it.
func (e Env) With(vars map[string]string) Env {
	set := maps.Clone(e.set)
	if set == nil {
		set = map[string]string{}
	}
	maps.Copy(set, vars)
	return Env{set: set}
}

// Lookup returns the value of a variable and whether it is set.
func (e Env) Lookup(k string) (string, bool) {
	if v, ok := e.set[k]; ok {
		return v, true
	}
	return os.LookupEnv(k)
}

// Get returns the value of a variable, "" when unset.
func (e Env) Get(k string) string {
	v, _ := e.Lookup(k)
	return v
}

// Or returns the value of a variable, def when unset or empty.
func (e Env) Or(k, def string) string {
	if v := e.Get(k); v != "" {
		return v
	}
	return def
}

// Process fills spec from the SMARTY_* variables; a bad value is a
// configuration error (exit 2) that names the variable and what it wants,
// in words of its own: envconfig's message quotes the value, and a value
// may be a key or a password.
//
// envconfig reads only the process environment (it takes no lookup
// function), so it fills spec first, defaults included; the values set
// over the environment are then decoded into their fields the way
// envconfig decodes them: through the field's envconfig.Decoder, else as
// a string, a whole number or a decimal, the only other kinds our
// settings use.
func (e Env) Process(spec any) error {
	err := envconfig.Process(envPrefix, spec)
	if err == nil {
		err = e.override(reflect.ValueOf(spec).Elem())
	}
	return configErrorOf(err)
}

// override decodes the variables set over the environment into the fields
// of v (a struct, embedded structs included) that name them.
func (e Env) override(v reflect.Value) error {
	t := v.Type()
	for i := range t.NumField() {
		sf, fv := t.Field(i), v.Field(i)
		if sf.Anonymous && sf.Type.Kind() == reflect.Struct {
			if err := e.override(fv); err != nil {
				return err
			}
			continue
		}
		if !sf.IsExported() || sf.Tag.Get("ignored") == "true" {
			continue
		}
		tag := sf.Tag.Get("envconfig")
		if tag == "" {
			tag = sf.Name // envconfig's name for an untagged field
		}
		name := strings.ToUpper(envPrefix + "_" + tag)
		value, ok := e.set[name]
		if !ok {
			continue
		}
		perr := &envconfig.ParseError{KeyName: name, FieldName: sf.Name, TypeName: sf.Type.String(), Value: value}
		if d, ok := fv.Addr().Interface().(envconfig.Decoder); ok {
			if perr.Err = d.Decode(value); perr.Err != nil {
				return perr
			}
			continue
		}
		switch fv.Kind() {
		case reflect.String:
			fv.SetString(value)
		case reflect.Int:
			n, err := strconv.ParseInt(value, 0, strconv.IntSize)
			if err != nil {
				perr.TypeName, perr.Err = "int", err
				return perr
			}
			fv.SetInt(n)
		case reflect.Float64:
			f, err := strconv.ParseFloat(value, 64)
			if err != nil {
				perr.TypeName, perr.Err = "float64", err
				return perr
			}
			fv.SetFloat(f)
		default:
			return fmt.Errorf("%s: a setting of kind %s cannot be set over the environment", name, fv.Kind())
		}
	}
	return nil
}
