// Package telegrams turns a P1 byte stream into telegrams: it frames
// (p1.Scanner), decrypts (decrypt.Opener) and parses (p1.Telegram), and
// feeds what it learns back to the framing, so that every mode reads the
// same way.
//
//	bytes ─► p1.Scanner ─► Decoder ─► *p1.Telegram      Reader.Next
//	           ▲   │          │
//	           │   └ frame    └─ *FrameError (Reason) ─► Reject: resync one byte on
//	           └──── Know(title) once a title authenticated
//
// A bad frame is an error of its own (FrameError, with its offset and
// Reason) that does not end the stream; only the source's error does.
// Reason names a rejected frame once, for logs, metrics and Home
// Assistant alike.
package telegrams
