package p1

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"

	"github.com/smartybridge/smartybridge/internal/crc16"
)

// Kind tells an encrypted frame from a plain telegram.
type Kind uint8

// The kinds of frame a Scanner delivers.
const (
	Encrypted Kind = iota + 1 // DLMS general-glo-ciphering, as Smarty sends
	Plain                     // an unencrypted DSMR telegram
)

func (k Kind) String() string {
	switch k {
	case Encrypted:
		return "encrypted"
	case Plain:
		return "plain"
	}
	return "unknown"
}

// Size limits. A Smarty frame is about 1.2 KiB; anything declaring more than
// MaxFrameLen is noise that happens to look like a header.
const (
	MaxFrameLen    = 4096
	MaxTelegramLen = 8192
)

// ErrSilence may be returned by the Scanner's reader when the line has been
// quiet for a while (a read timeout on a live port). The meter pauses about
// ten seconds between frames, so silence ends whatever partial frame is
// buffered; the scan goes on.
var ErrSilence = errors.New("p1: line silent")

// Stats counts what a Scanner has seen. All counts only grow.
type Stats struct {
	Frames  int // frames delivered
	Skipped int // bytes that belonged to no frame
	// RejectedBytes: bytes of rejected frames that were then skipped
	// (Reject), apart from Skipped.
	RejectedBytes int
	TooLong       int // headers declaring more than MaxFrameLen
	Truncated     int // frames cut short by the next frame, silence or the end
	BadCRC        int // plain telegrams whose CRC did not match
	Rejected      int // frames the consumer handed back with Reject
	// Overlapped: frames the consumer could not check (Overlap), whose
	// bytes were searched again for frames inside them.
	Overlapped int
}

// maxKnown bounds the system titles a Scanner trusts for framing.
const maxKnown = 32

// Scanner reads frames from a P1 byte stream. Like bufio.Scanner, call Scan
// until it returns false, then Err. The bytes of a frame are valid until the
// next call to Scan.
type Scanner struct {
	r     io.Reader
	buf   []byte
	base  int64 // the stream offset of buf[0]
	start int   // first byte not yet consumed
	end   int   // end of buffered data
	// The frame last delivered: buf[fstart:fstart+flen].
	fstart, flen int
	kind         Kind
	// again: the next Scan resumes one byte after the last frame's start
	// (Reject, Overlap).
	again bool
	// checked is how far the pending candidate at start has been searched:
	// for the header of a following frame, or for the '!' of a telegram.
	checked int
	eof     bool // the reader is done; drain the buffer
	flush   bool // the line went silent: drain what is buffered, then read on
	err     error
	stats   Stats
	// covered: buf[:covered] belongs to a delivered frame that is being
	// searched again (Overlap); skipping it is not counted twice.
	covered int
	// rejectedTo: buf[:rejectedTo] belongs to a rejected frame; skipping
	// it counts as RejectedBytes.
	rejectedTo int
	// known system titles (Know), a ring of at most maxKnown.
	known  [maxKnown][8]byte
	nKnown int
}

// NewScanner returns a Scanner reading from r.
func NewScanner(r io.Reader) *Scanner {
	return &Scanner{r: r, buf: make([]byte, 4*MaxTelegramLen)}
}

// Frame returns the last frame found by Scan.
func (s *Scanner) Frame() []byte { return s.buf[s.fstart : s.fstart+s.flen] }

// Kind returns the kind of the last frame found by Scan.
func (s *Scanner) Kind() Kind { return s.kind }

// Stats returns the counts so far.
func (s *Scanner) Stats() Stats { return s.stats }

// Offset is the position in the stream of the last frame's first byte.
func (s *Scanner) Offset() int64 { return s.base + int64(s.fstart) }

// Err returns the reader's error that ended the scan, or nil at io.EOF.
func (s *Scanner) Err() error { return s.err }

// Reject tells the Scanner that the last frame was not one after all (it did
// not authenticate, or its content is invalid). The next Scan resumes one
// byte after that frame's start, so a frame that was cut short and swallowed
// the head of the next one costs only itself.
//
// The rejected frame's bytes are counted as RejectedBytes, not as
// Skipped: Skipped stays the bytes that formed no frame at all.
func (s *Scanner) Reject() {
	if s.flen > 0 && !s.again {
		s.again = true
		s.rejectedTo = max(s.rejectedTo, s.fstart+s.flen)
		s.stats.Rejected++
		s.stats.Frames--
	}
}

// Know tells the Scanner that frames of this system title are real (they
// authenticated, or a decryptor confirmed them). A header of a known title
// inside the span another header declares ends that candidate there: it
// was a false header or a frame cut short, and the known frame starts
// there. At most 32 titles are kept; the oldest goes first. Call it from
// the goroutine that scans (a reader passed to NewScanner may, before
// each Read).
func (s *Scanner) Know(title [8]byte) {
	if s.isKnown(title[:]) {
		return
	}
	s.known[s.nKnown%maxKnown] = title
	s.nKnown++
	s.checked = 0 // search the pending candidate again with the new title
}

func (s *Scanner) isKnown(title []byte) bool {
	for i := range min(s.nKnown, maxKnown) {
		if string(s.known[i][:]) == string(title) {
			return true
		}
	}
	return false
}

// Overlap tells the Scanner that the last frame cannot be checked by the
// consumer (a forwarder holds no key) though it is used. The next Scan
// searches its bytes again from one byte after its start, so that a false
// header whose declared span swallowed a real frame costs nothing: the
// real frame is delivered next.
func (s *Scanner) Overlap() {
	if s.flen > 0 && !s.again {
		s.again = true
		s.covered = max(s.covered, s.fstart+s.flen)
		s.stats.Overlapped++
	}
}

// skip consumes n bytes that belong to no frame, counting those that were
// not part of a delivered frame already.
func (s *Scanner) skip(n int) {
	end := s.start + n
	covered := max(0, min(end, s.covered)-s.start)
	rejected := max(0, min(end, s.rejectedTo)-s.start-covered)
	s.start = end
	s.stats.Skipped += n - covered - rejected
	s.stats.RejectedBytes += rejected
	s.checked = 0
}

// Scan advances to the next frame. It returns false when the reader is done
// (or failed) and every buffered frame has been delivered.
func (s *Scanner) Scan() bool {
	if s.flen > 0 {
		if s.again {
			s.start = s.fstart
			s.skip(1)
		} else {
			s.start = s.fstart + s.flen
		}
		s.flen, s.again, s.checked = 0, false, 0
	}
	for {
		atEnd := s.eof || s.flush
		n, kind := s.split(atEnd)
		if kind != 0 {
			s.fstart, s.flen, s.kind = s.start, n, kind
			s.stats.Frames++
			return true
		}
		if n > 0 {
			s.skip(n)
			continue
		}
		// More data is needed.
		if s.eof {
			return false
		}
		s.flush = false
		s.fill()
	}
}

// fill reads once into the buffer, making room first.
func (s *Scanner) fill() {
	if s.start == s.end {
		s.covered = max(0, s.covered-s.start)
		s.rejectedTo = max(0, s.rejectedTo-s.start)
		s.base += int64(s.start)
		s.start, s.end = 0, 0
	}
	if s.end == len(s.buf) {
		// split never waits for more than MaxTelegramLen bytes of one
		// candidate, so moving the data down always makes room.
		copy(s.buf, s.buf[s.start:s.end])
		s.end -= s.start
		s.covered = max(0, s.covered-s.start)
		s.rejectedTo = max(0, s.rejectedTo-s.start)
		s.base += int64(s.start)
		s.start = 0
	}
	n, err := s.r.Read(s.buf[s.end:])
	s.end += n
	switch {
	case err == nil:
	case errors.Is(err, ErrSilence):
		s.flush = true
	case err == io.EOF:
		s.eof = true
	default:
		s.eof = true
		s.err = err
	}
}

// split decides what stands at the head of the buffer: a frame of n bytes
// (kind != 0), n bytes to skip (kind == 0, n > 0), or nothing yet (n == 0:
// read more). With atEnd no more bytes will come for what is buffered.
func (s *Scanner) split(atEnd bool) (n int, kind Kind) {
	data := s.buf[s.start:s.end]
	if len(data) == 0 {
		return 0, 0
	}
	i := indexStart(data)
	if i < 0 {
		return len(data), 0
	}
	if i > 0 {
		return i, 0
	}
	if data[0] == '/' {
		return s.splitPlain(data, atEnd)
	}
	return s.splitEncrypted(data, atEnd)
}

// indexStart finds the first byte that may begin a frame.
func indexStart(data []byte) int {
	for i, c := range data {
		if c == 0xDB || c == '/' {
			return i
		}
	}
	return -1
}

// needOrSkip is the answer for an incomplete candidate: wait, or at the end
// of the input give it up and resync one byte on.
func needOrSkip(atEnd bool) (int, Kind) {
	if atEnd {
		return 1, 0
	}
	return 0, 0
}

// EncryptedLen reports the total length a general-glo-ciphering header at
// the start of data declares: header plus body. ok is false while data is
// too short to tell; valid is false when data cannot start a frame.
func EncryptedLen(data []byte) (n int, ok, valid bool) {
	if len(data) < 2 {
		return 0, false, true
	}
	if data[0] != 0xDB || data[1] != 0x08 {
		return 0, true, false
	}
	if len(data) < 11 {
		return 0, false, true
	}
	var body, hl int
	switch b := data[10]; b {
	case 0x81:
		if len(data) < 12 {
			return 0, false, true
		}
		body, hl = int(data[11]), 12
	case 0x82:
		if len(data) < 13 {
			return 0, false, true
		}
		body, hl = int(binary.BigEndian.Uint16(data[11:])), 13
	default:
		if b >= 0x80 {
			return 0, true, false
		}
		body, hl = int(b), 11
	}
	// Security control byte, counter and tag, and at least one byte of text.
	if body < 1+4+12+1 {
		return 0, true, false
	}
	if len(data) <= hl {
		return 0, false, true
	}
	if data[hl] != 0x30 {
		return 0, true, false
	}
	return hl + body, true, true
}

func (s *Scanner) splitEncrypted(data []byte, atEnd bool) (int, Kind) {
	n, ok, valid := EncryptedLen(data)
	if !valid {
		return 1, 0
	}
	if !ok {
		return needOrSkip(atEnd)
	}
	if n > MaxFrameLen {
		s.stats.TooLong++
		return 1, 0
	}
	// A frame cut short runs into the next one, and a false header (noise
	// that looks like one) declares a span that swallows the next: if the
	// header of a frame from the same meter, or of a meter known to be
	// real (Know), starts inside the declared span, this candidate ends
	// there and the next one starts there. Only headers that lie wholly
	// inside the span count, so that the answer does not depend on how the
	// bytes arrive.
	const headLen = 10 // DB 08 and the system title
	from := max(s.checked, 1)
	to := min(len(data), n)
	for from+headLen <= to {
		j := bytes.Index(data[from:to], dlmsTag)
		if j < 0 || from+j+headLen > to {
			break
		}
		p := from + j
		if title := data[p+2 : p+headLen]; string(title) == string(data[2:headLen]) || s.isKnown(title) {
			s.stats.Truncated++
			return p, 0
		}
		from = p + 1
	}
	s.checked = max(to-headLen+1, 1)
	if len(data) < n {
		if atEnd {
			s.stats.Truncated++
		}
		return needOrSkip(atEnd)
	}
	return n, Encrypted
}

// dlmsTag starts a general-glo-ciphering frame.
var dlmsTag = []byte{0xDB, 0x08}

// telegramByte reports whether c may appear in a DSMR telegram.
func telegramByte(c byte) bool {
	return c >= 0x20 && c < 0x7F || c == '\r' || c == '\n'
}

// maxIdentLen bounds the identification line, which alone may hold any
// byte (Iskra's "\2" written as the byte 0x02, an 0xAB): it is
// informative, and the CRC still covers it. DSMR gives it 5 + 1 + 32
// characters.
const maxIdentLen = 96

// identByte reports whether c may appear in the identification line.
func identByte(c byte) bool {
	return c != '\n' && c != '/' && c != '!' && c != 0xDB
}

// splitPlain frames a DSMR telegram: from '/' to '!' and its CRC, one to
// four hex digits (meters that drop leading zeros send fewer), or none
// from DSMR 2/3 meters. The telegram ends there: a line end after it is
// taken along, and whatever else follows (the next telegram, noise) is
// the next candidate's start. Only while the buffered bytes end inside
// the CRC does it wait for more; at the end of the input, or after a
// pause on a live port, the digits it has are all there is.
func (s *Scanner) splitPlain(data []byte, atEnd bool) (int, Kind) {
	limit := min(len(data), MaxTelegramLen)
	bang := -1
	ident := true // in the identification line
	// Bytes before s.checked were seen on an earlier call: none was '!'.
	i := max(s.checked, 1)
	if i > 1 {
		ident = bytes.IndexByte(data[1:i], '\n') < 0
	}
	for ; i < limit; i++ {
		c := data[i]
		if c == '!' {
			bang = i
			break
		}
		switch {
		case ident && c == '\n':
			ident = false
		case ident && i > maxIdentLen:
			return 1, 0
		case ident && identByte(c):
		case !telegramByte(c) || c == '/':
			// A '/' before '!' means this was not the start of the telegram.
			return 1, 0
		}
	}
	if bang < 0 {
		s.checked = limit
		if limit == MaxTelegramLen {
			return 1, 0
		}
		return needOrSkip(atEnd)
	}
	tail := data[bang+1:]
	digits := 0
	for digits < len(tail) && digits < 4 && isHex(tail[digits]) {
		digits++
	}
	// Whether the line end comes must not depend on how the bytes arrive:
	// wait for the byte after the digits, and for the LF after a CR.
	if !atEnd && (digits == len(tail) || tail[digits] == '\r' && digits+1 == len(tail)) {
		return 0, 0
	}
	// The CRC is the longest run of digits that verifies: "!ABC" followed
	// by a next telegram's hex-looking byte, or a zero-dropping meter's
	// three digits, still end right.
	n := -1
	if digits > 0 {
		sum := crc16.Checksum(data[:bang+1]) // once, for every run of digits
		for d := digits; d >= 1; d-- {
			if v, _ := crc16.ParseHex(tail[:d]); v == sum {
				n = bang + 1 + d
				break
			}
		}
	}
	if n < 0 {
		// No CRC that verifies: a DSMR 2/3 telegram, which carries none
		// (what looked like digits is the next thing in the stream), if it
		// is well formed and does not say it is DSMR 4 or later, which
		// always carry one; else a damaged telegram.
		if digits > 0 && bytes.Contains(data[:bang], versionLine) || !wellFormed(data[:bang+1]) {
			if digits > 0 {
				s.stats.BadCRC++
			}
			return 1, 0
		}
		n = bang + 1
	}
	return n + lineEndAfter(data[n:]), Plain
}

// versionLine starts the P1 version object that DSMR 4 and later send.
var versionLine = []byte("\n1-3:0.2.8(")

// lineEndAfter returns the length of the line end at the start of b: CR
// LF, a lone LF, a lone CR (damaged), or none.
func lineEndAfter(b []byte) int {
	switch {
	case len(b) >= 2 && b[0] == '\r' && b[1] == '\n':
		return 2
	case len(b) >= 1 && (b[0] == '\n' || b[0] == '\r'):
		return 1
	}
	return 0
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'A' && c <= 'F' || c >= 'a' && c <= 'f'
}
