package statefile

import (
	"os"
	"path/filepath"
	"testing"
)

func TestWriteReplacesWhole(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "counters.json")
	for _, v := range []string{`{"a":1}`, `{"a":2,"b":3}`, `{}`} {
		if err := Write(p, []byte(v), 0o600); err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(p)
		if err != nil || string(got) != v {
			t.Fatalf("read %q, %v; want %q", got, err, v)
		}
	}
	if _, err := os.Stat(p + ".tmp"); !os.IsNotExist(err) {
		t.Errorf("temporary file left behind: %v", err)
	}
	if fi, _ := os.Stat(p); fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v", fi.Mode().Perm())
	}
}

func TestWriteIntoMissingDirectoryFails(t *testing.T) {
	if err := Write(filepath.Join(t.TempDir(), "gone", "x"), []byte("x"), 0o600); err == nil {
		t.Error("no error writing into a directory that does not exist")
	}
}

func TestSetAsideKeepsOne(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "confirm-keys.json")
	for _, v := range []string{"garbage one", "garbage two"} {
		os.WriteFile(p, []byte(v), 0o600)
		aside, err := SetAside(p)
		if err != nil {
			t.Fatal(err)
		}
		if got, _ := os.ReadFile(aside); string(got) != v {
			t.Errorf("set aside %q, want %q", got, v)
		}
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("%d files after setting two aside, want 1", len(entries))
	}
}

func TestReadJSON(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "counters.json")
	v := map[string]int{"kept": 1}
	if aside, err := ReadJSON(p, &v); err != nil || aside != "" || v["kept"] != 1 {
		t.Errorf("missing file: %q %v %v", aside, err, v)
	}
	os.WriteFile(p, []byte(`{"a":2}`), 0o600)
	if _, err := ReadJSON(p, &v); err != nil || v["a"] != 2 {
		t.Errorf("good file: %v %v", err, v)
	}
	os.WriteFile(p, []byte(`{"a":`), 0o600)
	aside, err := ReadJSON(p, &v)
	if err == nil || aside != p+".unreadable" {
		t.Errorf("cut file: %q %v", aside, err)
	}
	if _, err := os.Stat(p); !os.IsNotExist(err) {
		t.Errorf("the damaged file is still in place: %v", err)
	}
}
