package main

import (
	"fmt"
	"sort"
	"strings"

	"github.com/smartybridge/smartybridge/decrypt"
)

// envPrefix prefixes every configuration variable: SMARTY_KEY, SMARTY_MODE…
const envPrefix = "smarty"

// KeyConfig holds the decryption settings shared by every command.
type KeyConfig struct {
	Key       optionalKey `envconfig:"KEY" desc:"the meter's P1 decryption key from the grid operator: 32 hex digits"`
	Keys      keyMap      `envconfig:"KEYS" desc:"keys per meter for a decryptor serving several: TITLE:KEY,TITLE:KEY (TITLE = system title in 16 hex digits)"`
	AuthKey   optionalKey `envconfig:"AUTH_KEY" desc:"GCM authentication key; Smarty meters use 00112233445566778899AABBCCDDEEFF"`
	VerifyTag bool        `envconfig:"VERIFY_TAG" default:"true" desc:"verify each frame's GCM tag; false only when the authentication key is unknown (frames must then pass the telegram CRC)"`
}

// decryptOptions turns the settings into decrypt.Options.
func (c KeyConfig) decryptOptions() decrypt.Options {
	o := decrypt.Options{Keys: c.Keys.keys, SkipTag: !c.VerifyTag}
	if c.Key.set {
		k := c.Key.key
		o.Key = &k
	}
	if c.AuthKey.set {
		o.AuthKey = c.AuthKey.key
	}
	return o
}

// hasKey reports whether any decryption key is configured.
func (c KeyConfig) hasKey() bool { return c.Key.set || len(c.Keys.keys) > 0 }

// optionalKey is a key that may be left empty. It never prints itself.
type optionalKey struct {
	key decrypt.Key
	set bool
}

// Decode implements envconfig.Decoder.
func (k *optionalKey) Decode(s string) error {
	if strings.TrimSpace(s) == "" {
		*k = optionalKey{}
		return nil
	}
	v, err := decrypt.ParseKey(s)
	if err != nil {
		return err
	}
	*k = optionalKey{key: v, set: true}
	return nil
}

func (k optionalKey) String() string {
	if k.set {
		return "[redacted]"
	}
	return ""
}

// keyMap is SMARTY_KEYS: keys per system title. It never prints the keys.
type keyMap struct {
	keys map[decrypt.Title]decrypt.Key
}

// Decode implements envconfig.Decoder for "TITLE:KEY,TITLE:KEY".
func (m *keyMap) Decode(s string) error {
	m.keys = map[decrypt.Title]decrypt.Key{}
	for item := range strings.SplitSeq(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		title, key, ok := strings.Cut(item, ":")
		if !ok {
			return fmt.Errorf("entry %d: want TITLE:KEY", len(m.keys)+1)
		}
		t, err := decrypt.ParseTitle(strings.TrimSpace(title))
		if err != nil {
			return err
		}
		k, err := decrypt.ParseKey(key)
		if err != nil {
			return fmt.Errorf("key for %s: %w", t, err)
		}
		m.keys[t] = k
	}
	return nil
}

func (m keyMap) String() string {
	titles := make([]string, 0, len(m.keys))
	for t := range m.keys {
		titles = append(titles, t.String()+":[redacted]")
	}
	sort.Strings(titles)
	return strings.Join(titles, ",")
}
