package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/smartybridge/smartybridge/internal/crc16"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/golden")

const (
	realKey = "D491470F47126332B07D1923B3504188"
	testKey = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
)

// decode runs `smartybridge decode` in-process with env set.
func decode(t *testing.T, env map[string]string, stdin []byte, args ...string) (stdout, stderr string, status int) {
	t.Helper()
	var out, errb bytes.Buffer
	err := run(context.Background(), append([]string{"decode"}, args...), processEnv().With(env), bytes.NewReader(stdin), &out, &errb)
	status = exitStatus(err, &errb)
	return out.String(), errb.String(), status
}

func TestDecodeGolden(t *testing.T) {
	for _, tt := range []struct{ name, file, key string }{
		{"smarty-2018-real", "smarty-2018-real.frame", realKey},
		{"smarty-2026", "smarty-2026.frame", testKey},
		{"spec-appendix-a", "spec-appendix-a.frame", testKey},
		{"austria-t210dr", "austria-t210dr.frame", testKey},
		{"dsmr5-nl", "dsmr5-nl.telegram", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			out, stderr, status := decode(t, map[string]string{"SMARTY_KEY": tt.key}, nil, filepath.Join("testdata", tt.file))
			if status != 0 {
				t.Fatalf("status %d: %s", status, stderr)
			}
			if !json.Valid([]byte(out)) || strings.Count(out, "\n") != 1 {
				t.Fatalf("want one JSON line, got %q", out)
			}
			golden := filepath.Join("testdata", "golden", tt.name+".json")
			if *update {
				if err := os.WriteFile(golden, []byte(out), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if out != string(want) {
				t.Errorf("output differs from %s (go test -run TestDecodeGolden -update rewrites it)\ngot:  %s\nwant: %s", golden, out, want)
			}
		})
	}
}

// TestDecodeMatchesExpected checks the JSON against the values an
// independent reading of each telegram gives (testdata/expected).
func TestDecodeMatchesExpected(t *testing.T) {
	out, stderr, status := decode(t, map[string]string{"SMARTY_KEY": testKey, "SMARTY_KEYS": "534147677001BD54:" + realKey}, nil,
		"testdata/smarty-2018-real.frame", "testdata/smarty-2026.frame", "testdata/spec-appendix-a.frame", "testdata/austria-t210dr.frame", "testdata/dsmr5-nl.telegram")
	if status != 0 {
		t.Fatalf("status %d: %s", status, stderr)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	names := []string{"smarty-2018-real", "smarty-2026", "spec-appendix-a", "austria-t210dr", "dsmr5-nl"}
	if len(lines) != len(names) {
		t.Fatalf("%d lines, want %d", len(lines), len(names))
	}
	type object struct {
		Value  any     `json:"value"`
		Unit   *string `json:"unit"`
		Time   string  `json:"time"`
		Values []any   `json:"values"`
		Multi  bool    `json:"multi"`
	}
	type telegram struct {
		Header  string            `json:"header"`
		CRC     string            `json:"crc"`
		Objects map[string]object `json:"objects"`
	}
	for i, name := range names {
		var got, want telegram
		if err := json.Unmarshal([]byte(lines[i]), &got); err != nil {
			t.Fatal(err)
		}
		b, _ := os.ReadFile("testdata/expected/" + name + ".json")
		if err := json.Unmarshal(b, &want); err != nil {
			t.Fatal(err)
		}
		if got.Header != want.Header || got.CRC != want.CRC {
			t.Errorf("%s: header %q crc %s, want %q %s", name, got.Header, got.CRC, want.Header, want.CRC)
		}
		for code, w := range want.Objects {
			g, ok := got.Objects[code]
			if !ok {
				t.Errorf("%s: %s missing", name, code)
				continue
			}
			if g.Value != w.Value || (g.Unit == nil) != (w.Unit == nil) || g.Unit != nil && *g.Unit != *w.Unit || g.Time != w.Time || (len(g.Values) > 1) != w.Multi {
				t.Errorf("%s: %s = %+v, want %+v", name, code, g, w)
			}
		}
	}
}

// lfOnly turns a CR LF telegram into one with bare LF line ends and the
// CRC of those bytes, as a gateway that strips CR and recomputes it sends.
func lfOnly(telegram []byte) []byte {
	b := bytes.ReplaceAll(telegram, []byte("\r\n"), []byte("\n"))
	bang := bytes.LastIndexByte(b, '!')
	return fmt.Appendf(b[:bang+1:bang+1], "%04X\n", crc16.Checksum(b[:bang+1]))
}

func TestDecodeErrorsAndStatus(t *testing.T) {
	frame, _ := os.ReadFile("testdata/smarty-2018-real.frame")
	plain, _ := os.ReadFile("testdata/dsmr5-nl.telegram")
	// A Warmtelink heat meter drops the CRC's leading zero (see
	// p1/oldmeters_test.go for the source).
	heat := []byte("/AUR2NWA-MYRSKY\r\n\r\n1-3:0.2.8(50)\r\n0-0:1.0.0(220107195809W)\r\n0-0:96.1.1(0)\r\n0-1:24.1.0(004)\r\n0-1:96.1.0(123456789A1B2410)\r\n0-1:24.2.1(220107195809W)(0.477*GJ)\r\n!D8C\r\n")
	tests := []struct {
		name     string
		env      map[string]string
		stdin    []byte
		args     []string
		status   int
		stderr   string // must appear
		telegram int
	}{
		{"wrong key", map[string]string{"SMARTY_KEY": testKey}, frame, nil, 1, "failed authentication: the key does not fit", 0},
		{"wrong auth key", map[string]string{"SMARTY_KEY": realKey, "SMARTY_AUTH_KEY": testKey}, frame, nil, 1, "the key is right and the authentication key differs; set SMARTY_AUTH_KEY", 0},
		{"skip tag", map[string]string{"SMARTY_KEY": realKey, "SMARTY_AUTH_KEY": testKey, "SMARTY_VERIFY_TAG": "false"}, frame, nil, 0, "decoded 1 telegrams", 1},
		{"crc mismatch", map[string]string{"SMARTY_KEY": realKey}, nil, []string{"testdata/crc-mismatch.frame"}, 1, "telegram CRC mismatch", 0},
		{"no key", nil, frame, nil, 1, "set SMARTY_KEY", 0},
		{"no frames", nil, []byte("just noise"), nil, 1, "but not one frame: a capture made with cat", 0},
		{"nothing at all", nil, nil, nil, 0, "decoded 0 telegrams", 0},
		{"bad key", map[string]string{"SMARTY_KEY": "1234"}, frame, nil, 2, "32 hexadecimal digits", 0},
		{"bad keys entry", map[string]string{"SMARTY_KEYS": "534147677001BD54"}, frame, nil, 2, "TITLE:KEY", 0},
		{"missing file", map[string]string{"SMARTY_KEY": realKey}, nil, []string{"testdata/smarty-2026.frame", "testdata/nope.frame"}, 2, "nope.frame", 0},
		{"plain CRC mismatch", nil, bytes.Replace(plain, []byte("000004.426"), []byte("000004.427"), 1), nil, 1, "rejected 0 authentication, 0 no key, 1 CRC", 0},
		{"plain, bare LF", nil, lfOnly(plain), nil, 0, "decoded 1 telegrams (1 with bare LF line ends", 1},
		{"three-digit CRC", nil, heat, nil, 0, "decoded 1 telegrams;", 1},
		// A false header of a meter without key must not swallow the frame
		// behind it (SMARTY_KEYS users).
		{"noise of a keyless title", map[string]string{"SMARTY_KEYS": "534147677001BD54:" + realKey}, append([]byte("\xDB\x08NOISE\x01\x02\x03\x81\xFF\x30\x00\x00\x00\x07"), frame...), nil, 0, "decoded 1 telegrams", 1},
		{"garbage around a frame", map[string]string{"SMARTY_KEY": realKey}, append(append([]byte("\xDB\x08xx/"), frame...), frame[:99]...), nil, 0, "decoded 1 telegrams", 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, stderr, status := decode(t, tt.env, tt.stdin, tt.args...)
			if status != tt.status {
				t.Errorf("status %d, want %d; stderr %s", status, tt.status, stderr)
			}
			if !strings.Contains(stderr, tt.stderr) {
				t.Errorf("stderr %q lacks %q", stderr, tt.stderr)
			}
			if n := strings.Count(out, "\n"); n != tt.telegram {
				t.Errorf("%d telegrams out, want %d", n, tt.telegram)
			}
			for _, k := range []string{realKey, testKey, strings.ToLower(realKey)} {
				if strings.Contains(stderr+out, k) && tt.env["SMARTY_AUTH_KEY"] != k {
					t.Errorf("output shows a key")
				}
			}
		})
	}
}

func BenchmarkDecodeCommand(b *testing.B) {
	frame, _ := os.ReadFile("testdata/smarty-2026.frame")
	stream := bytes.Repeat(frame, 1000)
	env := processEnv().With(map[string]string{"SMARTY_KEY": testKey})
	b.ReportAllocs()
	for b.Loop() {
		if err := run(context.Background(), []string{"decode"}, env, bytes.NewReader(stream), io.Discard, io.Discard); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*1000), "ns/frame")
}

func TestKeysFile(t *testing.T) {
	f := filepath.Join(t.TempDir(), "keys")
	os.WriteFile(f, []byte("# meters of the community\n534147677001BD54:"+realKey+"\n\nSYSTEMID:"+testKey+"\n"), 0o600)
	out, stderr, status := decode(t, map[string]string{"SMARTY_KEYS_FILE": f}, nil, "testdata/smarty-2018-real.frame", "testdata/smarty-2026.frame")
	if status != 0 || strings.Count(out, "\n") != 2 {
		t.Fatalf("status %d, %d telegrams: %s", status, strings.Count(out, "\n"), stderr)
	}
	os.WriteFile(f, []byte("534147677001BD54:nothex\n"), 0o600)
	if _, stderr, status := decode(t, map[string]string{"SMARTY_KEYS_FILE": f}, nil, "testdata/smarty-2018-real.frame"); status != 2 || !strings.Contains(stderr, "SMARTY_KEYS_FILE") {
		t.Errorf("bad keys file: status %d, %s", status, stderr)
	}
}
