package bridge

import (
	"container/list"
	"sync"
	"time"
)

// lru is a map that keeps at most max entries, dropping the least recently
// used: per-title state that hostile input could otherwise grow without
// bound. Not safe for concurrent use.
type lru[V any] struct {
	max   int
	order *list.List // of *lruItem, most recent first
	items map[string]*list.Element
}

type lruItem[V any] struct {
	key string
	val V
}

func newLRU[V any](max int) *lru[V] {
	return &lru[V]{max: max, order: list.New(), items: map[string]*list.Element{}}
}

// get returns the value of key and marks it used.
func (l *lru[V]) get(key string) (V, bool) {
	if e, ok := l.items[key]; ok {
		l.order.MoveToFront(e)
		return e.Value.(*lruItem[V]).val, true
	}
	var zero V
	return zero, false
}

// getOrAdd returns the value of key, adding mk() first when it is missing.
func (l *lru[V]) getOrAdd(key string, mk func() V) V {
	if v, ok := l.get(key); ok {
		return v
	}
	v := mk()
	l.put(key, v)
	return v
}

// put sets the value of key and marks it used.
func (l *lru[V]) put(key string, v V) {
	if e, ok := l.items[key]; ok {
		e.Value.(*lruItem[V]).val = v
		l.order.MoveToFront(e)
		return
	}
	l.items[key] = l.order.PushFront(&lruItem[V]{key: key, val: v})
	for l.order.Len() > l.max {
		last := l.order.Back()
		l.order.Remove(last)
		delete(l.items, last.Value.(*lruItem[V]).key)
	}
}

func (l *lru[V]) len() int { return l.order.Len() }

// logLimiter lets a log line of a kind through at most once per key and
// interval, and at most burst lines a minute over all keys; it counts what
// it held back, so that the next line can say so. Lines keyed by a title
// or a topic that hostile input picks thus stay bounded.
type logLimiter struct {
	every time.Duration
	burst int

	mu         sync.Mutex
	seen       *lru[time.Time]
	window     time.Time
	inWindow   int
	suppressed int
}

func newLogLimiter(every time.Duration, burst int) *logLimiter {
	return &logLimiter{every: every, burst: burst, seen: newLRU[time.Time](1024)}
}

// allow reports whether a line for key may be written now, and how many
// lines were held back since the last one that was.
func (l *logLimiter) allow(key string) (bool, int) {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if last, ok := l.seen.get(key); ok && now.Sub(last) < l.every {
		l.suppressed++
		return false, 0
	}
	if now.Sub(l.window) >= time.Minute {
		l.window, l.inWindow = now, 0
	}
	if l.inWindow >= l.burst {
		l.suppressed++
		return false, 0
	}
	l.inWindow++
	l.seen.put(key, now)
	n := l.suppressed
	l.suppressed = 0
	return true, n
}
