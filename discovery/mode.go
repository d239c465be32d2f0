package discovery

// Mode is what an instance does; it decides which entities its own device
// has and how its Problems read.
type Mode string

// The modes (SMARTY_MODE).
const (
	ModeBridge  Mode = "bridge"  // read the meter, decrypt, publish
	ModeForward Mode = "forward" // read the meter, publish the encrypted frames only
	ModeDecrypt Mode = "decrypt" // take forwarded frames from the broker, publish as bridge mode
)

// Modes lists the modes.
var Modes = []Mode{ModeBridge, ModeForward, ModeDecrypt}

// ParseMode returns the mode named s; ok is false for any other word.
func ParseMode(s string) (m Mode, ok bool) {
	for _, m := range Modes {
		if string(m) == s {
			return m, true
		}
	}
	return "", false
}

// Reads reports whether the mode reads telegrams itself and publishes
// their states (bridge and decrypt mode).
func (m Mode) Reads() bool { return m == ModeBridge || m == ModeDecrypt }

// Problem is a state of an instance's Problem sensor.
type Problem string

// The Problem states.
const (
	ProblemOK          Problem = "ok"
	ProblemNoData      Problem = "no_data"      // port open, not one byte
	ProblemNoFrames    Problem = "no_frames"    // bytes, but no frame: speed, cable
	ProblemWrongKey    Problem = "wrong_key"    // frames fail authentication
	ProblemAuthKey     Problem = "auth_key"     // the key decrypts, the authentication key differs
	ProblemNoKey       Problem = "no_key"       // frames of a meter without a key
	ProblemCRCErrors   Problem = "crc_errors"   // telegrams fail their CRC: a noisy line
	ProblemNoDecryptor Problem = "no_decryptor" // forward mode: nothing confirmed
	ProblemNoMeter     Problem = "no_meter"     // nothing read yet
	ProblemNoPort      Problem = "no_port"      // the meter's port cannot be opened
	ProblemReplayed    Problem = "replayed"     // frames that were read before arrive again
)

// Problems are the Problem states, in the order Home Assistant lists them.
var Problems = []Problem{ProblemOK, ProblemNoData, ProblemNoFrames, ProblemWrongKey, ProblemAuthKey, ProblemNoKey, ProblemCRCErrors,
	ProblemNoDecryptor, ProblemNoMeter, ProblemNoPort, ProblemReplayed}

// problemLabels are the Problem states as Home Assistant shows them: words,
// not slugs (the diagnostics JSON keeps the slugs, for automations and
// APIs).
var problemLabels = map[Problem]string{
	ProblemOK: "OK", ProblemNoData: "No data from the meter", ProblemNoFrames: "No frames in the data",
	ProblemWrongKey: "Wrong key", ProblemAuthKey: "Wrong authentication key", ProblemNoKey: "No key for a meter",
	ProblemCRCErrors: "Damaged telegrams", ProblemNoDecryptor: "No decryptor confirms", ProblemNoMeter: "Waiting for the meter",
	ProblemNoPort: "Port cannot be opened", ProblemReplayed: "Frames repeated",
}

// Label is the Problem as Home Assistant shows it.
func (p Problem) Label() string {
	if l, ok := problemLabels[p]; ok {
		return l
	}
	return string(p)
}
