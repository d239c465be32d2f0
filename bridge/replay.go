package bridge

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/smartybridge/smartybridge/decrypt"
)

// Replay protection. A meter numbers its frames with a counter that only
// grows (GCM must never reuse a nonce under one key), so a frame whose
// counter is not above the last one accepted under the same key is a
// duplicate or a replay, whatever the source: a forwarder's re-send, a
// replayed TCP stream, a recorded capture. When the grid operator changes
// the key the counter restarts: a frame that authenticates under another
// key than the last one starts a new sequence.
//
// Only frames that authenticated enter the book, so it holds real meters
// only; it is kept in <state dir>/counters.json, written when it changed
// (at most once a second), and entries not seen for a year are dropped.

const replayForget = 365 * 24 * time.Hour

type replayEntry struct {
	Counter uint32 `json:"counter"`
	KeyID   string `json:"key_id"`
	// Meter is the meter id its telegrams carry (SAG…), so that a plain
	// telegram cannot pass for this encrypted meter.
	Meter string `json:"meter,omitempty"`
	// Seen is the Unix day of the last frame.
	Seen int64 `json:"seen,omitempty"`
}

type replayBook struct {
	file string // "" keeps the book in memory only

	mu    sync.Mutex
	m     map[string]replayEntry // by system title in hex
	ids   map[string]bool        // titles and meter ids in m
	dirty bool
}

func newReplayBook(stateDir string) *replayBook {
	r := &replayBook{m: map[string]replayEntry{}, ids: map[string]bool{}}
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

// commit records an accepted frame; it reports whether the book moved
// (a counter never goes back under the same key).
func (r *replayBook) commit(title, keyID string, counter uint32, meter string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.m[title]
	if ok && e.KeyID == keyID && counter <= e.Counter {
		return false
	}
	if meter == "" && e.KeyID == keyID {
		meter = e.Meter
	}
	r.m[title] = replayEntry{Counter: counter, KeyID: keyID, Meter: meter, Seen: time.Now().Unix() / 86400}
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

// load reads the book an earlier run saved.
func (r *replayBook) load() error {
	if r.file == "" {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(r.file), 0o700); err != nil {
		return fmt.Errorf("state directory: %w (set SMARTY_STATE_DIR to a writable directory)", err)
	}
	b, err := os.ReadFile(r.file)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	m := map[string]replayEntry{}
	if err := json.Unmarshal(b, &m); err != nil {
		return fmt.Errorf("saved frame counters %s unreadable (%v); move it away to start afresh", r.file, err)
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
	return nil
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
	if err := writeFileAtomic(r.file, b, 0o600); err != nil {
		r.markDirty()
		return err
	}
	return nil
}

// writeFileAtomic writes a temporary file next to path and renames it
// over path, so that a crash leaves the old file or the new, never half.
func writeFileAtomic(path string, b []byte, perm os.FileMode) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, perm); err != nil {
		return err
	}
	return os.Rename(tmp, path)
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
