// Package crc16 computes CRC-16/ARC (polynomial 0xA001 reflected, initial
// value 0), the checksum that ends every DSMR telegram as "!XXXX".
//
// The table is sliced by sixteen: one lookup per byte costs about nine times
// an AES-GCM open of a whole frame; slicing-by-16 brings the checksum of a
// 1.2 KiB telegram to about 1.5 times the cost of decrypting it.
package crc16

import "encoding/binary"

const poly = 0xA001

var table [16][256]uint16

func init() {
	for i := range 256 {
		crc := uint16(i)
		for range 8 {
			if crc&1 != 0 {
				crc = crc>>1 ^ poly
			} else {
				crc >>= 1
			}
		}
		table[0][i] = crc
	}
	for i := range 256 {
		crc := table[0][i]
		for k := 1; k < 16; k++ {
			crc = table[0][crc&0xFF] ^ crc>>8
			table[k][i] = crc
		}
	}
}

// Checksum returns the CRC-16/ARC of b.
func Checksum(b []byte) uint16 {
	return Update(0, b)
}

// Update continues a CRC-16/ARC over b.
func Update(crc uint16, b []byte) uint16 {
	for len(b) >= 16 {
		a := binary.LittleEndian.Uint64(b) ^ uint64(crc)
		c := binary.LittleEndian.Uint64(b[8:])
		crc = table[15][a&0xFF] ^ table[14][a>>8&0xFF] ^ table[13][a>>16&0xFF] ^ table[12][a>>24&0xFF] ^
			table[11][a>>32&0xFF] ^ table[10][a>>40&0xFF] ^ table[9][a>>48&0xFF] ^ table[8][a>>56] ^
			table[7][c&0xFF] ^ table[6][c>>8&0xFF] ^ table[5][c>>16&0xFF] ^ table[4][c>>24&0xFF] ^
			table[3][c>>32&0xFF] ^ table[2][c>>40&0xFF] ^ table[1][c>>48&0xFF] ^ table[0][c>>56]
		b = b[16:]
	}
	for len(b) >= 8 {
		lo := binary.LittleEndian.Uint32(b) ^ uint32(crc)
		hi := binary.LittleEndian.Uint32(b[4:])
		crc = table[7][lo&0xFF] ^ table[6][lo>>8&0xFF] ^ table[5][lo>>16&0xFF] ^ table[4][lo>>24] ^
			table[3][hi&0xFF] ^ table[2][hi>>8&0xFF] ^ table[1][hi>>16&0xFF] ^ table[0][hi>>24]
		b = b[8:]
	}
	for _, c := range b {
		crc = table[0][byte(crc)^c] ^ crc>>8
	}
	return crc
}

// Verify reports whether telegram (from '/' up to and including '!')
// has the checksum written as one to four hex digits in want.
func Verify(telegram, want []byte) bool {
	v, ok := ParseHex(want)
	return ok && Checksum(telegram) == v
}

// ParseHex reads one to four hexadecimal digits (either case). Four is the
// DSMR form; some meters (Warmtelink heat meters) drop leading zeros.
func ParseHex(b []byte) (uint16, bool) {
	if len(b) < 1 || len(b) > 4 {
		return 0, false
	}
	var v uint16
	for _, c := range b {
		var d byte
		switch {
		case c >= '0' && c <= '9':
			d = c - '0'
		case c >= 'A' && c <= 'F':
			d = c - 'A' + 10
		case c >= 'a' && c <= 'f':
			d = c - 'a' + 10
		default:
			return 0, false
		}
		v = v<<4 | uint16(d)
	}
	return v, true
}
