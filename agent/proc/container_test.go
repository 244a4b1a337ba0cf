package proc

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Lines as the runtimes write them (ids shortened to realistic 64-hex values).
func TestContainerID(t *testing.T) {
	const (
		a = "8e8f6ba8f1f3c0e0b3ad2d8b7e0c4bd6a0d8d1b70e4ce7a1fd5c5e4b0f5f9d21"
		b = "b1946ac92492d2347c6235b4d2611184b1946ac92492d2347c6235b4d2611184"
	)
	tests := []struct {
		name, in, id, runtime string
	}{
		{"host v2", "0::/user.slice/user-1000.slice/session-3.scope\n", "", ""},
		{"host init", "0::/init.scope\n", "", ""},
		{"empty", "", "", ""},
		{"docker systemd v2", "0::/system.slice/docker-" + a + ".scope\n", a, RuntimeDocker},
		{"docker cgroupfs v2", "0::/docker/" + a + "\n", a, RuntimeDocker},
		{"docker cgroupfs v1", "12:pids:/docker/" + a + "\n11:memory:/docker/" + a + "\n1:name=systemd:/docker/" + a + "\n", a, RuntimeDocker},
		{"docker v1 systemd", "4:cpu,cpuacct:/system.slice/docker-" + a + ".scope\n", a, RuntimeDocker},
		{"k8s containerd systemd v2", "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod4a7c2d3e_1b2f_4c5d_9e8f_0a1b2c3d4e5f.slice/cri-containerd-" + a + ".scope\n", a, RuntimeContainerd},
		{"k8s crio systemd v2", "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod0f1e2d3c_4b5a_6978_8796_a5b4c3d2e1f0.slice/crio-" + a + ".scope\n", a, RuntimeCRIO},
		{"k8s cgroupfs v1", "11:memory:/kubepods/burstable/pod4a7c2d3e-1b2f-4c5d-9e8f-0a1b2c3d4e5f/" + a + "\n", a, RuntimeKubernetes},
		{"k8s cgroupfs guaranteed v2", "0::/kubepods/pod4a7c2d3e-1b2f-4c5d-9e8f-0a1b2c3d4e5f/" + a + "\n", a, RuntimeKubernetes},
		{"k8s pod cgroup only", "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod4a7c2d3e_1b2f.slice\n", "", ""},
		{"podman rootful", "0::/machine.slice/libpod-" + a + ".scope\n", a, RuntimePodman},
		{"podman rootless with cgroupns init", "0::/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-" + a + ".scope/container\n", a, RuntimePodman},
		{"podman conmon is not the container", "0::/machine.slice/libpod-conmon-" + a + ".scope\n", "", ""},
		{"crio conmon is not the container", "0::/system.slice/crio-conmon-" + a + ".scope\n", "", ""},
		{"docker-in-docker deepest wins", "0::/docker/" + a + "/docker/" + b + "\n", b, RuntimeDocker},
		{"v2 line wins over v1", "5:memory:/docker/" + a + "\n0::/system.slice/docker-" + b + ".scope\n", b, RuntimeDocker},
		{"short id is not a container", "0::/system.slice/docker-abc123.scope\n", "", ""},
		{"uppercase hex is not an id", "0::/docker/" + strings.ToUpper(a) + "\n", "", ""},
		{"unit named like a runtime", "0::/system.slice/docker-compose@web.scope\n", "", ""},
		{"bare id under an unrelated parent", "0::/system.slice/" + a + "\n", "", ""},
		{"path with colon", "0::/weird:name/docker-" + a + ".scope\n", a, RuntimeDocker},
		{"crlf and garbage lines", "garbage\r\nno-colon\r\n0::/docker/" + a + "\r\n", a, RuntimeDocker},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, rt := ContainerID([]byte(tt.in))
			if id != tt.id || rt != tt.runtime {
				t.Fatalf("ContainerID = %q, %q; want %q, %q", id, rt, tt.id, tt.runtime)
			}
		})
	}
}

// TestContainerIDOfThisProcess reads the real file: on a host the answer must be empty,
// and in any case the parser must not fail on what the kernel writes.
func TestContainerIDOfThisProcess(t *testing.T) {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		t.Skip("no /proc/self/cgroup")
	}
	id, rt := ContainerID(b)
	if _, err := os.Stat("/.dockerenv"); err != nil && id != "" {
		t.Errorf("host process reported in container %q (%s) from %q", id, rt, b)
	}
}

func FuzzContainerID(f *testing.F) {
	seeds, _ := filepath.Glob("testdata/cgroup/*")
	for _, p := range seeds {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		id, rt := ContainerID(b)
		if (id == "") != (rt == "") {
			t.Fatalf("id %q with runtime %q", id, rt)
		}
		if id != "" {
			if !isContainerHex(id) {
				t.Fatalf("id %q is not a 64-hex container id", id)
			}
			if !strings.Contains(string(b), id) {
				t.Fatalf("id %q not in the input", id)
			}
		}
	})
}
