// Package decrypt opens and seals the DLMS general-glo-ciphering frames that
// a Luxembourg Smarty meter (Sagemcom T210-D) sends on its P1 port.
//
// A frame, all integers big-endian (Smarty P1 specification v1.1.3, §3.2):
//
//	DB | 08 | system title (8) | 82 | len (2) | 30 | frame counter (4) | ciphertext | GCM tag (12)
//	tag  len  "SAG" + 5 bytes    BER length      SC  invocation counter
//
// len counts SC, counter, ciphertext and tag; the short (<0x80) and 0x81
// length forms are accepted as well. The ciphertext is AES-128-GCM with a
// 12-byte tag, IV = system title ‖ frame counter and additional data =
// 0x30 ‖ authentication key.
//
// The package uses only the standard library and knows nothing of the
// telegram inside, except how to check its CRC in the opt-in mode that skips
// the tag.
package decrypt
