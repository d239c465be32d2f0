package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// RMQTTSetup is the script that provisions the rmqtt broker the cluster
// tests run, relative to the repository root.
const RMQTTSetup = "tools/rmqtt/setup.sh"

// RMQTTBinary is where the setup script links the rmqttd it built:
// $SMARTY_RMQTT_CACHE/rmqttd, by default under /var/cache.
func RMQTTBinary() string {
	return filepath.Join(cacheDir("SMARTY_RMQTT_CACHE", "rmqtt"), "rmqttd")
}

// NeedRMQTT returns the rmqttd binary, or skips the test with a message
// naming the setup script; under CI=true a missing one fails the test.
func NeedRMQTT(t testing.TB) string {
	t.Helper()
	bin := RMQTTBinary()
	why := ""
	if testing.Short() {
		why = "-short"
	} else if _, err := os.Stat(bin); err != nil {
		why = "no rmqttd at " + bin + "; run " + RMQTTSetup
	}
	if why != "" {
		unprovisioned(t, "rmqtt cluster test", why)
	}
	return bin
}

// unprovisioned skips the test, saying why; under CI=true it fails it, so
// that CI cannot pass without running it.
func unprovisioned(t testing.TB, test, why string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s cannot run under CI: %s", test, why)
	}
	t.Skipf("%s skipped: %s", test, why)
}

// Cluster is a cluster of rmqtt brokers on 127.0.0.1, joined by Raft.
type Cluster struct {
	Nodes []*ClusterNode
}

// ClusterNode is one rmqttd process of a Cluster.
type ClusterNode struct {
	bin  string
	dir  string
	ID   int
	Port int
	URL  string // mqtt://127.0.0.1:PORT
	cmd  *exec.Cmd
}

// RMQTTCluster starts an n-node rmqtt cluster for the test (see
// StartCluster); it is killed when the test ends, and the nodes' logs are
// shown if it failed.
func RMQTTCluster(t testing.TB, n, queueLen int) *Cluster {
	t.Helper()
	bin := NeedRMQTT(t)
	var dirs []string
	for range n {
		dirs = append(dirs, t.TempDir())
	}
	c, err := StartCluster(bin, dirs, queueLen)
	if c != nil {
		t.Cleanup(func() {
			c.Kill()
			if t.Failed() {
				for _, node := range c.Nodes {
					t.Logf("rmqtt node %d log:\n%s", node.ID, node.Log())
				}
			}
		})
	}
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// StartCluster starts a cluster of len(dirs) rmqtt nodes on free ports of
// 127.0.0.1, node i configured in dirs[i], node 1 first (it leads), and
// waits until every node accepts MQTT connections. Each node keeps
// retained messages in memory, shares subscriptions and lets anyone in; a
// session's queue holds up to queueLen messages.
func StartCluster(bin string, dirs []string, queueLen int) (*Cluster, error) {
	type ports struct{ mqtt, grpc, raft int }
	ps := make([]ports, len(dirs))
	var grpc, raft []string
	for i := range ps {
		for _, p := range []*int{&ps[i].mqtt, &ps[i].grpc, &ps[i].raft} {
			var err error
			if *p, err = freePort(); err != nil {
				return nil, err
			}
		}
		grpc = append(grpc, fmt.Sprintf(`"%d@127.0.0.1:%d"`, i+1, ps[i].grpc))
		raft = append(raft, fmt.Sprintf(`"%d@127.0.0.1:%d"`, i+1, ps[i].raft))
	}
	// One node is no cluster: the Raft plugin would wait for peers.
	raftPlugin := `"rmqtt-cluster-raft", `
	if len(dirs) == 1 {
		raftPlugin = ""
	}
	c := &Cluster{}
	for i, p := range ps {
		dir := dirs[i]
		plugins := filepath.Join(dir, "plugins")
		files := map[string]string{
			"rmqtt.toml": fmt.Sprintf(`node.id = %d
rpc.server_addr = "127.0.0.1:%d"
log.to = "console"
log.level = "warn"
plugins.dir = %q
plugins.default_startups = [%s"rmqtt-retainer", "rmqtt-shared-subscription"]
listener.tcp.external.addr = "127.0.0.1:%d"
listener.tcp.external.allow_anonymous = true
listener.tcp.external.max_mqueue_len = %d
listener.tcp.external.max_inflight = 128
listener.tcp.external.session_expiry_interval = "24h"
`, i+1, p.grpc, plugins+"/", raftPlugin, p.mqtt, queueLen),
			"plugins/rmqtt-cluster-raft.toml": fmt.Sprintf(`node_grpc_addrs = [%s]
raft_peer_addrs = [%s]
laddr = "127.0.0.1:%d"
leader_id = 1
raft.grpc_reuseaddr = true
raft.proposal_batch_timeout = "5ms"
raft.heartbeat = "20ms"
`, strings.Join(grpc, ", "), strings.Join(raft, ", "), p.raft),
			"plugins/rmqtt-retainer.toml":            "storage.type = \"ram\"\nmax_retained_messages = 0\nmax_payload_size = \"1MB\"\nretained_message_ttl = \"0m\"\n",
			"plugins/rmqtt-shared-subscription.toml": "strategy = \"round_robin_per_group\"\n",
			"plugins/rmqtt-acl.toml":                 "rules = [[\"allow\", \"all\"]]\n",
			"plugins/rmqtt-counter.toml":             "",
			"plugins/rmqtt-sys-topic.toml":           "",
			"plugins/rmqtt-cluster-broadcast.toml":   fmt.Sprintf("node_grpc_addrs = [%s]\n", strings.Join(grpc, ", ")),
		}
		if err := os.MkdirAll(plugins, 0o755); err != nil {
			return c, err
		}
		for name, text := range files {
			if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
				return c, err
			}
		}
		node := &ClusterNode{bin: bin, dir: dir, ID: i + 1, Port: p.mqtt, URL: fmt.Sprintf("mqtt://127.0.0.1:%d", p.mqtt)}
		c.Nodes = append(c.Nodes, node)
		if err := node.Start(); err != nil {
			return c, err
		}
	}
	return c, nil
}

// URLs lists the nodes' URLs separated by commas (SMARTY_MQTT_URL).
func (c *Cluster) URLs() string {
	var s []string
	for _, n := range c.Nodes {
		s = append(s, n.URL)
	}
	return strings.Join(s, ",")
}

// Kill kills every node.
func (c *Cluster) Kill() {
	for _, n := range c.Nodes {
		n.Kill()
	}
}

// Start starts the node and waits until it accepts MQTT connections.
func (n *ClusterNode) Start() error {
	n.cmd = exec.Command(n.bin, "-f", filepath.Join(n.dir, "rmqtt.toml"), "--id", fmt.Sprint(n.ID))
	n.cmd.Dir = n.dir
	logf, err := os.OpenFile(filepath.Join(n.dir, "rmqttd.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer func() { _ = logf.Close() }()
	n.cmd.Stdout, n.cmd.Stderr = logf, logf
	if err := n.cmd.Start(); err != nil {
		return err
	}
	if !listening(n.Port, 60*time.Second) {
		return fmt.Errorf("rmqtt node %d does not listen on %d after 60 s; its log:\n%s", n.ID, n.Port, n.Log())
	}
	return nil
}

// Kill kills the node with SIGKILL.
func (n *ClusterNode) Kill() {
	if n.cmd == nil || n.cmd.Process == nil {
		return
	}
	_ = n.cmd.Process.Kill()
	_ = n.cmd.Wait()
	n.cmd = nil
}

// Pid is the node's process id (0 when it is not running).
func (n *ClusterNode) Pid() int {
	if n.cmd == nil || n.cmd.Process == nil {
		return 0
	}
	return n.cmd.Process.Pid
}

// Log is what the node printed, its last 8 KB.
func (n *ClusterNode) Log() string {
	b, _ := os.ReadFile(filepath.Join(n.dir, "rmqttd.log"))
	if len(b) > 8192 {
		b = b[len(b)-8192:]
	}
	return string(b)
}
