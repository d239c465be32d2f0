// Package benchkit holds what the measuring tools share: a throw-away
// mosquitto on 127.0.0.1 and CPU and memory readings from /proc.
package benchkit

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Mosquitto starts a broker on a free 127.0.0.1 port with extra config
// lines; its config lives in dir.
func Mosquitto(dir, extra string) (*exec.Cmd, string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, "", err
	}
	addr := l.Addr().String()
	_ = l.Close()
	conf := filepath.Join(dir, "mosquitto.conf")
	cfg := fmt.Sprintf("listener %d 127.0.0.1\nallow_anonymous true\n%s", l.Addr().(*net.TCPAddr).Port, extra)
	if os.Geteuid() == 0 {
		cfg += "user root\n"
	}
	if err := os.WriteFile(conf, []byte(cfg), 0o644); err != nil {
		return nil, "", err
	}
	bin := "/usr/sbin/mosquitto"
	if p, err := exec.LookPath("mosquitto"); err == nil {
		bin = p
	}
	cmd := exec.Command(bin, "-c", conf)
	if err := cmd.Start(); err != nil {
		return nil, "", fmt.Errorf("mosquitto: %w", err)
	}
	for range 500 {
		if c, err := net.Dial("tcp", addr); err == nil {
			_ = c.Close()
			return cmd, addr, nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	_ = cmd.Process.Kill()
	return nil, "", fmt.Errorf("mosquitto does not listen on %s", addr)
}

// CPUTime is a process's user plus system time, from /proc.
func CPUTime(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / 100 // USER_HZ
}

// RSSKB is a process's resident memory (VmRSS) in KiB.
func RSSKB(pid int) int { return StatusKB(pid, "VmRSS") }

// IO is a process's storage writes so far, from /proc/PID/io: bytes that
// reached (or will reach) the disk, and write system calls.
func IO(pid int) (writeBytes, writeCalls int64) {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
	for _, line := range strings.Split(string(b), "\n") {
		k, v, _ := strings.Cut(line, ": ")
		n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		switch k {
		case "write_bytes":
			writeBytes = n
		case "syscw":
			writeCalls = n
		}
	}
	return writeBytes, writeCalls
}

// StatusKB is a field of /proc/PID/status in KiB (VmRSS, VmHWM, …).
func StatusKB(pid int, field string) int {
	return procKB(fmt.Sprintf("/proc/%d/status", pid), field+":")
}

// SmapsKB is a field of /proc/PID/smaps_rollup in KiB: Anonymous (heap,
// stacks, the runtime's own), or Rss; file-backed is Rss − Anonymous.
func SmapsKB(pid int, field string) int {
	return procKB(fmt.Sprintf("/proc/%d/smaps_rollup", pid), field+":")
}

func procKB(path, prefix string) int {
	b, _ := os.ReadFile(path)
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, prefix) {
			if f := strings.Fields(line); len(f) >= 2 {
				n, _ := strconv.Atoi(f[1])
				return n
			}
		}
	}
	return 0
}
