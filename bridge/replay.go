package bridge

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/smartybridge/smartybridge/decrypt"
	"github.com/smartybridge/smartybridge/internal/statefile"
)

// Replay protection. A meter numbers its frames with a counter that only
// grows (GCM must never reuse a nonce under one key), so a frame whose
// counter is not above the last one accepted under the same key is a
// duplicate or a replay, whatever the source: a forwarder's re-send, a
// replayed TCP stream, a recorded capture. When the grid operator changes
// the key the counter restarts: a frame that authenticates under another
// key than the last one starts a new sequence.
//
// A meter whose counter restarts under the same key (a firmware update, a
// reset) would look like a replay forever. Its frames still authenticate,
// and the meter's clock (0-0:1.0.0, inside the encrypted telegram) goes on:
// restartAfter frames in a row that authenticate, with growing counters
// below the last accepted one and telegram times after the last accepted
// telegram's, prove the restart, and the book follows the new counter. A
// replay cannot fake that: a recorded frame carries the time the meter
// stamped when it sent it, which is before the last accepted telegram's,
// and stamping a later time takes the key. The time the new sequence began
// is kept (Since): frames of the old sequence, whose counters are now
// above the book's, are replays when they come stamped before it.
//
// Only frames that authenticated enter the book, so it holds real meters
// only; it is kept in <state dir>/counters.json, written when it changed
// (at most every five minutes, and at a clean stop: Bridge.saver), and
// entries not seen for a year are dropped.

const replayForget = 365 * 24 * time.Hour

type replayEntry struct {
	Counter uint32 `json:"counter"`
	KeyID   string `json:"key_id"`
	// Meter is the meter id its telegrams carry (SAG…), so that a plain
	// telegram cannot pass for this encrypted meter.
	Meter string `json:"meter,omitempty"`
	// Seen is the Unix day of the last frame.
	Seen int64 `json:"seen,omitempty"`
	// Time is the meter's clock in the last accepted telegram, Since when
	// its counter last restarted (Unix seconds; 0: not known).
	Time  int64 `json:"time,omitempty"`
	Since int64 `json:"since,omitempty"`
}

// restartAfter is how many authentic frames in a row, with growing
// counters below the last accepted one and later telegram times, prove
// that a meter restarted its counter: 30 s of a Smarty meter, and more
// than one frame, so that a single frame with a wrong clock proves
// nothing.
const restartAfter = 3

// restartStreak counts the frames that speak for a restart.
type restartStreak struct {
	n    int
	last uint32
}

type replayBook struct {
	file string // "" keeps the book in memory only

	mu      sync.Mutex
	m       map[string]replayEntry   // by system title in hex
	ids     map[string]bool          // titles and meter ids in m
	streaks map[string]restartStreak // titles of m only
	dirty   bool
}

func newReplayBook(stateDir string) *replayBook {
	r := &replayBook{m: map[string]replayEntry{}, ids: map[string]bool{}, streaks: map[string]restartStreak{}}
	if stateDir != "" {
		r.file = filepath.Join(stateDir, "counters.json")
	}
	return r
}

// fresh reports whether a frame of title with counter, under the key
// keyID, is new.
func (r *replayBook) fresh(title, keyID string, counter uint32) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.m[title]
	return !ok || e.KeyID != keyID || counter > e.Counter
}

// last returns the entry of title.
func (r *replayBook) last(title string) (replayEntry, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.m[title]
	return e, ok
}

// earlierSequence reports whether a frame of title whose telegram the meter
// stamped at was made before its counter last restarted: a replay, however
// high its counter.
func (r *replayBook) earlierSequence(title, keyID string, at time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.m[title]
	return ok && e.KeyID == keyID && e.Since != 0 && !at.IsZero() && at.Unix() < e.Since
}

// restarted takes a frame of title that authenticated under keyID but
// whose counter is not above the last accepted one, with its telegram's
// time at. It reports whether the frame completes the proof that the
// meter restarted its counter (the book then follows it), and how many
// frames in a row speak for a restart so far.
func (r *replayBook) restarted(title, keyID string, counter uint32, at time.Time) (bool, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.m[title]
	if !ok || e.KeyID != keyID || counter >= e.Counter || at.IsZero() || e.Time == 0 || at.Unix() <= e.Time {
		if ok && e.KeyID == keyID && counter < e.Counter {
			delete(r.streaks, title) // a replay: the streak starts again
		}
		return false, 0
	}
	st := r.streaks[title]
	if st.n > 0 && counter <= st.last {
		return false, st.n // a repeat of a frame already counted
	}
	st.n++
	st.last = counter
	if st.n < restartAfter {
		r.streaks[title] = st
		return false, st.n
	}
	delete(r.streaks, title)
	e.Counter, e.Time, e.Since, e.Seen = counter, at.Unix(), at.Unix(), time.Now().Unix()/86400
	r.m[title] = e
	r.dirty = true
	return true, st.n
}

// commit records an accepted frame whose telegram the meter stamped at
// (zero: no clock); it reports whether the book moved (a counter never
// goes back under the same key).
func (r *replayBook) commit(title, keyID string, counter uint32, meter string, at time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.m[title]
	if ok && e.KeyID == keyID && counter <= e.Counter {
		return false
	}
	if meter == "" && e.KeyID == keyID {
		meter = e.Meter
	}
	ts, since := e.Time, e.Since
	if e.KeyID != keyID {
		ts, since = 0, 0
	}
	if !at.IsZero() && at.Unix() > ts {
		ts = at.Unix()
	}
	delete(r.streaks, title)
	r.m[title] = replayEntry{Counter: counter, KeyID: keyID, Meter: meter, Seen: time.Now().Unix() / 86400, Time: ts, Since: since}
	r.ids[title] = true
	if meter != "" {
		r.ids[meter] = true
	}
	r.dirty = true
	return true
}

// encrypted reports whether id is the system title or the meter id of a
// meter in the book.
func (r *replayBook) encrypted(id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.ids[id]
}

// load reads the book an earlier run saved. Nothing here stops the
// program: a state directory that cannot be made, or a file that cannot be
// read (a power cut, a full disk, a hand edit), costs replay protection
// across this restart only, said once at WARN; a damaged file is set aside
// for a person to look at.
func (r *replayBook) load(log *slog.Logger) {
	if r.file == "" {
		return
	}
	if err := os.MkdirAll(filepath.Dir(r.file), 0o700); err != nil {
		log.Warn("cannot use the state directory: replay protection holds within this run only (after a restart a replayed stream is accepted once)",
			"err", err, "hint", "set SMARTY_STATE_DIR to a writable directory")
		return
	}
	m := map[string]replayEntry{}
	if aside, err := statefile.ReadJSON(r.file, &m); err != nil {
		log.Warn("saved frame counters unreadable (a power cut or a full disk?); starting afresh: replay protection restarts from the next frame of each meter",
			"file", r.file, "set_aside", aside, "err", err)
		return
	}
	today := time.Now().Unix() / 86400
	r.mu.Lock()
	defer r.mu.Unlock()
	for t, e := range m {
		if e.Seen != 0 && today-e.Seen > int64(replayForget/(24*time.Hour)) {
			r.dirty = true
			continue
		}
		r.m[t] = e
		r.ids[t] = true
		if e.Meter != "" {
			r.ids[e.Meter] = true
		}
	}
}

// isDirty reports whether the book changed since it was last saved.
func (r *replayBook) isDirty() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.dirty && r.file != ""
}

// save writes the book when it changed.
func (r *replayBook) save() error {
	r.mu.Lock()
	if r.file == "" || !r.dirty {
		r.mu.Unlock()
		return nil
	}
	b, err := json.Marshal(r.m)
	r.dirty = false
	r.mu.Unlock()
	if err != nil {
		return err
	}
	if err := statefile.Write(r.file, b, 0o600); err != nil {
		r.markDirty()
		return err
	}
	return nil
}

func (r *replayBook) markDirty() {
	r.mu.Lock()
	r.dirty = true
	r.mu.Unlock()
}

// keyIDs returns, per system title, the key id of the key that decrypts
// it ("" without key).
func keyIDs(o decrypt.Options) func(decrypt.Title) string {
	byTitle := map[decrypt.Title]string{}
	for t, k := range o.Keys {
		byTitle[t] = keyID(k)
	}
	def := ""
	if o.Key != nil {
		def = keyID(*o.Key)
	}
	return func(t decrypt.Title) string {
		if s, ok := byTitle[t]; ok {
			return s
		}
		return def
	}
}

// keyID is a short one-way hash of a meter key.
func keyID(k decrypt.Key) string {
	sum := sha256.Sum256(append([]byte("smartybridge key id\x00"), k[:]...))
	return hex.EncodeToString(sum[:4])
}
