package bridge

import (
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"slices"
	"strings"
	"time"

	"github.com/smartybridge/smartybridge/decrypt"
	"github.com/smartybridge/smartybridge/internal/statefile"
)

// Forward mode: the decryptors' confirmations, and the key trusted for each meter.

// message takes a decryptor's confirmation: the frames it names are
// settled, if it is signed with the key trusted for the meter.
func (f *Forwarder) message(topic string, payload []byte) {
	title, ok := strings.CutPrefix(topic, f.o.TopicPrefix+"/confirm/")
	if !ok {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.titles[title] && !slices.ContainsFunc(f.entries, func(e *entry) bool { return e.title == title }) {
		// Another forwarder's meter on the same broker: its confirmations
		// settle nothing here, and the key trusted here is not its.
		return
	}
	c, pub, err := parseConfirmation(title, payload)
	ok = err == nil && f.trusted(title, pub, c)
	if !ok && err == nil && f.fo.ConfirmKey == nil && f.pins[title] == "" {
		// A meter no decryptor confirmed yet, and nothing here to check
		// this key against: wait for one that names a frame as published.
		f.log.Debug("confirmation of a meter without trusted key yet; waiting for one that confirms a frame", "meter", title)
		return
	}
	if !ok {
		f.forged.Add(1)
		if ok, held := f.logs.allow("forged " + title); ok {
			f.log.Warn("ignored a confirmation not signed with the key trusted for this meter", "meter", title, "similar_lines_held_back", held,
				"hint", "another client publishes on "+topic+" (restrict it with the broker's ACL), or the meter key changed: then set SMARTY_CONFIRM_KEY to the confirm_key the decryptors log, or delete "+f.pinFile)
		}
		return
	}
	verdicts := map[string]string{}
	for _, s := range c.Settled {
		id, v, _ := strings.Cut(s, ":")
		verdicts[id] = v
	}
	published, rejected := 0, 0
	f.entries = slices.DeleteFunc(f.entries, func(e *entry) bool {
		v, hit := verdicts[e.id]
		if !hit || e.plain || e.title != title {
			return false
		}
		f.drop(e)
		if v == verdictOK {
			published++
		} else {
			rejected++
			if ok, held := f.logs.allow("rejected " + title + v); ok {
				f.log.Warn("a decryptor rejected a frame of this meter; dropped it, the next ones follow", "meter", title, "verdict", verdictText(v),
					"similar_lines_held_back", held)
			}
		}
		return true
	})
	if published+rejected == 0 {
		return
	}
	if published > 0 {
		f.pin(title, pub)
	}
	f.nConfirmed.Add(int64(published))
	f.rejected.Add(int64(rejected))
	f.lastAck, f.resendGap = time.Now(), f.fo.ResendAfter
	select {
	case f.wake <- struct{}{}: // the next frame of the meter may go
	default:
	}
	if f.stuck {
		f.stuck = false
		f.log.Info("a decryptor confirms frames again", "meter", title, "queued", len(f.entries))
	}
}

func verdictText(v string) string {
	switch v {
	case verdictDup:
		return "duplicate (its counter did not grow)"
	case verdictAuth:
		return "failed authentication (damaged on the line, or the decryptor has the wrong key)"
	case verdictBad:
		return "no valid telegram inside (damaged on the line)"
	}
	return v
}

// trusted decides whether pub may settle frames of title: the configured
// key, else the key pinned for the meter; a meter without pin trusts a key
// on a confirmation that names one of the frames held here as published.
// Called with f.mu held.
func (f *Forwarder) trusted(title string, pub ed25519.PublicKey, c *confirmation) bool {
	if f.fo.ConfirmKey != nil {
		return pub.Equal(f.fo.ConfirmKey)
	}
	if pinned, ok := f.pins[title]; ok {
		return pinned == hex.EncodeToString(pub)
	}
	for _, s := range c.Settled {
		id, v, _ := strings.Cut(s, ":")
		if v != verdictOK {
			continue
		}
		for _, e := range f.entries {
			if e.id == id && e.title == title {
				return true
			}
		}
	}
	return false
}

// pin records that a decryptor confirmed a frame of title as published
// with pub: the meter is real, and pub is its key from now on. Called
// with f.mu held.
func (f *Forwarder) pin(title string, pub ed25519.PublicKey) {
	if _, ok := f.pins[title]; ok || len(f.pins) >= maxTitles {
		return
	}
	hexPub := hex.EncodeToString(pub)
	f.pins[title] = hexPub
	if t, err := decrypt.ParseTitle(title); err == nil {
		f.fresh = append(f.fresh, t)
	}
	f.savePins()
	if f.fo.ConfirmKey == nil {
		f.log.Info("trusting the decryptors' confirmation key for this meter from now on", "meter", title, "confirm_key", hexPub,
			"hint", "set SMARTY_CONFIRM_KEY to it to trust only this key from the start")
	}
}

// loadPins reads the keys pinned by an earlier run. A file that cannot be
// read is set aside: the forwarder then trusts, for each meter, the first
// key that confirms one of its frames again, as on its first start.
func (f *Forwarder) loadPins() {
	pins := map[string]string{}
	if aside, err := statefile.ReadJSON(f.pinFile, &pins); err != nil {
		f.log.Warn("pinned confirmation keys unreadable; starting afresh: the first decryptor key that confirms a frame of a meter is trusted again",
			"file", f.pinFile, "set_aside", aside, "err", err,
			"hint", "set SMARTY_CONFIRM_KEY to the confirm_key the decryptors log, to trust only that key")
		return
	}
	for t, p := range pins {
		if len(f.pins) < maxTitles {
			f.pins[t] = p
		}
	}
}

// savePins writes the pinned keys. A forwarder that cannot keep them
// trusts the next key after a restart, so a failure is said (once per
// pin; pins are few). Called with f.mu held.
func (f *Forwarder) savePins() {
	b, err := json.Marshal(f.pins)
	if err == nil {
		err = statefile.Write(f.pinFile, b, 0o600)
	}
	if err != nil {
		f.log.Warn("cannot save the pinned confirmation key; after a restart the first key that confirms a frame is trusted again",
			"file", f.pinFile, "err", err, "hint", "free space or fix permissions in SMARTY_STATE_DIR, or set SMARTY_CONFIRM_KEY")
	}
}
