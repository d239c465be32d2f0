// Package p1 turns the bytes of a smart meter's P1 port into frames and
// telegrams.
//
// A Scanner splits a byte stream into frames of two kinds, which may be
// mixed on one stream:
//
//	encrypted (Smarty, DLMS general-glo-ciphering; Smarty P1 spec v1.1.3 §3.2)
//	  DB 08 <system title:8> <BER length: n | 81 n | 82 nn> 30 <counter:4> <ciphertext> <tag:12>
//	plain (DSMR 2.2 to 5; Smarty P1 spec §3.3)
//	  /XXX5<identification>\r\n \r\n <OBIS(value)…\r\n>… !<CRC-16 hex:4>\r\n
//
// Framing of encrypted frames is by their declared length; plain telegrams
// end at '!' and must pass their CRC (or, for meters that send none, be well
// formed throughout). The scanner never gives up on bad data: after garbage,
// a truncated frame or a false header found inside ciphertext it moves one
// byte on and searches again, so every intact frame that follows is still
// delivered. Only an error of the underlying reader ends a scan.
//
// Parse reads a telegram (the plaintext of a frame, or a plain frame) into
// typed objects without copying: a Telegram refers to the bytes it was parsed
// from. The grammar is DSMR 5 (P1 companion standard 5.0.2 §6.4):
//
//	telegram = "/" ident CRLF CRLF { object CRLF } "!" [crc] CRLF
//	object   = obis { "(" value ["*" unit] ")" }
//	obis     = A "-" B ":" C "." D "." E
//
// Timestamps are YYMMDDhhmmss plus S (summer, UTC+2) or W (winter, UTC+1).
// Identifiers (0-0:42.0.0, 0-0:96.1.1, 0-n:96.1.0) and messages (96.13.x)
// are hex-encoded text.
package p1
