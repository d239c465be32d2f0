//go:build !darwin

package port

import (
	"io"
	"time"

	"github.com/tarm/serial"
)

// openSerial opens a serial device in raw mode, 8N1, with a read timeout
// (tarm/serial: termios on Linux, the COM API on Windows, where COM10 and
// up are reached as \\.\COM10 and the prefix is added when missing).
func openSerial(name string, baud int, readTimeout time.Duration) (io.ReadCloser, error) {
	return serial.OpenPort(&serial.Config{Name: name, Baud: baud, ReadTimeout: readTimeout})
}
