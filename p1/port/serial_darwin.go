package port

import (
	"fmt"
	"io"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// openSerial opens a serial device (/dev/cu.usbserial-…) in raw mode, 8N1,
// with a read timeout. tarm/serial needs cgo on macOS, and the release
// binaries are built without it, so the port is set up here with termios
// through x/sys/unix: the same settings tarm/serial makes on Linux.
func openSerial(name string, baud int, readTimeout time.Duration) (io.ReadCloser, error) {
	fd, err := unix.Open(name, unix.O_RDWR|unix.O_NOCTTY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: name, Err: err}
	}
	t, err := unix.IoctlGetTermios(fd, unix.TIOCGETA)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("%s is not a serial port: %w", name, err)
	}
	// Raw mode (cfmakeraw), 8 data bits, no parity, one stop bit, no flow
	// control, receiver on, modem lines ignored.
	t.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON | unix.IXOFF
	t.Oflag &^= unix.OPOST
	t.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
	t.Cflag &^= unix.CSIZE | unix.PARENB | unix.CSTOPB | unix.CRTSCTS
	t.Cflag |= unix.CS8 | unix.CREAD | unix.CLOCAL
	t.Ispeed, t.Ospeed = uint64(baud), uint64(baud)
	// A read returns after the first byte, or empty after the timeout
	// (VTIME, in tenths of a second, at most 25.5 s).
	t.Cc[unix.VMIN] = 0
	t.Cc[unix.VTIME] = uint8(min(max(readTimeout/(100*time.Millisecond), 1), 255))
	if readTimeout <= 0 {
		t.Cc[unix.VMIN], t.Cc[unix.VTIME] = 1, 0
	}
	if err := unix.IoctlSetTermios(fd, unix.TIOCSETA, t); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("%s: cannot set %d baud 8N1: %w", name, baud, err)
	}
	if err := unix.SetNonblock(fd, false); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return os.NewFile(uintptr(fd), name), nil
}
