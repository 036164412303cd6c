package testkit

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Private node timing.
const (
	// rabbitBootTimeout bounds a node's boot (a fresh node takes about 5 s;
	// a busy CI machine several times that).
	rabbitBootTimeout = 90 * time.Second
	// rabbitctlTimeout bounds one rabbitmqctl command.
	rabbitctlTimeout = 60 * time.Second
	// rabbitStopTimeout bounds a node's exit after `rabbitmqctl stop`
	// before it is killed.
	rabbitStopTimeout = 20 * time.Second
)

// ErrNoRabbitMQ is returned when no rabbitmq-server install is found.
var ErrNoRabbitMQ = errors.New("rabbitmq-server is not installed (run: go tool task rabbitmq)")

// RabbitNode is a RabbitMQ node of one test's own, started from the local
// rabbitmq-server install beside the shared broker: its own node name,
// ports, Erlang cookie, data and log directories, and no plugins. A test
// that stops the broker or drops its connections does it here, so the tests
// running at the same time on the shared broker never notice.
type RabbitNode struct {
	tb   testing.TB
	name string
	port int
	dir  string
	bin  string
	env  []string
	cmd  *exec.Cmd
	// exited is closed when the node's process has ended.
	exited chan struct{}
}

// StartRabbitNode starts a private node, waits until it answers AMQP and
// stops it when the test ends. The test fails when RabbitMQ is not
// installed (go tool task rabbitmq installs it): a skipped test would hide
// a broker-failure guarantee nobody checked. The node dies with the test process even when that is killed
// (Linux), so an aborted run leaves no node behind.
func StartRabbitNode(tb testing.TB) *RabbitNode {
	tb.Helper()
	bin, err := rabbitBinDir()
	if err != nil {
		tb.Fatal(err.Error())
	}
	var id [4]byte
	_, _ = rand.Read(id[:])
	n := &RabbitNode{
		tb:     tb,
		name:   fmt.Sprintf("wadtest-%d-%s@localhost", os.Getpid(), hex.EncodeToString(id[:])),
		dir:    tb.TempDir(),
		bin:    bin,
		exited: make(chan struct{}),
	}
	n.port = freePort(tb)
	home := filepath.Join(n.dir, "home")
	for _, d := range []string{home, filepath.Join(n.dir, "mnesia"), filepath.Join(n.dir, "log")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			tb.Fatalf("rabbit node: %v", err)
		}
	}
	// A cookie of its own: the shared node's is not readable by every
	// user, and this node needs no other node to trust it.
	cookie := strings.ToUpper(hex.EncodeToString(id[:])) + "WADISPATCHTESTCOOKIE"
	writeFile(tb, filepath.Join(home, ".erlang.cookie"), cookie, 0o400)
	writeFile(tb, filepath.Join(n.dir, "enabled_plugins"), "[].\n", 0o600)
	n.env = append(cleanEnv(),
		"HOME="+home,
		"RABBITMQ_NODENAME="+n.name,
		"RABBITMQ_NODE_IP_ADDRESS=127.0.0.1",
		fmt.Sprintf("RABBITMQ_NODE_PORT=%d", n.port),
		fmt.Sprintf("RABBITMQ_DIST_PORT=%d", freePort(tb)),
		"RABBITMQ_MNESIA_BASE="+filepath.Join(n.dir, "mnesia"),
		"RABBITMQ_LOG_BASE="+filepath.Join(n.dir, "log"),
		"RABBITMQ_PID_FILE="+filepath.Join(n.dir, "rabbit.pid"),
		"RABBITMQ_ENABLED_PLUGINS_FILE="+filepath.Join(n.dir, "enabled_plugins"),
		// Files that do not exist: none of the shared node's settings
		// (/etc/rabbitmq) apply to this one.
		"RABBITMQ_CONFIG_FILE="+filepath.Join(n.dir, "rabbitmq.conf"),
		"RABBITMQ_ADVANCED_CONFIG_FILE="+filepath.Join(n.dir, "advanced.config"),
		"RABBITMQ_CONF_ENV_FILE="+filepath.Join(n.dir, "rabbitmq-env.conf"),
		// With input allowed the script execs the VM instead of keeping a
		// shell in between, and the VM reads stdin: see below.
		"RABBITMQ_ALLOW_INPUT=1",
	)
	out, err := os.Create(filepath.Join(n.dir, "log", "console.log"))
	if err != nil {
		tb.Fatalf("rabbit node: %v", err)
	}
	// In the foreground, as a child: rabbitmq-server execs erl, which execs
	// the VM, so this process is the node itself. Its stdin is a pipe only
	// this process writes to: when the test process ends, however it ends,
	// the VM reads end of file and halts, so no node outlives its test.
	stdin, keepOpen, err := os.Pipe()
	if err != nil {
		tb.Fatalf("rabbit node: %v", err)
	}
	n.cmd = exec.Command(filepath.Join(bin, "rabbitmq-server"))
	n.cmd.Dir = n.dir
	n.cmd.Env = n.env
	n.cmd.Stdin, n.cmd.Stdout, n.cmd.Stderr = stdin, out, out
	n.cmd.SysProcAttr = dieWithParent()
	if err := n.cmd.Start(); err != nil {
		_ = out.Close()
		tb.Fatalf("rabbit node: start %s: %v", n.cmd.Path, err)
	}
	_ = stdin.Close()
	go func() {
		_ = n.cmd.Wait()
		_ = out.Close()
		_ = keepOpen.Close()
		close(n.exited)
	}()
	tb.Cleanup(n.stop)
	if err := n.waitAMQP(rabbitBootTimeout); err != nil {
		tb.Fatalf("rabbit node %s did not boot: %v\n%s", n.name, err, n.logTail())
	}
	return n
}

// URL is the node's AMQP URL (guest may connect over loopback).
func (n *RabbitNode) URL() string {
	return fmt.Sprintf("amqp://guest:guest@127.0.0.1:%d/", n.port)
}

// Name is the node's Erlang name, e.g. for `rabbitmqctl -n`.
func (n *RabbitNode) Name() string { return n.name }

// StopApp stops the RabbitMQ application (`rabbitmqctl stop_app`): every
// connection is closed and the port stops answering; the node and its
// durable queues and persistent messages stay.
func (n *RabbitNode) StopApp() {
	n.tb.Helper()
	n.ctl("stop_app")
}

// StartApp starts the application again and returns once AMQP answers.
func (n *RabbitNode) StartApp() {
	n.tb.Helper()
	n.ctl("start_app")
	if err := n.waitAMQP(rabbitBootTimeout); err != nil {
		n.tb.Fatalf("rabbit node %s: %v\n%s", n.name, err, n.logTail())
	}
}

// CloseAllConnections closes every client connection of the default vhost
// (`rabbitmqctl close_all_connections`); the broker keeps running.
func (n *RabbitNode) CloseAllConnections() {
	n.tb.Helper()
	n.ctl("close_all_connections", "closed by test "+n.tb.Name())
}

// Ctl runs a rabbitmqctl command against this node and returns its output,
// failing the test when it fails.
func (n *RabbitNode) Ctl(args ...string) string {
	n.tb.Helper()
	return n.ctl(args...)
}

func (n *RabbitNode) ctl(args ...string) string {
	n.tb.Helper()
	out, err := n.runCtl(rabbitctlTimeout, args...)
	if err != nil {
		n.tb.Fatalf("rabbitmqctl -n %s %s: %v\n%s", n.name, strings.Join(args, " "), err, out)
	}
	return out
}

func (n *RabbitNode) runCtl(timeout time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(n.bin, "rabbitmqctl"), append([]string{"-n", n.name}, args...)...)
	cmd.Dir = n.dir
	cmd.Env = n.env
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// waitAMQP polls until the node answers the AMQP protocol header, the node
// exits or timeout passes. RabbitMQ opens its AMQP listener last in boot,
// so an answer means ready.
func (n *RabbitNode) waitAMQP(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	addr := fmt.Sprintf("127.0.0.1:%d", n.port)
	for {
		if amqpAnswers(addr) {
			return nil
		}
		select {
		case <-n.exited:
			return errors.New("the node exited")
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no AMQP answer on %s within %s", addr, timeout)
		}
	}
}

// amqpAnswers reports whether addr answers the AMQP 0-9-1 protocol header
// with a method frame (connection.start).
func amqpAnswers(addr string) bool {
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := conn.Write([]byte("AMQP\x00\x00\x09\x01")); err != nil {
		return false
	}
	var frame [1]byte
	_, err = io.ReadFull(conn, frame[:])
	return err == nil && frame[0] == 1
}

func (n *RabbitNode) stop() {
	select {
	case <-n.exited:
		return
	default:
	}
	if out, err := n.runCtl(rabbitStopTimeout, "stop"); err != nil {
		n.tb.Logf("rabbitmqctl -n %s stop: %v: %s", n.name, err, strings.TrimSpace(out))
	}
	select {
	case <-n.exited:
	case <-time.After(rabbitStopTimeout):
		n.tb.Logf("rabbit node %s did not stop within %s; killing it", n.name, rabbitStopTimeout)
		_ = n.cmd.Process.Kill()
		<-n.exited
	}
}

// logTail is the end of the node's console and main log, for a failure
// message.
func (n *RabbitNode) logTail() string {
	var b strings.Builder
	for _, f := range []string{"console.log", strings.SplitN(n.name, "@", 2)[0] + "@localhost.log"} {
		data, err := os.ReadFile(filepath.Join(n.dir, "log", f))
		if err != nil {
			continue
		}
		if len(data) > 3000 {
			data = data[len(data)-3000:]
		}
		fmt.Fprintf(&b, "--- %s:\n%s\n", f, data)
	}
	return b.String()
}

// rabbitBinDir finds RabbitMQ's own scripts. Debian's /usr/sbin wrappers
// switch to the rabbitmq user (whose home and data are the shared node's),
// so the scripts behind them are used directly.
func rabbitBinDir() (string, error) {
	if dir := os.Getenv("TEST_RABBITMQ_BIN"); dir != "" {
		return dir, nil
	}
	const debian = "/usr/lib/rabbitmq/bin"
	if _, err := os.Stat(filepath.Join(debian, "rabbitmq-server")); err == nil {
		return debian, nil
	}
	if p, err := exec.LookPath("rabbitmq-server"); err == nil {
		return filepath.Dir(p), nil
	}
	return "", ErrNoRabbitMQ
}

// cleanEnv is this process's environment without what would point a node
// or rabbitmqctl at the shared node.
func cleanEnv() []string {
	var out []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "RABBITMQ_") || strings.HasPrefix(kv, "HOME=") {
			continue
		}
		out = append(out, kv)
	}
	return out
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort(tb testing.TB) int {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func writeFile(tb testing.TB, path, content string, mode os.FileMode) {
	tb.Helper()
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		tb.Fatalf("rabbit node: %v", err)
	}
}
