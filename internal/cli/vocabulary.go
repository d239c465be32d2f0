package cli

import (
	"context"
	"log/slog"
	"sort"
	"strings"
)

// In the add-on a household never sees a SMARTY_* variable: it sets
// options on the add-on's configuration page. Every log line and every
// Problem fix says the option by the name that page shows
// (addon/translations/en.yaml; TestAddonVocabulary holds the two
// together).

// addonOptionNames are the options' names on the configuration page.
var addonOptionNames = map[string]string{
	"mode": "Mode", "device": "Serial port", "tcp_address": "Network P1 dongle", "key": "Decryption key",
	"keys": "Keys of several meters", "keys_file": "Keys file", "auth_key": "Authentication key", "verify_tag": "Verify frames",
	"baud": "Serial speed", "share_group": "Share group", "mqtt_host": "MQTT broker host", "mqtt_port": "MQTT broker port",
	"mqtt_tls": "TLS", "mqtt_ca_file": "Broker CA certificate", "mqtt_username": "MQTT user", "mqtt_password": "MQTT password",
	"mqtt_client_id": "MQTT client id", "topic_prefix": "Topic prefix", "discovery_prefix": "Discovery prefix",
	"discovery": "Discovery style", "meter_timeout": "Meter timeout", "queue_max": "Queue size", "session_expiry": "Session expiry",
	"confirm_key": "Confirmation key", "log_level": "Log level", "reference_power": "Reference power", "overrun_price": "Overrun price",
}

// addonPrimaryOption is the option that stands for a variable several
// options set.
var addonPrimaryOption = map[string]string{"SMARTY_DEVICE": "device", "SMARTY_MQTT_URL": "mqtt_host"}

// addonVocabulary rewrites the SMARTY_* variables in a text into the
// add-on's options: `SMARTY_KEY` becomes `the option “Decryption key”`,
// `SMARTY_BAUD=115200` `the option “Serial speed” set to 115200`.
func addonVocabulary() *strings.Replacer {
	byVariable := map[string]string{}
	for option, variable := range addonVariables {
		if p, ok := addonPrimaryOption[variable]; ok && p != option {
			continue
		}
		byVariable[variable] = addonOptionNames[option]
	}
	byVariable["SMARTY_STATE_DIR"] = "" // the add-on's own storage
	// Longer names first, so that SMARTY_KEYS is not read as SMARTY_KEY.
	vars := make([]string, 0, len(byVariable))
	for v := range byVariable {
		vars = append(vars, v)
	}
	sort.Slice(vars, func(i, j int) bool {
		return len(vars[i]) > len(vars[j]) || len(vars[i]) == len(vars[j]) && vars[i] < vars[j]
	})
	var pairs []string
	for _, v := range vars {
		name := byVariable[v]
		if name == "" {
			pairs = append(pairs, v, "the add-on's storage (/data)")
			continue
		}
		pairs = append(pairs, v+"=", "the option “"+name+"” set to ", v, "the option “"+name+"”")
	}
	return strings.NewReplacer(pairs...)
}

// wordsHandler rewrites the message and the text attributes of every
// record (slog), as a Replacer says.
type wordsHandler struct {
	slog.Handler
	words *strings.Replacer
}

func (h wordsHandler) Handle(ctx context.Context, r slog.Record) error {
	out := slog.NewRecord(r.Time, r.Level, h.words.Replace(r.Message), r.PC)
	r.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(h.rewrite(a))
		return true
	})
	return h.Handler.Handle(ctx, out)
}

func (h wordsHandler) rewrite(a slog.Attr) slog.Attr {
	if a.Value.Kind() == slog.KindString {
		a.Value = slog.StringValue(h.words.Replace(a.Value.String()))
	}
	return a
}

func (h wordsHandler) WithAttrs(as []slog.Attr) slog.Handler {
	for i := range as {
		as[i] = h.rewrite(as[i])
	}
	return wordsHandler{h.Handler.WithAttrs(as), h.words}
}

func (h wordsHandler) WithGroup(name string) slog.Handler {
	return wordsHandler{h.Handler.WithGroup(name), h.words}
}
