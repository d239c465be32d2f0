package bridge

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"

	"github.com/smartybridge/smartybridge/internal/statefile"
)

// MQTTOptions say how to reach the broker.
type MQTTOptions struct {
	URL *url.URL // mqtt://host:port or mqtts://host:port
	// MoreURLs are the other nodes of a broker cluster. Each instance
	// starts at a node of its own (by its client id), so that many spread
	// over the cluster, and goes on to the next when one fails.
	MoreURLs []*url.URL
	Username string
	Password string
	ClientID string
	TLS      *tls.Config // for mqtts; nil uses the system's roots
	// HealthFile, if set, records the connection state ("up" or "down"
	// and a Unix time) for `smartybridge health`, a container health check.
	HealthFile string
}

// publisher is what the modes need of an MQTT connection; a conn, or a
// test's recorder.
type publisher interface {
	// publish sends one message through paho; at QoS 1 it returns once
	// the broker acknowledged it.
	publish(ctx context.Context, topic string, payload []byte, qos byte, retain bool) error
	// writeBatch writes QoS 0 packets in one write, closed by a PINGREQ
	// whose answer confirms them (batch.go, pinger.go).
	writeBatch(packets []byte) (gen, n int64, ok bool, err error)
	// isUp reports whether the connection is up.
	isUp() bool
}

// conn is an autopaho connection with the bridge's logging and hints.
type conn struct {
	cm       *autopaho.ConnectionManager
	log      *slog.Logger
	url      string                  // the brokers, for logs
	attempt  atomic.Pointer[url.URL] // the broker of the last attempt (the one in use when up)
	failures atomic.Int64
	up       atomic.Bool
	// firstUp is closed once the first connection counts as up (up set):
	// autopaho's AwaitConnection returns before OnConnectionUp has run.
	firstUp   chan struct{}
	firstOnce sync.Once
	// takenOver is when the broker last closed the connection because
	// another client connected with our client id (0x8E), in Unix ns.
	takenOver atomic.Int64
	takeovers atomic.Int64
	// upSince is when the connection last came up (Unix ns); flaps counts
	// connections in a row that the broker dropped within seconds although
	// it was reachable all along (backoff).
	upSince atomic.Int64
	flaps   atomic.Int64
	// dropped: the last connection was lost (not yet up again);
	// upAtOnce: the current connection came up at the first attempt after
	// a drop, so the broker never went away; refused: the last attempt
	// failed because the broker answered no (a login, an ACL).
	dropped  atomic.Bool
	upAtOnce atomic.Bool
	refused  atomic.Bool
	current  atomic.Pointer[lockedConn]
	ping     *pinger
}

// connectOptions are the hooks of one connection.
type connectOptions struct {
	statusTopic string // retained "offline" will, "online" on connect
	// sessionExpiry > 0 keeps the session (and its subscriptions and queued
	// QoS 1 messages) on the broker across disconnections, for decryptors.
	sessionExpiry uint32
	onUp          func() // after every (re)connection; must not block
	// beforeUp runs before the connection counts as up (isUp), so that
	// what is published on it already sees the new connection's
	// generation; must not block.
	beforeUp  func()
	onMessage func(topic string, payload []byte) // every received message
	keepAlive uint16                             // seconds; 0 means 30
	// maxPacket > 0 tells the broker the largest packet we take (MQTT 5
	// Maximum Packet Size): it drops larger messages instead of sending
	// them, so that no client can make us buffer megabytes.
	maxPacket uint32
}

// dial starts connecting in the background and returns at once; autopaho
// reconnects forever with backoff.
func dial(ctx context.Context, o MQTTOptions, co connectOptions, log *slog.Logger) (*conn, error) {
	if o.URL == nil {
		return nil, errors.New("no broker URL")
	}
	urls := brokerOrder(o.ClientID, o.urls())
	c := &conn{log: log, url: brokerList(urls), ping: &pinger{}, firstUp: make(chan struct{})}
	c.attempt.Store(urls[0])
	if co.keepAlive == 0 {
		co.keepAlive = 30
	}
	cfg := autopaho.ClientConfig{
		ServerUrls:                    urls,
		TlsCfg:                        o.TLS,
		KeepAlive:                     co.keepAlive,
		CleanStartOnInitialConnection: co.sessionExpiry == 0,
		SessionExpiryInterval:         co.sessionExpiry,
		ConnectTimeout:                10 * time.Second,
		ReconnectBackoff:              c.backoff,
		ConnectUsername:               o.Username,
		ConnectPassword:               []byte(o.Password),
		WillMessage:                   &paho.WillMessage{Topic: co.statusTopic, Payload: []byte("offline"), QoS: 1, Retain: true},
		OnConnectionUp: func(cm *autopaho.ConnectionManager, _ *paho.Connack) {
			c.upSince.Store(time.Now().UnixNano())
			n := c.failures.Swap(0)
			c.upAtOnce.Store(c.dropped.Swap(false) && n == 0)
			c.refused.Store(false)
			// Held telegrams of the old connection are sent again as soon
			// as this one counts as up (hold.go): it must be the pinger's.
			if lc := c.current.Load(); lc != nil {
				c.ping.adopt(*lc)
			}
			if co.beforeUp != nil {
				co.beforeUp()
			}
			c.up.Store(true)
			c.firstOnce.Do(func() { close(c.firstUp) })
			writeHealth(log, o.HealthFile, "up")
			log.Info("connected to MQTT broker", "broker", redactURL(c.attempt.Load()), "failed_attempts", n)
			if co.onUp != nil {
				co.onUp()
			}
		},
		OnConnectionDown: func() bool {
			c.up.Store(false)
			c.dropped.Store(true)
			writeHealth(log, o.HealthFile, "down")
			// A broker that crashed is unreachable for a moment before it
			// comes back: the connection after it came up only after failed
			// attempts. A broker that drops a connection it had accepted at
			// once, within seconds, again and again, is alive and throws
			// us out: most often another client with our client id, which
			// mosquitto lets take over without a reason code.
			if !c.upAtOnce.Load() || time.Since(time.Unix(0, c.upSince.Load())) > flapWindow {
				c.flaps.Store(0)
				log.Warn("lost the MQTT broker; reconnecting every second (the meter is still read and its telegrams held)", "broker", c.url)
				return true
			}
			if n := c.flaps.Add(1); n == 2 || n%10 == 0 {
				log.Warn("the broker drops the connection within seconds of every connect; backing off up to 30 s",
					"broker", c.url, "times", n, "client_id", o.ClientID,
					"hint", "another client probably uses the same client id: give every smartybridge its own SMARTY_MQTT_CLIENT_ID (or leave it unset for a unique default); else check the broker's log (ACL, limits)")
			} else {
				log.Debug("the broker dropped the connection right after connecting", "broker", c.url, "times", n)
			}
			return true
		},
		OnConnectError:    c.connectError,
		AttemptConnection: dialKeep(o.TLS, func(u *url.URL) { c.attempt.Store(u) }, func(lc lockedConn) { c.current.Store(&lc) }),
		ClientConfig: paho.ClientConfig{
			ClientID:    o.ClientID,
			PingHandler: c.ping,
			OnClientError: func(err error) {
				log.Debug("mqtt client error", "err", err)
			},
			OnServerDisconnect: func(d *paho.Disconnect) {
				if d.ReasonCode == 0x8E {
					c.takenOver.Store(time.Now().UnixNano())
					if n := c.takeovers.Add(1); n == 1 || n%10 == 0 {
						log.Warn("another client connected with the same client id and took over the session; reconnecting only every 30 s",
							"client_id", o.ClientID, "times", n,
							"hint", "give every smartybridge its own SMARTY_MQTT_CLIENT_ID (two hosts with the same name, or forwarder and decryptor on one host with the same id?)")
					}
					return
				}
				log.Warn("MQTT broker closed the connection", "reason_code", d.ReasonCode, "reason", reasonString(d.Properties))
			},
		},
	}
	if co.onMessage != nil {
		cfg.OnPublishReceived = []func(paho.PublishReceived) (bool, error){
			func(p paho.PublishReceived) (bool, error) {
				co.onMessage(p.Packet.Topic, p.Packet.Payload)
				return true, nil
			},
		}
	}
	if co.maxPacket > 0 {
		limit := co.maxPacket
		cfg.ConnectPacketBuilder = func(p *paho.Connect, _ *url.URL) (*paho.Connect, error) {
			if p.Properties == nil {
				p.Properties = &paho.ConnectProperties{}
			}
			p.Properties.MaximumPacketSize = &limit
			return p, nil
		}
	}
	cm, err := autopaho.NewConnection(ctx, cfg)
	if err != nil {
		return nil, err
	}
	c.cm = cm
	return c, nil
}

// flapWindow: a connection the broker drops sooner than this counts as a
// flap.
const flapWindow = 5 * time.Second

// reconnectEvery is the pause between attempts while the broker is away:
// a broker that comes back is found within about this long. An attempt
// costs one TCP handshake, and the log stays quiet (connectError).
const reconnectEvery = time.Second

// backoff is the pause before connection attempt n (0: the first after a
// drop, or at start). The broker being away (a crash, a restart, a
// network fault) costs reconnectEvery. Waits are longer only where the
// broker is there and says no:
//   - after another client took our session over (MQTT 5 reason 0x8E): 30 s;
//   - after connections it accepted at once and dropped within seconds
//     (flaps): 2, 4, … up to 30 s, so that two clients with one id do not
//     throw each other out many times a second;
//   - after it refused the connection (login, ACL, protocol): 1, 2, 4, …
//     up to 30 s, until a person fixes the configuration.
func (c *conn) backoff(attempt int) time.Duration {
	var d time.Duration
	switch {
	case attempt == 0:
	case c.refused.Load():
		d = min(30*time.Second, time.Second<<min(attempt-1, 5))
	default:
		d = reconnectEvery
	}
	if t := c.takenOver.Load(); t != 0 && time.Since(time.Unix(0, t)) < time.Minute {
		d = max(d, 30*time.Second)
	}
	if f := c.flaps.Load(); f > 0 {
		d = max(d, min(30*time.Second, time.Second<<min(f, 5)))
	}
	return d
}

func reasonString(p *paho.DisconnectProperties) string {
	if p == nil {
		return ""
	}
	return p.ReasonString
}

// connectError explains a failed attempt once, then every tenth time, with
// what to check.
func (c *conn) connectError(err error) {
	n := c.failures.Add(1)
	var ce *autopaho.ConnackError
	c.refused.Store(errors.As(err, &ce))
	var ne net.Error
	hint := "check that the broker runs at this address and port"
	switch {
	case errors.As(err, &ce) && (ce.ReasonCode == 0x84 || ce.ReasonCode == 0x01):
		hint = "the broker refused MQTT 5; smartybridge speaks MQTT 5 only (mosquitto 1.6 or later, EMQX, HiveMQ, VerneMQ, the Home Assistant Mosquitto add-on)"
	case errors.As(err, &ce) && (ce.ReasonCode == 0x86 || ce.ReasonCode == 0x87 || ce.ReasonCode == 0x04 || ce.ReasonCode == 0x05):
		hint = "the broker refused the login: check SMARTY_MQTT_USERNAME and SMARTY_MQTT_PASSWORD"
	case errors.As(err, &ce):
		hint = fmt.Sprintf("the broker refused the connection (reason code 0x%02X %s)", ce.ReasonCode, ce.Reason)
	case errors.As(err, new(x509.UnknownAuthorityError)):
		hint = "the broker's TLS certificate is signed by a CA this system does not trust: set SMARTY_MQTT_CA_FILE to that CA's certificate (PEM)"
	case errors.As(err, new(x509.HostnameError)):
		hint = "the broker's TLS certificate is for another name: put a name the certificate lists in SMARTY_MQTT_URL"
	case errors.As(err, new(x509.CertificateInvalidError)):
		hint = "the broker's TLS certificate is not valid (expired, not yet valid, or not for a server): renew it, or check this machine's clock"
	case errors.As(err, new(tls.RecordHeaderError)), errors.Is(err, errTLSHandshake):
		hint = "the port does not speak TLS (the broker dropped the TLS handshake): use mqtt:// for it, or the broker's TLS port (usually 8883) with mqtts://"
	case errors.As(err, new(*net.DNSError)) && strings.HasSuffix(strings.TrimSuffix(c.attempt.Load().Hostname(), "."), ".local"):
		// Neither the system's resolver nor multicast DNS
		// (brokerAddress) knew the name.
		hint = "no answer for this .local name, from DNS nor from multicast DNS: use the broker's IP address in SMARTY_MQTT_URL (Home Assistant shows it under Settings → System → Network), or core-mosquitto from an add-on"
	case errors.As(err, new(*net.DNSError)):
		hint = "the broker's host name does not resolve: check its spelling in SMARTY_MQTT_URL, or use its IP address"
	case errors.Is(err, syscall.ECONNREFUSED):
		hint = "nothing listens there: check the host and port in SMARTY_MQTT_URL and that the broker runs"
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET):
		hint = "the broker closed the connection during the handshake: it may not support MQTT 5 (smartybridge speaks MQTT 5 only), or it expects TLS (mqtts://) or a login"
	case errors.As(err, &ne) && ne.Timeout():
		hint = "no answer from the broker: check the host, the port and any firewall"
	}
	// Once at once, again at the third attempt (a pattern by then), then
	// about once a minute (attempts are a second apart while the broker
	// is away).
	if n == 1 || n == 3 || n%60 == 0 {
		c.log.Warn("cannot connect to MQTT broker; retrying with backoff", "broker", redactURL(c.attempt.Load()), "attempt", n, "err", err, "hint", hint)
		return
	}
	c.log.Debug("cannot connect to MQTT broker", "broker", redactURL(c.attempt.Load()), "attempt", n, "err", err)
}

func (c *conn) isUp() bool { return c.up.Load() }

func (c *conn) publish(ctx context.Context, topic string, payload []byte, qos byte, retain bool) error {
	_, err := c.cm.Publish(ctx, &paho.Publish{Topic: topic, Payload: payload, QoS: qos, Retain: retain})
	return err
}

// writeBatch writes QoS 0 packets built by appendPublish in one call,
// closed by a PINGREQ whose answer says the broker read them all
// (pinger.go). ok is false when there is no connection. gen and n name the
// PINGREQ for pinger.delivered.
func (c *conn) writeBatch(packets []byte) (gen, n int64, ok bool, err error) {
	p := c.current.Load()
	if p == nil || !c.up.Load() {
		return 0, 0, false, nil
	}
	lc := *p
	packets = append(packets, pingReq...)
	lc.Lock() // the lock paho takes for each of its packets (batch.go)
	gen, n = c.ping.written(lc)
	_, err = lc.Write(packets)
	lc.Unlock()
	return gen, n, true, err
}

func (c *conn) subscribe(ctx context.Context, topics ...string) error {
	subs := make([]paho.SubscribeOptions, len(topics))
	for i, t := range topics {
		subs[i] = paho.SubscribeOptions{Topic: t, QoS: 1}
	}
	return c.subscribeWith(ctx, subs)
}

// subscribeWith subscribes with options per topic; paho reports a
// subscription the broker refused (an ACL refusal) as an error.
func (c *conn) subscribeWith(ctx context.Context, subs []paho.SubscribeOptions) error {
	_, err := c.cm.Subscribe(ctx, &paho.Subscribe{Subscriptions: subs})
	return err
}

// awaitConnection waits, at most d, for the first connection to count as
// up: what is published after it goes out instead of being held.
func (c *conn) awaitConnection(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-c.firstUp:
		return true
	case <-ctx.Done():
	case <-t.C:
	}
	return false
}

// close disconnects cleanly (no will) and waits for autopaho to stop.
func (c *conn) close(ctx context.Context) {
	if err := c.cm.Disconnect(ctx); err != nil {
		c.log.Debug("disconnect", "err", err) // already down: nothing to close
	}
	select {
	case <-c.cm.Done():
	case <-ctx.Done():
	}
}

// writeHealth records the connection state for a health check.
func writeHealth(log *slog.Logger, path, state string) {
	if path == "" {
		return
	}
	// state, when, and which process: `smartybridge health` fails once
	// that process is gone, whatever the file says.
	if err := statefile.Write(path, fmt.Appendf(nil, "%s %d %d\n", state, time.Now().Unix(), os.Getpid()), 0o644); err != nil {
		log.Debug("health file not written", "file", path, "err", err)
	}
}

// redactURL drops the password from a URL for logs.
func redactURL(u *url.URL) string {
	return u.Redacted()
}

// Brokers lists the brokers for a log line, without a login.
func (o MQTTOptions) Brokers() string { return brokerList(o.urls()) }

// urls are the brokers in the order given.
func (o MQTTOptions) urls() []*url.URL {
	if o.URL == nil {
		return o.MoreURLs
	}
	return append([]*url.URL{o.URL}, o.MoreURLs...)
}

// brokerList shows urls for a log line, without a login.
func brokerList(urls []*url.URL) string {
	s := make([]string, len(urls))
	for i, u := range urls {
		s[i] = redactURL(u)
	}
	return strings.Join(s, ",")
}

// brokerOrder is the order in which an instance tries the brokers: from
// one chosen by its client id, so that the instances of a cluster's
// clients spread over its nodes, then the others in the order given.
func brokerOrder(clientID string, urls []*url.URL) []*url.URL {
	if len(urls) < 2 {
		return urls
	}
	h := fnv.New32a()
	h.Write([]byte(clientID))
	k := int(h.Sum32() % uint32(len(urls)))
	return append(slices.Clone(urls[k:]), urls[:k]...)
}
