// Package statefile keeps the small files of the state directory (frame
// counters, pinned confirmation keys, the health file, the client id's
// suffix) so that a power cut never leaves half a file, and so that a file
// damaged anyway costs a warning instead of the program.
//
//	<name>.tmp          written, synced, then renamed over <name>
//	<name>              the last version written whole
//	<name>.unreadable   a version that could not be read, set aside (one)
//
// Write syncs the file before the rename and the directory after it: on
// ext4 or an SD card's FAT a rename without both can reach the disk before
// the data, and a power cut then leaves an empty file under the old name.
package statefile

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// Write replaces the file at path with data, durably: after Write returns
// nil the new version survives a power cut; a cut during Write leaves the
// old version.
func Write(path string, data []byte, perm os.FileMode) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, perm)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp) // the error that matters is err
		return err
	}
	return syncDir(filepath.Dir(path))
}

// syncDir makes a rename in dir durable. Systems that cannot sync a
// directory (Windows) make renames durable by themselves.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return nil
	}
	defer func() { _ = d.Close() }() // opened to sync only
	if err := d.Sync(); err != nil && !errors.Is(err, fs.ErrInvalid) && !errors.Is(err, errors.ErrUnsupported) {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}

// SetAside renames the file at path, which could not be read, to
// <path>.unreadable (replacing an earlier one, so that a file that keeps
// going bad takes no more room), and returns the new name. The caller then
// starts afresh; the set-aside file is there for a person to look at.
func SetAside(path string) (string, error) {
	aside := path + ".unreadable"
	if err := os.Rename(path, aside); err != nil {
		return "", err
	}
	return aside, nil
}

// ReadJSON reads the JSON file at path into v. A missing file leaves v as
// it is and is no error. A file that cannot be read or parsed is set aside
// (SetAside) and its error returned, with the name it was set aside under
// ("" if even that failed): the caller starts afresh and says so.
func ReadJSON(path string, v any) (setAside string, err error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err == nil {
		err = json.Unmarshal(b, v)
	}
	if err != nil {
		setAside, _ = SetAside(path)
	}
	return setAside, err
}
