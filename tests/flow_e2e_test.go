package tests

import (
	"io"
	"net"
	"os/exec"
	"strconv"
	"testing"
	"time"

	wardv1 "github.com/ward-dlp/ward/api/ward/v1"
)

// TestNetworkFlowIsStoredWithProcessAndBytes: a process opens a TCP connection to a
// listener on loopback and sends a known number of bytes; the agent's flow sensor reports it
// at close and the collector stores it, attributed to that pid, with the bytes.
func TestNetworkFlowIsStoredWithProcessAndBytes(t *testing.T) {
	w := startWard(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	got := make(chan int64, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			got <- -1
			return
		}
		n, _ := io.Copy(io.Discard, c)
		c.Close()
		got <- n
	}()
	port := l.Addr().(*net.TCPAddr).Port
	const payload = 5000
	// bash's /dev/tcp connects in the shell, then exec puts head in the same pid: the
	// connect, the send and the close all belong to the pid the test started.
	cmd := exec.Command("bash", "-c", "exec head -c "+strconv.Itoa(payload)+" /dev/zero > /dev/tcp/127.0.0.1/"+strconv.Itoa(port))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("bash /dev/tcp: %v %s", err, out)
	}
	pid := uint32(cmd.ProcessState.Pid())
	if n := <-got; n != payload {
		t.Fatalf("listener received %d bytes, want %d", n, payload)
	}
	var flow *wardv1.NetworkFlow
	defer func() {
		if t.Failed() {
			for _, s := range w.events("--kind", "flow") {
				t.Logf("stored flow: %v", s.Event.GetFlow())
			}
		}
	}()
	w.waitFor(15*time.Second, "the shell's flow", func(evs []stored) bool {
		for _, s := range evs {
			f := s.Event.GetFlow()
			if f != nil && f.GetProcess().GetPid() == pid && f.GetRemotePort() == uint32(port) {
				flow = f
				return true
			}
		}
		return false
	}, "--kind", "flow")
	if flow.GetRemoteAddress() != "127.0.0.1" || flow.GetTransport() != "tcp" {
		t.Errorf("flow endpoint %s %s:%d", flow.GetTransport(), flow.GetRemoteAddress(), flow.GetRemotePort())
	}
	if flow.GetBytesSent() < payload || flow.GetBytesSent() > payload+2 {
		t.Errorf("bytes sent %d, want %d (+SYN/FIN)", flow.GetBytesSent(), payload)
	}
	if exe := flow.GetProcess().GetExe(); exe != "/usr/bin/head" && exe != "/bin/head" {
		t.Errorf("exe %q, want head (the image the pid ran when it sent)", exe)
	}
}
