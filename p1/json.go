package p1

import (
	"encoding/hex"
	"strconv"
)

// Origin says where a telegram came from, for AppendJSON. The zero value is
// a plain telegram.
type Origin struct {
	Encrypted    bool
	SystemTitle  [8]byte
	FrameCounter uint32
}

// AppendJSON appends the telegram as one JSON object (no newline), in the
// form of `smartybridge decode`:
//
//	{"meter":"SAG…","system_title":"…","frame_counter":1,"header":"…","maker":"SAG","crc":"CFDE",
//	 "objects":{"1-0:1.8.0":{"value":6.695,"unit":"kWh"},…}}
//
// Numbers stay JSON numbers with the meter's digits, timestamps become RFC
// 3339, hex-encoded text is decoded into "value" with the hex in "raw".
func (t *Telegram) AppendJSON(dst []byte, from Origin) []byte {
	dst = append(dst, '{')
	if id := t.MeterID(); id != nil {
		dst = append(dst, `"meter":`...)
		dst = appendString(dst, id)
		dst = append(dst, ',')
	}
	if from.Encrypted {
		dst = append(dst, `"system_title":"`...)
		dst = hex.AppendEncode(dst, from.SystemTitle[:])
		upper(dst[len(dst)-16:])
		dst = append(dst, `","frame_counter":`...)
		dst = strconv.AppendUint(dst, uint64(from.FrameCounter), 10)
		dst = append(dst, ',')
	}
	dst = append(dst, `"header":`...)
	dst = appendString(dst, t.Header)
	if m := t.Maker(); m != nil {
		// The FLAG code in upper case: "ISk" (Iskra) is ISK.
		dst = append(dst, `,"maker":"`...)
		for _, c := range m {
			if c >= 'a' && c <= 'z' {
				c -= 'a' - 'A'
			}
			dst = append(dst, c)
		}
		dst = append(dst, '"')
	}
	if t.HasCRC {
		dst = append(dst, `,"crc":"`...)
		dst = appendHex4(dst, t.CRC)
		dst = append(dst, '"')
	}
	dst = append(dst, `,"objects":{`...)
	for i := range t.Objects {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = t.Objects[i].appendJSON(dst)
	}
	return append(dst, '}', '}')
}

func (o *Object) appendJSON(dst []byte) []byte {
	dst = append(dst, '"')
	if o.Code != nil {
		dst = append(dst, o.Code...)
	} else {
		dst = o.OBIS.AppendText(dst)
	}
	dst = append(dst, `":{`...)
	switch {
	case o.OBIS.HexText():
		v := o.Values[0]
		dst = append(dst, `"value":`...)
		var scratch [128]byte
		if text, ok := v.AppendHexText(scratch[:0]); ok {
			dst = appendString(dst, text)
		} else {
			dst = appendString(dst, v.Text)
		}
		if len(v.Text) > 0 {
			dst = append(dst, `,"raw":`...)
			dst = appendString(dst, v.Text)
		}
	case o.IsMBus() || o.isLegacyMBus():
		dst = appendValueJSON(dst, o.Reading())
		if ts, ok := o.AppendTime(append(dst, `,"time":"`...)); ok {
			dst = append(ts, '"')
		}
	default:
		dst = appendValueJSON(dst, o.Values[0])
		if len(o.Values) > 1 {
			dst = append(dst, `,"values":[`...)
			for i, v := range o.Values {
				if i > 0 {
					dst = append(dst, ',')
				}
				dst = append(dst, '{')
				dst = appendValueJSON(dst, v)
				dst = append(dst, '}')
			}
			dst = append(dst, ']')
		}
	}
	return append(dst, '}')
}

// appendValueJSON appends `"value":…[,"unit":"…"]`.
func appendValueJSON(dst []byte, v Value) []byte {
	dst = append(dst, `"value":`...)
	switch {
	case v.IsNumber():
		dst = v.AppendNumber(dst)
	case v.IsTimestamp():
		if ts, ok := v.AppendRFC3339(append(dst, '"')); ok {
			dst = append(ts, '"')
		} else {
			dst = appendString(dst, v.Text)
		}
	default:
		dst = appendString(dst, v.Text)
	}
	if v.Unit != nil {
		dst = append(dst, `,"unit":`...)
		dst = appendString(dst, v.Unit)
	}
	return dst
}

const hexDigits = "0123456789ABCDEF"

func appendHex4(dst []byte, v uint16) []byte {
	return append(dst, hexDigits[v>>12], hexDigits[v>>8&0xF], hexDigits[v>>4&0xF], hexDigits[v&0xF])
}

func upper(b []byte) {
	for i, c := range b {
		if c >= 'a' && c <= 'f' {
			b[i] = c - 'a' + 'A'
		}
	}
}

// appendString appends s as a JSON string. Bytes outside printable ASCII
// are written as \u00XX, so the output is valid JSON whatever a meter sends.
func appendString(dst, s []byte) []byte {
	dst = append(dst, '"')
	for len(s) > 0 {
		// Copy the run that needs no escaping in one go.
		i := 0
		for i < len(s) && s[i] >= 0x20 && s[i] < 0x7F && s[i] != '"' && s[i] != '\\' {
			i++
		}
		dst = append(dst, s[:i]...)
		if i == len(s) {
			break
		}
		c := s[i]
		s = s[i+1:]
		switch {
		case c == '"' || c == '\\':
			dst = append(dst, '\\', c)
		case c == '\n':
			dst = append(dst, '\\', 'n')
		case c == '\r':
			dst = append(dst, '\\', 'r')
		case c == '\t':
			dst = append(dst, '\\', 't')
		default:
			dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
		}
	}
	return append(dst, '"')
}
