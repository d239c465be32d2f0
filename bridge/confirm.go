package bridge

import (
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"strconv"
	"strings"

	"github.com/smartybridge/smartybridge/decrypt"
)

// Confirmations: how a decryptor tells forwarders and the other decryptors
// which frames it has settled, in a way nobody without the meter's key can
// forge.
//
// For every frame it settles a decryptor publishes, on
//
//	<prefix>/confirm/<SYSTEM-TITLE>
//
//	{"counter":N,"key_id":"…","settled":["<frame id>:<verdict>",…],"pub":"…","sig":"…"}
//
// counter is the highest frame counter a decryptor accepted under the key
// key_id (a short one-way hash of the meter key: after a key change the
// meter's counter restarts and a new sequence begins). settled lists the
// frames settled most recently, newest last: a frame id is the first 8
// bytes of the SHA-256 of the frame, in hex; the verdict is
//
//	ok    decrypted and published
//	dup   its counter did not grow: a duplicate or a replay
//	auth  it failed authentication (damaged on the line, or the wrong key)
//	bad   it authenticated but holds no valid telegram (CRC, grammar)
//
// sig is an Ed25519 signature over all of it (confirmSigned), made with a
// key derived from the meter key: every decryptor holding the meter key
// derives the same signing key, and pub is its public half. Decryptors
// check sig with the public key they derive themselves, so only a holder
// of the meter key can move a decryptor's replay state. A forwarder, which
// holds no key, checks sig against the public key it was given
// (SMARTY_CONFIRM_KEY) or the first one that confirmed a frame of that
// meter (kept in its state directory), and then removes exactly the frames
// named in settled: a confirmation can never remove a frame it does not
// name, so an old key's confirmation cannot remove new frames.
//
// The message is retained (a forwarder that was away reads the last one
// when it comes back). Only meters whose frames authenticated get one:
// line noise and forged frames of made-up meters leave nothing behind on
// the broker and cost no signature.

// Verdicts of a settled frame.
const (
	verdictOK   = "ok"
	verdictDup  = "dup"
	verdictAuth = "auth"
	verdictBad  = "bad"
)

// settledKept is how many settled frames a confirmation lists.
const settledKept = 16

// maxConfirmLen bounds a confirmation's payload; a longer one is not ours.
const maxConfirmLen = 2048

type confirmation struct {
	Counter uint32   `json:"counter"`
	KeyID   string   `json:"key_id"`
	Settled []string `json:"settled"`
	Pub     string   `json:"pub"`
	Sig     string   `json:"sig"`
}

// confirmKey is the signing key of one meter key.
type confirmKey struct {
	priv  ed25519.PrivateKey
	pub   ed25519.PublicKey
	keyID string
}

// deriveConfirmKey derives the Ed25519 key that signs confirmations from a
// meter key. The derivation is one-way: the public key, which forwarders
// may be given, tells nothing about the meter key.
func deriveConfirmKey(k decrypt.Key) confirmKey {
	mac := hmac.New(sha256.New, k[:])
	mac.Write([]byte("smartybridge confirmation signing key v2"))
	priv := ed25519.NewKeyFromSeed(mac.Sum(nil))
	return confirmKey{priv: priv, pub: priv.Public().(ed25519.PublicKey), keyID: keyID(k)}
}

// ConfirmPublicKey is the public key that signs the confirmations for a
// meter key, in hex: what a forwarder's SMARTY_CONFIRM_KEY is set to.
func ConfirmPublicKey(k decrypt.Key) string {
	return hex.EncodeToString(deriveConfirmKey(k).pub)
}

// frameID names a frame in confirmations.
func frameID(frame []byte) string {
	sum := sha256.Sum256(frame)
	return hex.EncodeToString(sum[:8])
}

// confirmSigned is what the signature covers: the title and every field.
func confirmSigned(title string, c *confirmation) []byte {
	b := make([]byte, 0, 64+20*len(c.Settled))
	b = append(b, "smartybridge confirmation v2\n"...)
	b = append(b, title...)
	b = append(b, '\n')
	b = strconv.AppendUint(b, uint64(c.Counter), 10)
	b = append(b, '\n')
	b = append(b, c.KeyID...)
	b = append(b, '\n')
	b = append(b, strings.Join(c.Settled, ",")...)
	b = append(b, '\n')
	return append(b, c.Pub...)
}

// sign fills Pub and Sig.
func (k confirmKey) sign(title string, c *confirmation) []byte {
	c.KeyID = k.keyID
	c.Pub = hex.EncodeToString(k.pub)
	c.Sig = hex.EncodeToString(ed25519.Sign(k.priv, confirmSigned(title, c)))
	b, _ := json.Marshal(c)
	return b
}

var errConfirm = errors.New("not a valid confirmation")

// parseConfirmation reads a confirmation and checks that it is well formed
// and signed by the key it names. Whether that key is the right one is
// for the caller to say.
func parseConfirmation(title string, payload []byte) (*confirmation, ed25519.PublicKey, error) {
	if len(payload) > maxConfirmLen {
		return nil, nil, errConfirm
	}
	var c confirmation
	if json.Unmarshal(payload, &c) != nil || len(c.Settled) > settledKept {
		return nil, nil, errConfirm
	}
	for _, s := range c.Settled {
		id, verdict, ok := strings.Cut(s, ":")
		if !ok || len(id) != 16 || !isHexString(id) {
			return nil, nil, errConfirm
		}
		switch verdict {
		case verdictOK, verdictDup, verdictAuth, verdictBad:
		default:
			return nil, nil, errConfirm
		}
	}
	pub, err := hex.DecodeString(c.Pub)
	if err != nil || len(pub) != ed25519.PublicKeySize {
		return nil, nil, errConfirm
	}
	sig, err := hex.DecodeString(c.Sig)
	if err != nil || len(sig) != ed25519.SignatureSize || !ed25519.Verify(pub, confirmSigned(title, &c), sig) {
		return nil, nil, errConfirm
	}
	return &c, ed25519.PublicKey(pub), nil
}

func isHexString(s string) bool {
	for i := 0; i < len(s); i++ {
		if !isHexDigit(s[i]) {
			return false
		}
	}
	return true
}

func isHexDigit(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

// ParseConfirmKey reads a public confirmation key: 64 hex digits.
func ParseConfirmKey(s string) (ed25519.PublicKey, error) {
	b, err := hex.DecodeString(strings.TrimSpace(s))
	if err != nil || len(b) != ed25519.PublicKeySize {
		return nil, errors.New("want the 64 hex digits a decryptor logs as confirm_key at start (or 'smartybridge confirm-key' prints)")
	}
	return ed25519.PublicKey(b), nil
}
