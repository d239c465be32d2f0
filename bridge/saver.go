package bridge

import (
	"context"
	"time"
)

// saver writes the replay book when it changed, at most every
// Options.SaveEvery (5 min), and a clean stop writes it once more. Every
// write is durable (statefile.Write: the file and its directory synced),
// and on a Raspberry Pi's SD card each costs some 16 KB of flash writes;
// at a frame every 10 s a write per change would be 6 MB an hour, five
// minutes is about 200 KB. What it costs: after a crash or a power cut
// (no clean stop), the frames of at most the last five minutes before it
// could be replayed once into a bridge fed by a TCP source. Their
// readings are the meter's own, only old; and a decryptor also reads its
// counters back from its retained confirmations. A save that failed
// wrote nothing, so it is tried again after saveRetry. A state directory
// that turns read-only or full is said once, with what it costs; then
// once an hour while it lasts, and once when it works again.
func (b *Bridge) saver(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	var due time.Time        // the next write may not come before
	var settingDue time.Time // nor the next one for a setting
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			// A setting the household changed is written within
			// saveRetry, not SaveEvery: it is rare, and worth keeping.
			soon := b.settingChanged.Load() && !now.Before(settingDue)
			if (now.Before(due) && !soon) || !b.book.isDirty() && !b.quarters.isDirty() {
				continue
			}
			b.settingChanged.Store(false)
			settingDue = now.Add(saveRetry)
			if b.saveAll() {
				due = now.Add(b.o.SaveEvery)
			} else {
				due = now.Add(saveRetry)
			}
		}
	}
}

// saveEvery is the default of Options.SaveEvery; saveRetry the pause
// after a save that failed.
const (
	saveEvery = 5 * time.Minute
	saveRetry = 10 * time.Second
)

// saveFailureReminder is how often a state directory that still cannot be
// written is mentioned again.
const saveFailureReminder = time.Hour

// saveAll saves the replay book and the quarters; it reports whether
// both are saved.
func (b *Bridge) saveAll() bool {
	ok := b.saveBook()
	if err := b.quarters.save(); err != nil {
		if allowed, _ := b.logs.allow("save quarters"); allowed {
			b.log.Warn("cannot save the quarter-hours and the reference power settings; after a restart they start again from the configuration",
				"err", err, "hint", "free space or fix permissions in SMARTY_STATE_DIR")
		}
		return false
	}
	return ok
}

// saveBook saves the replay book and logs the turns of its fortune; it
// reports whether the book is saved. Goroutines of the saver and the stop
// only, one at a time.
func (b *Bridge) saveBook() bool {
	err := b.book.save()
	s := &b.saveState
	switch {
	case err == nil && s.failures > 0:
		b.log.Info("frame counters saved again", "failed_attempts", s.failures, "file", b.book.file)
		s.failures = 0
	case err == nil:
	case s.failures == 0 || time.Since(s.warned) >= saveFailureReminder:
		s.failures++
		s.warned = time.Now()
		b.log.Warn("cannot save frame counters; replay protection holds within this run only until it works again",
			"err", err, "failed_attempts", s.failures, "hint", "free space or fix permissions in SMARTY_STATE_DIR")
	default:
		s.failures++
	}
	return err == nil
}
