package bridge

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// TestSaverWritesAtMostEveryFiveMinutes: the counters are written soon
// after the first change, then at most every SaveEvery however often they
// change (a frame every 10 s made a durable write every 10 s), and once
// more at a clean stop. A save that fails is tried again after saveRetry.
func TestSaverWritesAtMostEveryFiveMinutes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dir := t.TempDir()
		b, err := New(Options{StateDir: dir})
		if err != nil {
			t.Fatal(err)
		}
		file := filepath.Join(dir, "counters.json")
		// The counter grows with every frame, so every write differs.
		writes := 0
		var last string
		written := func() bool {
			b, err := os.ReadFile(file)
			if err == nil && string(b) != last {
				last = string(b)
				writes++
				return true
			}
			return false
		}
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		wg.Go(func() { b.saver(ctx) })

		counter := uint32(1)
		frame := func() { // a frame every 10 s
			counter++
			b.book.commit("5341470000000001", "k", counter, "", time.Time{})
			time.Sleep(10 * time.Second)
			synctest.Wait()
		}
		frame()
		if !written() {
			t.Fatal("not written after the first change")
		}
		for range 29 { // 290 s: within five minutes of the first write
			frame()
			if written() {
				t.Fatalf("written again after %d s", 10*counter)
			}
		}
		for range 2 {
			frame()
			written()
		}
		if writes != 2 {
			t.Errorf("%d writes in 5 min 10 s, want 2", writes)
		}

		// A directory that cannot be written (here: gone for a while):
		// said once, tried again every saveRetry, written as soon as it
		// works again.
		away := dir + ".away"
		if err := os.Rename(dir, away); err != nil {
			t.Fatal(err)
		}
		for range 31 {
			frame()
		}
		os.Rename(away, dir)
		time.Sleep(saveRetry)
		synctest.Wait()
		if !written() {
			t.Error("not written within saveRetry of the directory working again")
		}
		if b.saveState.failures != 0 {
			t.Errorf("%d failures left after the directory came back", b.saveState.failures)
		}
		counter++
		b.book.commit("5341470000000001", "k", counter, "", time.Time{})
		cancel()
		wg.Wait()
		b.saveBook() // the clean stop
		if !written() {
			t.Error("not written at the stop")
		}
	})
}
