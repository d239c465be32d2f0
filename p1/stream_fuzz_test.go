package p1

import (
	"bytes"
	"os"
	"testing"

	"github.com/smartybridge/smartybridge/decrypt"
)

// streamItem is an intact telegram or frame that a stream carries.
type streamItem struct {
	data  []byte
	plain bool
}

// streamItems are real telegrams and frames (../testdata) and the old
// meters' telegrams written in these tests.
func streamItems(tb testing.TB) []streamItem {
	var items []streamItem
	for _, name := range []string{"dsmr5-nl.telegram", "smarty-2026.telegram", "spec-appendix-a.telegram",
		"smarty-2026.frame", "smarty-2018-real.frame", "austria-t210dr.frame", "spec-appendix-a.frame"} {
		b, err := os.ReadFile("../testdata/" + name)
		if err != nil {
			tb.Fatal(err)
		}
		items = append(items, streamItem{data: b, plain: b[0] == '/'})
	}
	for _, s := range []string{dsmr22, dsmr3, kamstrup22} {
		items = append(items, streamItem{data: []byte(s), plain: true})
	}
	return items
}

// streamOpener holds the testdata frames' keys.
func streamOpener(tb testing.TB) *decrypt.Opener {
	aaaa, _ := decrypt.ParseKey("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
	real, _ := decrypt.ParseKey("D491470F47126332B07D1923B3504188")
	sysid, _ := decrypt.ParseTitle("SYSTEMID")
	t2018, _ := decrypt.ParseTitle("534147677001BD54")
	o, err := decrypt.NewOpener(decrypt.Options{Keys: map[decrypt.Title]decrypt.Key{sysid: aaaa, t2018: real}})
	if err != nil {
		tb.Fatal(err)
	}
	return o
}

// buildStream turns the fuzzer's bytes into a stream: per item, a choice of
// telegram or frame, of what becomes of a telegram's final line end
// (kept, removed, doubled, a lone CR or LF), and noise before it (bytes
// that may start false frames, but no '!', so that noise cannot end a
// telegram of its own). It returns the stream and the items it carries.
func buildStream(items []streamItem, recipe []byte) ([]byte, [][]byte) {
	var in []byte
	var want [][]byte
	for len(recipe) >= 3 && len(want) < 12 {
		it := items[int(recipe[0])%len(items)]
		ending, noiseLen := recipe[1]%5, int(recipe[2]%24)
		recipe = recipe[3:]
		for range noiseLen {
			c := byte(0x55)
			if len(recipe) > 0 {
				c, recipe = recipe[0], recipe[1:]
			}
			if c == '!' {
				c = '?'
			}
			in = append(in, c)
		}
		data := it.data
		if it.plain {
			body := bytes.TrimSuffix(data, []byte("\r\n"))
			switch ending {
			case 1:
				data = body
			case 2:
				data = cat(body, []byte("\r\n\r\n"))
			case 3:
				data = cat(body, []byte("\r"))
			case 4:
				data = cat(body, []byte("\n"))
			}
			// A telegram is intact up to its CRC.
			want = append(want, body)
		} else {
			want = append(want, data)
		}
		in = append(in, data...)
	}
	return in, want
}

// consume reads a stream as the bridge does: encrypted frames must
// authenticate (else Reject), plain telegrams parse; it returns what it
// accepted, plain telegrams without their line end.
func consume(in []byte, opener *decrypt.Opener, oneByte bool) [][]byte {
	var r = bytes.NewReader(in)
	s := NewScanner(r)
	if oneByte {
		s = NewScanner(oneByteReader{r})
	}
	var got [][]byte
	var plain []byte
	for s.Scan() {
		f := s.Frame()
		if s.Kind() == Encrypted {
			if _, _, err := opener.Open(nil, f); err != nil {
				s.Reject()
				continue
			}
			got = append(got, bytes.Clone(f))
			continue
		}
		var tg Telegram
		if tg.Parse(f) != nil {
			s.Reject()
			continue
		}
		plain = bytes.TrimRight(f, "\r\n")
		got = append(got, bytes.Clone(plain))
	}
	return got
}

type oneByteReader struct{ r *bytes.Reader }

func (o oneByteReader) Read(p []byte) (int, error) {
	if len(p) > 1 {
		p = p[:1]
	}
	return o.r.Read(p)
}

// FuzzStream: streams of real telegrams and frames, their line ends
// removed, doubled or damaged, with noise between them. Every intact one
// comes out exactly once, in order, nothing else does, and it does not
// matter how the bytes arrive.
func FuzzStream(f *testing.F) {
	items := streamItems(f)
	opener := streamOpener(f)
	f.Add([]byte{0, 1, 0, 0, 1, 0})                  // a telegram without line end, twice
	f.Add([]byte{7, 0, 0, 8, 1, 3, 0xDB, 0x08, 'S'}) // a false header before a telegram
	f.Add([]byte{3, 0, 5, 0xDB, 0x08, 0, 0, 0, 4, 0, 0, 1, 1, 0, 2, 2, 0, 5, 3, 0, 6, 4, 0})
	f.Add([]byte{9, 1, 0, 9, 1, 0, 8, 2, 2, '/', 'X'})
	f.Fuzz(func(t *testing.T, recipe []byte) {
		in, want := buildStream(items, recipe)
		got := consume(in, opener, false)
		if len(got) != len(want) {
			t.Fatalf("%d of %d intact items came out\nstream %q", len(got), len(want), in)
		}
		for i := range want {
			if !bytes.Equal(got[i], want[i]) {
				t.Fatalf("item %d differs:\n got %q\nwant %q", i, got[i], want[i])
			}
		}
		one := consume(in, opener, true)
		if len(one) != len(got) {
			t.Fatalf("one byte at a time: %d items, in bulk %d", len(one), len(got))
		}
	})
}
