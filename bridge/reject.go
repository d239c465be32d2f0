package bridge

import (
	"errors"
	"fmt"
	"time"

	"github.com/smartybridge/smartybridge/decrypt"
	"github.com/smartybridge/smartybridge/internal/telegrams"
	"github.com/smartybridge/smartybridge/p1"
)

// Frames that do not make a telegram: counted, said in a limited way, and noted for the Problem sensor; replays dropped.

// replayGuard decides whether an authentic frame of title with counter,
// whose telegram the meter stamped at, is new: its counter grew and it is
// not of a sequence from before the meter's counter restarted, or it
// completes the proof of such a restart (replay.go). It says so at WARN,
// a limited number of times.
func (b *Bridge) replayGuard(title, kid string, counter uint32, at time.Time) bool {
	last, _ := b.book.last(title)
	if b.book.fresh(title, kid, counter) {
		if !b.book.earlierSequence(title, kid, at) {
			return true
		}
	} else if ok, n := b.book.restarted(title, kid, counter, at); ok {
		b.log.Warn("the meter restarted its frame counter (a firmware update or a reset?): following the new counter", "meter", title,
			"counter", counter, "was", last.Counter, "frames", n)
		return true
	} else if n > 0 {
		if ok, _ := b.logs.allow("restart " + title); ok {
			b.log.Warn(fmt.Sprintf("the meter's frame counter went back while its clock went on; following it after %d such frames in a row", restartAfter),
				"meter", title, "counter", counter, "was", last.Counter)
		}
		return false
	}
	if ok, held := b.logs.allow("replay " + title); ok {
		b.log.Warn("a frame whose counter did not grow was dropped: the meter sent it before the last one accepted (a replayed or repeated stream?)", "meter", title,
			"counter", counter, "last", last.Counter, "similar_lines_held_back", held)
	}
	return false
}

// maxDecodedTitles bounds the titles whose last decoded frame is kept
// (a port serves one meter; a bus a few).
const maxDecodedTitles = 64

// countReject counts a rejected frame under its reason.
func (b *Bridge) countReject(r telegrams.Reason) {
	if r != telegrams.NotAFrame {
		b.counts.rejected[r].Add(1)
	}
}

// rejected counts a frame that did not decode and says what to check: at
// the first failure of a kind, then at 10, 100, 1000… in a row.
func (b *Bridge) rejected(err error, reason telegrams.Reason, from p1.Origin) {
	if reason == telegrams.NotAFrame {
		return // a false header: the scanner resyncs, nothing to tell
	}
	b.countReject(reason)
	b.lastReason.Store(uint32(reason))
	// Damage on the line only where this meter's frames decoded a moment
	// ago: a frame of another title (another meter, a forgery) that fails
	// is not line noise.
	ok, seen := b.decodedAt[from.SystemTitle]
	keyWorked := seen && time.Since(ok) < problemWindow(b.o.MeterTimeout)
	b.noteReject(err, reason, from.SystemTitle, keyWorked)
	b.streak[reason]++
	n := b.streak[reason]
	if n != 1 && n != 10 && n != 100 && n%1000 != 0 {
		return
	}
	title := decrypt.Title(from.SystemTitle).String()
	switch {
	case errors.Is(err, decrypt.ErrAuthKey):
		b.log.Warn(fmt.Sprintf("authentication failed on %d frames in a row, but the key decrypts them: the key is right and the authentication key differs; set SMARTY_AUTH_KEY, or SMARTY_VERIFY_TAG=false to check the telegram CRC instead", n), "meter", title)
	case errors.Is(err, decrypt.ErrAuth) && keyWorked:
		b.log.Warn(fmt.Sprintf("authentication failed on %d frames in a row of a meter whose frames decoded a moment ago: the line damages them; check the cable and its connection", n), "meter", title)
	case errors.Is(err, decrypt.ErrAuth):
		b.log.Warn(fmt.Sprintf("authentication failed on %d frames in a row: SMARTY_KEY is not this meter's key (check it against the key the grid operator sent for the meter number printed on the meter), or someone sends forged frames", n), "meter", title)
	case errors.Is(err, decrypt.ErrNoKey):
		b.log.Warn(fmt.Sprintf("no key for this meter (%d frames): set SMARTY_KEY, or add %s:<key> to SMARTY_KEYS", n, title), "meter", title)
	default:
		b.log.Warn(fmt.Sprintf("%d telegrams in a row rejected: %v", n, err), "reason", reason)
	}
}
