// Package spool keeps a bounded first-in-first-out queue of records on
// disk, one file per record, so that a forwarder loses no frame while the
// broker is away or the process restarts. When full it drops the oldest
// record.
//
//	<dir>/00000000000000000042.rec   record 42: the bytes, unchanged
//
// A record is written durably (statefile.Write: a temporary file, synced,
// renamed, the directory synced), so that a crash or a power cut leaves
// either the whole record or none.
package spool

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/smartybridge/smartybridge/internal/statefile"
)

const suffix = ".rec"

// Spool is a queue of records in a directory. Safe for concurrent use.
type Spool struct {
	dir string
	max int

	mu     sync.Mutex
	seqs   []uint64 // in order, oldest first
	next   uint64
	broken error // Broken
}

// Broken returns a spool that keeps nothing: every Append fails with err,
// so that its user keeps records elsewhere (the forwarder: in memory)
// when the directory cannot be used at all.
func Broken(err error) *Spool { return &Spool{max: 1, broken: err} }

// Open opens (or creates) the spool in dir, holding at most limit records.
func Open(dir string, limit int) (*Spool, error) {
	if limit < 1 {
		return nil, errors.New("spool: max must be at least 1")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	s := &Spool{dir: dir, max: limit, next: 1}
	for _, e := range entries {
		name := e.Name()
		if strings.HasSuffix(name, ".tmp") {
			_ = os.Remove(filepath.Join(dir, name)) // a write that did not finish; tried again next start
			continue
		}
		seq, err := strconv.ParseUint(strings.TrimSuffix(name, suffix), 10, 64)
		if err != nil || !strings.HasSuffix(name, suffix) {
			continue
		}
		s.seqs = append(s.seqs, seq)
		s.next = max(s.next, seq+1)
	}
	slices.Sort(s.seqs)
	return s, nil
}

func (s *Spool) path(seq uint64) string {
	return filepath.Join(s.dir, fmt.Sprintf("%020d%s", seq, suffix))
}

// Append stores data as the newest record and returns its sequence number
// and how many old records were dropped to make room.
func (s *Spool) Append(data []byte) (seq uint64, dropped int, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.broken != nil {
		return 0, 0, s.broken
	}
	seq = s.next
	if err := statefile.Write(s.path(seq), data, 0o600); err != nil {
		return 0, 0, fmt.Errorf("spool: %w", err)
	}
	s.next++
	s.seqs = append(s.seqs, seq)
	for len(s.seqs) > s.max {
		_ = os.Remove(s.path(s.seqs[0])) // left behind, it is dropped again at the next Open
		s.seqs = s.seqs[1:]
		dropped++
	}
	return seq, dropped, nil
}

// Read returns the bytes of record seq.
func (s *Spool) Read(seq uint64) ([]byte, error) {
	b, err := os.ReadFile(s.path(seq))
	if err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	return b, nil
}

// Remove deletes record seq; removing a record that is gone is no error.
func (s *Spool) Remove(seq uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	i, found := slices.BinarySearch(s.seqs, seq)
	if !found {
		return nil
	}
	s.seqs = slices.Delete(s.seqs, i, i+1)
	if err := os.Remove(s.path(seq)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("spool: %w", err)
	}
	return nil
}

// Seqs returns the sequence numbers of the records, oldest first.
func (s *Spool) Seqs() []uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.seqs)
}

// Len returns the number of records.
func (s *Spool) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.seqs)
}

// Has reports whether record seq is still held.
func (s *Spool) Has(seq uint64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, found := slices.BinarySearch(s.seqs, seq)
	return found
}
