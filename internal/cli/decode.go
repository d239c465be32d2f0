package cli

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/smartybridge/smartybridge/decrypt"
	"github.com/smartybridge/smartybridge/internal/telegrams"
	"github.com/smartybridge/smartybridge/p1"
	"github.com/smartybridge/smartybridge/p1/port"
)

// decodeConfig is what `smartybridge decode` reads from the environment.
type decodeConfig struct {
	KeyConfig
	Baud int `envconfig:"BAUD" default:"115200"` // for -device
}

// decodeCounts tallies one decode run for its summary line.
type decodeCounts struct {
	decoded   int
	bareLF    int // telegrams whose lines end in LF without CR
	rejected  telegrams.Counts
	authKey   int // authentication failures where the key itself was right
	noKeyFor  map[decrypt.Title]bool
	badKeyFor map[decrypt.Title]bool
}

// loadDecodeConfig reads the settings of the offline commands (decode,
// quarters): the keys, with SMARTY_KEYS_FILE's.
func loadDecodeConfig(env Env) (decodeConfig, error) {
	var cfg decodeConfig
	if err := env.Process(&cfg); err != nil {
		return cfg, err
	}
	if err := cfg.loadKeysFile(); err != nil {
		return cfg, configError{err}
	}
	return cfg, nil
}

func runDecode(ctx context.Context, args []string, env Env, stdin io.Reader, stdout, stderr io.Writer) (err error) {
	cfg, err := loadDecodeConfig(env)
	if err != nil {
		return err
	}
	fs := flag.NewFlagSet("decode", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	device := fs.String("device", "", "read a serial device (raw mode, SMARTY_BAUD) or tcp://host:port instead of files")
	maxFrames := fs.Int("frames", 0, "with -device: stop after this many frames (0: no limit)")
	maxTime := fs.Duration("duration", 0, "with -device: stop after this long (0: until Ctrl-C or -frames)")
	rawOut := fs.String("raw", "", "also write the bytes read, unchanged, to this file (a capture for a bug report)")
	if err := fs.Parse(args); err != nil {
		return configError{fmt.Errorf("decode: %v; see smartybridge decode -h", err)}
	}
	if err := flagsFirst("decode", fs.Args()); err != nil {
		return err
	}
	var in io.Reader
	if *device != "" {
		if fs.NArg() > 0 {
			return configError{errors.New("decode: give -device or files, not both")}
		}
		if *maxTime > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, *maxTime)
			defer cancel()
		}
		if cfg.Baud <= 0 {
			return configError{fmt.Errorf("SMARTY_BAUD=%d: want a positive speed such as 115200", cfg.Baud)}
		}
		p, err := port.Open(ctx, port.Options{Device: *device, Baud: cfg.Baud, Log: slog.New(slog.NewTextHandler(stderr, nil))})
		if err != nil {
			return configError{err}
		}
		defer func() { _ = p.Close() }() // read only
		in = p
	} else {
		files, closeAll, err := openInputs(fs.Args(), stdin)
		if err != nil {
			return configError{err}
		}
		defer closeAll()
		in = files
	}
	if *rawOut != "" {
		f, err := os.OpenFile(*rawOut, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
		if err != nil {
			return configError{err}
		}
		defer func() {
			if cerr := f.Close(); err == nil && cerr != nil {
				err = fmt.Errorf("decode -raw: %w", cerr)
			}
		}()
		in = io.TeeReader(in, f)
	}
	in = silenceTolerant{ctx, in}
	rd, err := telegrams.NewReader(in, cfg.offlineOptions())
	if err != nil {
		return err
	}

	out := bufio.NewWriterSize(stdout, 64<<10)
	c := decodeCounts{noKeyFor: map[decrypt.Title]bool{}, badKeyFor: map[decrypt.Title]bool{}}
	line := make([]byte, 0, 8192)
	frames := 0
	var readErr error
	for ctx.Err() == nil {
		f, err := rd.Next()
		if fe, ok := telegrams.AsFrameError(err); ok {
			c.reject(fe, cfg.KeyConfig, stderr)
			if frames++; *maxFrames > 0 && frames >= *maxFrames {
				break
			}
			continue
		}
		if err != nil {
			if err != io.EOF {
				readErr = err
			}
			break
		}
		frames++
		enough := *maxFrames > 0 && frames >= *maxFrames
		tg, from := f.Telegram, f.Origin
		for _, e := range tg.Malformed {
			fmt.Fprintf(stderr, "smartybridge: skipped a line: %v\n", e)
		}
		c.decoded++
		if tg.BareLF {
			c.bareLF++
		}
		line = append(tg.AppendJSON(line[:0], from), '\n')
		if _, err := out.Write(line); err != nil {
			return err
		}
		if enough {
			break
		}
	}
	if err := out.Flush(); err != nil {
		return err
	}
	st := rd.Stats()
	lf := ""
	if c.bareLF > 0 {
		lf = fmt.Sprintf(" (%d with bare LF line ends, no CR: a gateway or ser2net strips it; fine while the CRC matches)", c.bareLF)
	}
	fmt.Fprintf(stderr, "smartybridge: decoded %d telegrams%s; rejected %d authentication, %d no key, %d CRC, %d malformed, %d too long; %d bytes skipped\n",
		c.decoded, lf, c.rejected[telegrams.Authentication], c.rejected[telegrams.NoKey], c.rejected[telegrams.CRC]+int64(st.BadCRC),
		c.rejected[telegrams.Malformed], st.TooLong, st.Skipped)
	if readErr != nil && !errors.Is(readErr, context.Canceled) && !errors.Is(readErr, context.DeadlineExceeded) {
		return fmt.Errorf("read input: %w", readErr)
	}
	if st.Frames+st.Rejected+st.BadCRC == 0 && st.Skipped > 0 {
		fmt.Fprintf(stderr, "smartybridge: %d bytes but not one frame: a capture made with cat on a serial device is mangled by the tty (cooked mode); capture with 'smartybridge decode -device /dev/ttyUSB0 -raw capture.bin', or set the port raw first (stty -F /dev/ttyUSB0 115200 raw -echo). Live: check the speed (SMARTY_BAUD=115200) and that the cable inverts the signal\n", st.Skipped)
		return errNothingDecoded
	}
	// Plain telegrams with a bad CRC never become frames: count them too.
	if c.decoded == 0 && st.Frames+st.Rejected+st.BadCRC > 0 {
		return errNothingDecoded
	}
	return nil
}

// reject counts a frame that did not decode and explains the first one of
// each kind per meter: what is wrong and what to change. The key is never
// printed.
func (c *decodeCounts) reject(fe *telegrams.FrameError, keys KeyConfig, stderr io.Writer) {
	if fe.Reason == telegrams.NotAFrame {
		return
	}
	c.rejected[fe.Reason]++
	err := fe.Err
	title := decrypt.Title(fe.Origin.SystemTitle)
	switch {
	case errors.Is(err, decrypt.ErrAuthKey):
		if c.authKey++; c.authKey == 1 {
			fmt.Fprintf(stderr, "smartybridge: frames of meter %s decrypt with the key but fail authentication: the key is right and the authentication key differs; set SMARTY_AUTH_KEY to the meter's authentication key, or SMARTY_VERIFY_TAG=false to check the telegram CRC instead\n", title)
		}
	case errors.Is(err, decrypt.ErrAuth):
		if !c.badKeyFor[title] {
			c.badKeyFor[title] = true
			fmt.Fprintf(stderr, "smartybridge: a frame of meter %s failed authentication: the key does not fit this meter (check SMARTY_KEY or its SMARTY_KEYS entry against the key the grid operator sent for this meter), or the frame was damaged on the line\n", title)
		}
	case errors.Is(err, decrypt.ErrNoKey):
		if !c.noKeyFor[title] {
			c.noKeyFor[title] = true
			if keys.hasKey() {
				fmt.Fprintf(stderr, "smartybridge: no key for meter %s: add %s:<key> to SMARTY_KEYS or set SMARTY_KEY\n", title, title)
			} else {
				fmt.Fprintf(stderr, "smartybridge: encrypted frames from meter %s but no key: set SMARTY_KEY to the 32-digit key from your grid operator\n", title)
			}
		}
	case errors.Is(err, p1.ErrCRC), errors.Is(err, p1.ErrMalformed):
		fmt.Fprintf(stderr, "smartybridge: rejected a telegram: %v\n", err)
	}
}

// silenceTolerant turns a live port's silence into waiting: decode reads
// until the context ends. Files end with io.EOF as before.
type silenceTolerant struct {
	ctx context.Context
	r   io.Reader
}

func (s silenceTolerant) Read(p []byte) (int, error) {
	if err := s.ctx.Err(); err != nil {
		return 0, err
	}
	return s.r.Read(p)
}

// openInputs opens every file before reading any, so that a typo in the
// last name fails at once.
func openInputs(names []string, stdin io.Reader) (io.Reader, func(), error) {
	if len(names) == 0 {
		return stdin, func() {}, nil
	}
	var files []*os.File
	var readers []io.Reader
	closeAll := func() {
		for _, f := range files {
			_ = f.Close() // read only
		}
	}
	for _, n := range names {
		f, err := os.Open(n)
		if err != nil {
			closeAll()
			return nil, nil, err
		}
		files = append(files, f)
		readers = append(readers, f)
	}
	return io.MultiReader(readers...), closeAll, nil
}
