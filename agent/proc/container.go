package proc

import (
	"bytes"
	"strings"
)

// Container runtimes ContainerID recognises.
const (
	RuntimeDocker     = "docker"
	RuntimeContainerd = "containerd"
	RuntimeCRIO       = "cri-o"
	RuntimePodman     = "podman"
	// RuntimeKubernetes is a container under a kubepods cgroup whose runtime the path does
	// not name (the cgroupfs driver writes bare ids).
	RuntimeKubernetes = "kubernetes"
)

// scopePrefixes are the systemd scope units runtimes create per container
// ("docker-<id>.scope"). Their "-conmon-" siblings hold the monitor process, not the
// container, and do not match because the id must follow the prefix directly.
var scopePrefixes = []struct{ prefix, runtime string }{
	{"docker-", RuntimeDocker},
	{"cri-containerd-", RuntimeContainerd},
	{"crio-", RuntimeCRIO},
	{"libpod-", RuntimePodman},
}

// ContainerID finds the container a process runs in from the contents of /proc/<pid>/cgroup:
// cgroup v2 ("0::/path") and v1 ("N:controllers:/path") lines, systemd and cgroupfs drivers.
// It returns empty strings for a process on the host. The unified (v2) line wins over v1
// lines; within a path the deepest container component wins, so a container nested in a
// pod's cgroup is named rather than the pod.
func ContainerID(cgroupFile []byte) (id, runtime string) {
	var v1ID, v1Runtime string
	for line := range bytes.Lines(cgroupFile) {
		line = bytes.TrimRight(line, "\r\n")
		// hierarchy-ID:controller-list:cgroup-path; the path itself may contain ':'.
		first := bytes.IndexByte(line, ':')
		if first < 0 {
			continue
		}
		second := bytes.IndexByte(line[first+1:], ':')
		if second < 0 {
			continue
		}
		hier, path := line[:first], line[first+1+second+1:]
		cid, rt := containerInPath(string(path))
		if cid == "" {
			continue
		}
		if string(hier) == "0" && second == 0 {
			return cid, rt
		}
		if v1ID == "" {
			v1ID, v1Runtime = cid, rt
		}
	}
	return v1ID, v1Runtime
}

// containerInPath scans a cgroup path's components for a container id.
func containerInPath(path string) (id, runtime string) {
	parts := strings.Split(path, "/")
	kube := strings.Contains(path, "kubepods")
	for i := len(parts) - 1; i >= 0; i-- {
		c := parts[i]
		if name, ok := strings.CutSuffix(c, ".scope"); ok {
			for _, p := range scopePrefixes {
				if rest, ok := strings.CutPrefix(name, p.prefix); ok && isContainerHex(rest) {
					return rest, p.runtime
				}
			}
			continue
		}
		if !isContainerHex(c) || i == 0 {
			continue
		}
		// A bare id names a container only under a parent that says so: the cgroupfs
		// drivers of docker ("/docker/<id>"), podman ("/libpod_parent/libpod-…" is a scope,
		// "/machine.slice/libpod-…" too) and kubelet ("/kubepods/<qos>/pod<uid>/<id>").
		switch parent := parts[i-1]; {
		case parent == "docker":
			return c, RuntimeDocker
		case kube && strings.HasPrefix(parent, "pod"):
			return c, RuntimeKubernetes
		}
	}
	return "", ""
}

// isContainerHex reports whether s is a 64-character lowercase hex id, the form every
// supported runtime uses; requiring it keeps unit names such as "docker-compose@x.scope"
// from being taken for containers.
func isContainerHex(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := range len(s) {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}
