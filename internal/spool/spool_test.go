package spool

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func TestAppendReopenRemove(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, 3)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		_, dropped, err := s.Append([]byte(fmt.Sprint("frame ", i)))
		if err != nil {
			t.Fatal(err)
		}
		if want := map[bool]int{true: 1, false: 0}[i >= 3]; dropped != want {
			t.Errorf("append %d dropped %d, want %d", i, dropped, want)
		}
	}
	if got := s.Seqs(); !slices.Equal(got, []uint64{3, 4, 5}) {
		t.Fatalf("seqs %v, want the three newest", got)
	}
	// A half-written record from a crash is cleaned up; the rest survive a
	// restart, in order.
	os.WriteFile(filepath.Join(dir, "00000000000000000006.rec.tmp"), []byte("half"), 0o600)
	s2, err := Open(dir, 3)
	if err != nil {
		t.Fatal(err)
	}
	if got := s2.Seqs(); !slices.Equal(got, []uint64{3, 4, 5}) {
		t.Fatalf("after reopen: %v", got)
	}
	if b, _ := s2.Read(4); string(b) != "frame 3" {
		t.Errorf("record 4 = %q", b)
	}
	seq, _, _ := s2.Append([]byte("new"))
	if seq != 6 {
		t.Errorf("next seq %d, want 6", seq)
	}
	s2.Remove(3)
	s2.Remove(3)
	if s2.Has(3) || s2.Len() != 3 {
		t.Errorf("remove: %v", s2.Seqs())
	}
	if _, err := os.Stat(filepath.Join(dir, "00000000000000000006.rec.tmp")); !os.IsNotExist(err) {
		t.Error("temporary file left behind")
	}
}
