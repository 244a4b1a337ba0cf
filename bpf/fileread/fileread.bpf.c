//go:build ignore

// SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause
/*
 * Ward file-read probe: who opens a file known to hold regulated data.
 *
 * User space puts the (s_dev, i_ino) of every file a finding was made
 * about into the "tagged" hash map. At the exit of open/openat/openat2
 * the program takes the new descriptor's struct file and, when it was
 * opened for reading and its inode is tagged, reports who opened it.
 *
 * Cost when nothing is tagged: one array lookup. When something is:
 * the fd-table walk plus one hash lookup that misses for nearly every
 * open. A process reading a tagged file in a loop is reported once per
 * emit interval (per process and inode), not once per open.
 */
#include "vmlinux.h"
#include "ward_common.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define EV_READ 1

#define FMODE_READ 0x1
#define S_IFMT 00170000
#define S_IFREG 0100000

/* Layout mirrored by fileread.go (offset test in fileread_test.go). */
struct read_event {
	__u32 type;
	__u32 pid; /* thread that opened */
	__u32 tgid;
	__u32 uid;
	__u32 gid;
	__u32 dev; /* kernel s_dev encoding: major << 20 | minor */
	__u64 ino;
	__u64 ts_boot_ns;
	__u64 start_boot_ns; /* the process's start: with tgid, a reuse-proof key */
	__u32 ppid;
	__u32 class; /* the tag's value, as user space set it */
	__u32 f_flags; /* open flags as the file keeps them (O_ACCMODE, O_APPEND...) */
	__u32 _pad;
	__u64 cgroup_id;
	char comm[WARD_TASK_COMM_LEN];
};

struct inode_key {
	__u32 dev;
	__u32 _pad;
	__u64 ino;
};

struct emit_key {
	__u32 tgid;
	__u32 dev;
	__u64 ino;
	__u64 start_boot_ns;
};

const struct read_event *unused_read_event __attribute__((unused));
const struct inode_key *unused_inode_key __attribute__((unused));
const struct emit_key *unused_emit_key __attribute__((unused));

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20); /* overridden by the loader */
} events SEC(".maps");

/* Tagged inodes → data class. Sized by the loader. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct inode_key);
	__type(value, __u32);
} tagged SEC(".maps");

/* Slot 0 is non-zero while "tagged" holds anything: the empty case costs one lookup. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} tag_gate SEC(".maps");

/* Last report per (process, inode), so a reader in a loop is reported once per interval. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct emit_key);
	__type(value, __u64);
} emitted SEC(".maps");

/* Minimum time between two reports of the same process opening the same inode. */
const volatile __u64 emit_interval_ns = 60ULL * 1000000000ULL;

static __always_inline struct file *fd_file(__u32 fd)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
	if (!fdt || fd >= BPF_CORE_READ(fdt, max_fds))
		return NULL;
	struct file **fds = BPF_CORE_READ(fdt, fd);
	struct file *f = NULL;
	bpf_probe_read_kernel(&f, sizeof(f), &fds[fd]);
	return f;
}

static __always_inline int report_open(__u64 pid_tgid, struct file *f, struct inode_key k, __u32 klass);

static __always_inline int on_open_exit(long ret)
{
	if (ret < 0)
		return 0;
	__u32 zero = 0;
	__u32 *gate = bpf_map_lookup_elem(&tag_gate, &zero);
	if (!gate || *gate == 0)
		return 0;

	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 tgid = pid_tgid >> 32;
	if (ward_ignored(tgid))
		return 0;

	struct file *f = fd_file((__u32)ret);
	if (!f)
		return 0;
	if (!(BPF_CORE_READ(f, f_mode) & FMODE_READ))
		return 0;
	struct inode *inode = BPF_CORE_READ(f, f_inode);
	struct inode_key k = {
		.dev = BPF_CORE_READ(inode, i_sb, s_dev),
		.ino = BPF_CORE_READ(inode, i_ino),
	};
	__u32 *class = bpf_map_lookup_elem(&tagged, &k);
	if (!class)
		return 0;
	if ((BPF_CORE_READ(inode, i_mode) & S_IFMT) != S_IFREG)
		return 0;
	return report_open(pid_tgid, f, k, *class);
}

/*
 * on_open_exit_btf is on_open_exit with the filter done through BTF pointers:
 * loads from the current task and, after bpf_rdonly_cast, from the file and
 * inode are inlined by the verifier instead of being one bpf_probe_read_kernel
 * call each (~9 calls per open while anything is tagged, down to two). Needs
 * bpf_get_current_task_btf and the bpf_rdonly_cast kfunc (6.2+); the loader
 * falls back to the plain programs elsewhere.
 */
extern void *bpf_rdonly_cast(const void *obj, __u32 btf_id) __ksym __weak;

static __always_inline int on_open_exit_btf(long ret)
{
	if (ret < 0)
		return 0;
	__u32 zero = 0;
	__u32 *gate = bpf_map_lookup_elem(&tag_gate, &zero);
	if (!gate || *gate == 0)
		return 0;
	struct task_struct *task = bpf_get_current_task_btf();
	__u32 tgid = task->tgid;
	if (ward_ignored(tgid))
		return 0;
	__u32 fd = (__u32)ret;
	struct fdtable *fdt = task->files->fdt;
	if (fd >= fdt->max_fds)
		return 0;
	struct file **fds = fdt->fd;
	struct file *fp = NULL;
	bpf_probe_read_kernel(&fp, sizeof(fp), &fds[fd]);
	if (!fp)
		return 0;
	struct file *f = bpf_rdonly_cast(fp, bpf_core_type_id_kernel(struct file));
	if (!(f->f_mode & FMODE_READ))
		return 0;
	struct inode *inode = f->f_inode;
	struct inode_key k = {
		.dev = inode->i_sb->s_dev,
		.ino = inode->i_ino,
	};
	__u32 *class = bpf_map_lookup_elem(&tagged, &k);
	if (!class)
		return 0;
	if ((inode->i_mode & S_IFMT) != S_IFREG)
		return 0;
	return report_open(bpf_get_current_pid_tgid(), fp, k, *class);
}

/* A read open of a tagged inode: report it, at most once per interval per process. */
static __always_inline int report_open(__u64 pid_tgid, struct file *f, struct inode_key k, __u32 klass)
{
	__u32 tgid = pid_tgid >> 32;
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	__u64 now = bpf_ktime_get_boot_ns();
	struct emit_key ek = {
		.tgid = tgid,
		.dev = k.dev,
		.ino = k.ino,
		.start_boot_ns = BPF_CORE_READ(task, start_boottime),
	};
	__u64 *last = bpf_map_lookup_elem(&emitted, &ek);
	if (last && now - *last < emit_interval_ns)
		return 0;

	struct read_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		ward_count_drop(WARD_DROP_RINGBUF_FULL);
		return 0; /* not marked emitted: the next open tries again */
	}
	if (bpf_map_update_elem(&emitted, &ek, &now, BPF_ANY) < 0)
		ward_count_drop(WARD_DROP_MAP_FULL); /* reported anyway, just not rate limited */

	__u64 uid_gid = bpf_get_current_uid_gid();
	e->type = EV_READ;
	e->pid = (__u32)pid_tgid;
	e->tgid = tgid;
	e->uid = (__u32)uid_gid;
	e->gid = uid_gid >> 32;
	e->dev = k.dev;
	e->ino = k.ino;
	e->ts_boot_ns = now;
	e->start_boot_ns = ek.start_boot_ns;
	e->ppid = BPF_CORE_READ(task, real_parent, tgid);
	e->class = klass;
	e->f_flags = BPF_CORE_READ(f, f_flags);
	e->_pad = 0;
	e->cgroup_id = bpf_get_current_cgroup_id();
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	bpf_ringbuf_submit(e, 0);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_openat")
int exit_openat(struct trace_event_raw_sys_exit *ctx)
{
	return on_open_exit(ctx->ret);
}

/* Shared by every open-family exit where the kernel takes it. */
SEC("tracepoint/syscalls/sys_exit_openat")
int exit_open_btf(struct trace_event_raw_sys_exit *ctx)
{
	return on_open_exit_btf(ctx->ret);
}

SEC("tracepoint/syscalls/sys_exit_openat2")
int exit_openat2(struct trace_event_raw_sys_exit *ctx)
{
	return on_open_exit(ctx->ret);
}

SEC("tracepoint/syscalls/sys_exit_open")
int exit_open(struct trace_event_raw_sys_exit *ctx)
{
	return on_open_exit(ctx->ret);
}
