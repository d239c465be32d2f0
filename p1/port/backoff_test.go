package port

import (
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// attempts records when the reader tried to open its port: the first
// failure is a warning, each later one a debug line.
type attempts struct {
	mu    sync.Mutex
	at    []time.Time
	warns int
}

func (a *attempts) Enabled(context.Context, slog.Level) bool { return true }
func (a *attempts) Handle(_ context.Context, r slog.Record) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	switch r.Message {
	case "cannot open meter port; retrying with backoff":
		a.warns++
		a.at = append(a.at, r.Time)
	case "meter port still unavailable":
		a.at = append(a.at, r.Time)
	}
	return nil
}
func (a *attempts) WithAttrs([]slog.Attr) slog.Handler { return a }
func (a *attempts) WithGroup(string) slog.Handler      { return a }

// TestReopenBackoff: a port that cannot be opened (an unplugged adapter) is
// tried again after 1, 2, 4, 8 s, then every 8 s (the cap), with one warning,
// and a stop ends the wait at once. On synctest's clock: no real waiting.
func TestReopenBackoff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		log := &attempts{}
		ctx, cancel := context.WithCancel(context.Background())
		r, err := Open(ctx, Options{
			Device:     filepath.Join(t.TempDir(), "ttyUSB0"),
			MinBackoff: time.Second, MaxBackoff: 8 * time.Second,
			Log: slog.New(log),
		})
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		done := make(chan error, 1)
		go func() {
			_, err := r.Read(make([]byte, 16))
			done <- err
		}()
		time.Sleep(40 * time.Second)
		synctest.Wait()
		cancel()
		synctest.Wait()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Read after the stop returned %v, want context.Canceled", err)
		}
		if d := time.Since(start); d != 40*time.Second {
			t.Errorf("the stop took %v of waiting", d-40*time.Second)
		}
		if r.OpenError() == nil {
			t.Error("OpenError is nil while the port cannot be opened")
		}
		log.mu.Lock()
		defer log.mu.Unlock()
		var got []time.Duration
		for _, at := range log.at {
			got = append(got, at.Sub(start))
		}
		want := []time.Duration{0, 1, 3, 7, 15, 23, 31, 39}
		if len(got) != len(want) {
			t.Fatalf("open attempts at %v, want %v s", got, want)
		}
		for i := range want {
			if got[i] != want[i]*time.Second {
				t.Fatalf("open attempts at %v, want %v s", got, want)
			}
		}
		if log.warns != 1 {
			t.Errorf("%d warnings, want 1 (later attempts are debug lines)", log.warns)
		}
	})
}
