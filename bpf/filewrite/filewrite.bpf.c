//go:build ignore

// SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause
/*
 * Ward file-write probe: captures what processes write into watched
 * directory trees.
 *
 * Flow:
 *   sys_exit_open*  : for a successful open of a regular file for writing,
 *                     walk the dentry chain (crossing mounts) looking for a
 *                     watched ancestor. On a hit remember (tgid, fd) in
 *                     `tracked` and emit OPEN with the relative path.
 *   sys_enter_write*: one hash lookup on (tgid, fd); untracked descriptors
 *                     return immediately. Tracked ones get their user buffer
 *                     copied (bounded) and emitted as WRITE.
 *   sys_enter_close : untrack and emit CLOSE.
 *
 * Known gaps (user space must not assume more):
 *   - dup/dup2/dup3/fcntl(F_DUPFD) of a tracked fd: the new descriptor is not
 *     tracked, writes through it are missed (the original still works).
 *   - fork: the child inherits the descriptor under a new tgid and is not
 *     tracked.
 *   - mmap'd writes, io_uring and truncate are not observed.
 *   - copy_file_range/sendfile/splice into a tracked fd are reported at
 *     syscall exit as WRITE with the bytes moved and no data (there is no
 *     user buffer to copy): user space must re-read the file.
 *   - WRITE is emitted at syscall entry: it reports the bytes the process
 *     asked to write, which may fail or be partial.
 *   - close_range() and exec with O_CLOEXEC do not emit CLOSE; the stale
 *     entry is dropped on the next open/write that reuses the fd number
 *     (inode check below) or evicted by the LRU.
 *   - 32-bit compat syscalls are not hooked.
 */
#include "vmlinux.h"
#include "ward_common.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define EV_OPEN 1
#define EV_WRITE 2
#define EV_CLOSE 3

#define KIND_WRITE 1
#define KIND_PWRITE64 2
#define KIND_WRITEV 3
#define KIND_PWRITEV 4
#define KIND_PWRITEV2 5
#define KIND_COPY_FILE_RANGE 6 /* in-kernel copies: no user buffer, no data */
#define KIND_SENDFILE 7
#define KIND_SPLICE 8

#define WRITE_FLAG_TRUNCATED (1 << 0)   /* captured < requested */
#define WRITE_FLAG_IOV_LIMIT (1 << 1)   /* more iovecs than MAX_IOV */
#define WRITE_FLAG_READ_FAILED (1 << 2) /* user memory unreadable */

#define PATH_FLAG_TRUNCATED (1 << 0) /* a name could not be read */
#define PATH_FLAG_UNTRACKED (1 << 1) /* tracked map update failed */

/*
 * Hard upper bound of the per-write capture. The scratch buffer is 2x this
 * so the verifier can prove iovec copies at a variable offset stay in
 * bounds. The effective bound is max_capture, set by the loader.
 */
#define MAX_CAPTURE (32 * 1024)
#define MAX_IOV 8
#define MAX_DEPTH 32
#define NAME_BUF 256  /* NAME_MAX + NUL */

#define FMODE_WRITE 0x2
#define S_IFMT 00170000
#define S_IFREG 0100000
#define O_APPEND 02000

const volatile __u32 max_capture = 16 * 1024;

struct watch_key {
	__u32 dev; /* kernel dev_t encoding (MAJOR << 20 | MINOR) */
	__u32 _pad;
	__u64 ino;
};

struct tracked_fd {
	__u32 watch_id;
	__u32 dev;
	__u64 ino;
	__u32 f_flags;
	__u32 _pad;
};

struct open_event {
	__u32 type;
	__u32 tgid;
	__u64 ts_boot_ns;
	__u32 tid;
	__u32 uid;
	__u32 gid;
	__s32 fd;
	__u32 dev;
	__u32 watch_id;
	__u64 ino;
	__u32 f_flags;
	__u16 path_len;   /* bytes of name slots following the header */
	__u16 path_flags;
	char comm[WARD_TASK_COMM_LEN];
	/* names: path_len / 256 slots of 256 bytes, each a NUL-terminated
	 * component (empty at a mount crossing), file name first */
};

struct write_event {
	__u32 type;
	__u32 tgid;
	__u64 ts_boot_ns;
	__u32 tid;
	__s32 fd;
	__u32 dev;
	__u16 kind;
	__u16 flags;
	__u64 ino;
	__s64 offset; /* file position of the write, -1 unknown (O_APPEND) */
	__u64 requested;
	__u32 captured; /* bytes of data following the header */
	__u32 watch_id;
};

struct close_event {
	__u32 type;
	__u32 tgid;
	__u64 ts_boot_ns;
	__u32 tid;
	__s32 fd;
	__u32 dev;
	__u32 watch_id;
	__u64 ino;
};

struct open_scratch {
	struct open_event hdr;
	/* slot 0: file name, slot i: i-th ancestor below the watched dir */
	char names[MAX_DEPTH + 1][NAME_BUF];
};

struct write_scratch {
	struct write_event hdr;
	__u8 data[2 * MAX_CAPTURE];
};

/* Referenced so clang emits BTF and bpf2go generates Go mirrors. */
const struct open_event *unused_open_event __attribute__((unused));
const struct write_event *unused_write_event __attribute__((unused));
const struct close_event *unused_close_event __attribute__((unused));

/* Watched directories: (dev, ino) -> watch id. Written by user space. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct watch_key);
	__type(value, __u32);
} watched SEC(".maps");

/*
 * Descriptors opened for writing under a watched directory, keyed by
 * tgid << 32 | fd. LRU so processes that die without closing cannot leak.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct tracked_fd);
} tracked SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 8 << 20); /* overridden by the loader */
} events SEC(".maps");

/*
 * Write scratch is 64 KiB, above the 32 KiB per-CPU allocation limit, so it
 * is a plain array indexed by CPU (max_entries set to the CPU count by the
 * loader). Programs run with migration disabled; a preempted program on a
 * faultable syscall tracepoint can in rare cases share its slot with another
 * task, the same trade-off as a per-CPU array.
 */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct write_scratch);
} write_scratch SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct open_scratch);
} open_scratch SEC(".maps");

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

static __always_inline struct mount *real_mount(struct vfsmount *mnt)
{
	return (struct mount *)((void *)mnt - bpf_core_field_offset(struct mount, mnt));
}

static __always_inline __u64 fd_key(__u32 tgid, __u32 fd)
{
	return ((__u64)tgid << 32) | fd;
}

/* Append one dentry name at *off. Returns false when the area is full. */
/* Copy one dentry name into its fixed slot; false if unreadable. */
static __always_inline bool slot_name(struct open_scratch *s, __u32 slot, struct dentry *d)
{
	const unsigned char *name = BPF_CORE_READ(d, d_name.name);
	if (slot > MAX_DEPTH)
		return false;
	return bpf_probe_read_kernel_str(s->names[slot], NAME_BUF, name) > 0;
}

static __always_inline int on_open_exit(struct trace_event_raw_sys_exit *ctx)
{
	long ret = ctx->ret;
	if (ret < 0)
		return 0;

	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 tgid = pid_tgid >> 32;
	if (ward_ignored(tgid))
		return 0;

	__u32 fd = (__u32)ret;
	__u64 key = fd_key(tgid, fd);
	/* The fd number is fresh: any entry under it is stale (close_range,
	 * O_CLOEXEC exec, dup2 over it). */
	bpf_map_delete_elem(&tracked, &key);

	struct file *f = fd_file(fd);
	if (!f)
		return 0;
	if (!(BPF_CORE_READ(f, f_mode) & FMODE_WRITE))
		return 0;
	struct inode *inode = BPF_CORE_READ(f, f_inode);
	if ((BPF_CORE_READ(inode, i_mode) & S_IFMT) != S_IFREG)
		return 0;

	__u32 zero = 0;
	struct open_scratch *s = bpf_map_lookup_elem(&open_scratch, &zero);
	if (!s)
		return 0;

	struct dentry *d = BPF_CORE_READ(f, f_path.dentry);
	struct mount *mnt = real_mount(BPF_CORE_READ(f, f_path.mnt));
	__u16 path_flags = 0;
	if (!slot_name(s, 0, d))
		path_flags |= PATH_FLAG_TRUNCATED;

	/*
	 * Walk up from the parent. Ancestor i's name goes into slot i + 1
	 * whatever happens (a mount crossing leaves an empty slot): an index
	 * that depends on the path taken would keep the verifier from pruning
	 * and explode to 2^depth states.
	 */
	struct dentry *cur = BPF_CORE_READ(d, d_parent);
	__u32 *watch_id = NULL;
	__u32 depth;
	for (depth = 0; depth < MAX_DEPTH; depth++) {
		struct watch_key wk = {
			.dev = BPF_CORE_READ(cur, d_sb, s_dev),
			.ino = BPF_CORE_READ(cur, d_inode, i_ino),
		};
		watch_id = bpf_map_lookup_elem(&watched, &wk);
		if (watch_id)
			break;
		if (cur == BPF_CORE_READ(mnt, mnt.mnt_root)) {
			/* Root of this mount: continue from the mountpoint in the
			 * parent mount. The mount root has no name of its own. */
			struct mount *parent = BPF_CORE_READ(mnt, mnt_parent);
			if (parent == mnt)
				return 0; /* top of the mount tree, nothing watched */
			s->names[depth + 1][0] = 0;
			cur = BPF_CORE_READ(mnt, mnt_mountpoint);
			mnt = parent;
			continue;
		}
		struct dentry *up = BPF_CORE_READ(cur, d_parent);
		if (up == cur)
			return 0; /* root of a detached tree */
		if (!slot_name(s, depth + 1, cur))
			path_flags |= PATH_FLAG_TRUNCATED;
		cur = up;
	}
	if (!watch_id) {
		ward_count_drop(WARD_DROP_PATH_TOO_DEEP);
		return 0;
	}
	if (path_flags & PATH_FLAG_TRUNCATED)
		ward_count_drop(WARD_DROP_PATH_TOO_LONG);
	__u32 wid = *watch_id;
	__u32 off = (depth + 1) * NAME_BUF; /* slots 0..depth are in use */

	struct tracked_fd t = {
		.watch_id = wid,
		.dev = BPF_CORE_READ(inode, i_sb, s_dev),
		.ino = BPF_CORE_READ(inode, i_ino),
		.f_flags = BPF_CORE_READ(f, f_flags),
	};
	if (bpf_map_update_elem(&tracked, &key, &t, BPF_ANY) < 0) {
		ward_count_drop(WARD_DROP_MAP_FULL);
		path_flags |= PATH_FLAG_UNTRACKED;
	}

	__u64 uid_gid = bpf_get_current_uid_gid();
	struct open_event *e = &s->hdr;
	e->type = EV_OPEN;
	e->tgid = tgid;
	e->ts_boot_ns = bpf_ktime_get_boot_ns();
	e->tid = (__u32)pid_tgid;
	e->uid = (__u32)uid_gid;
	e->gid = uid_gid >> 32;
	e->fd = fd;
	e->dev = t.dev;
	e->watch_id = t.watch_id;
	e->ino = t.ino;
	e->f_flags = t.f_flags;
	e->path_len = off;
	e->path_flags = path_flags;
	bpf_get_current_comm(e->comm, sizeof(e->comm));

	__u64 size = sizeof(*e) + off;
	WARD_BARRIER_VAR(size);
	if (size > sizeof(*s))
		return 0;
	if (bpf_ringbuf_output(&events, s, size, 0) < 0)
		ward_count_drop(WARD_DROP_RINGBUF_FULL);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_openat")
int exit_open(struct trace_event_raw_sys_exit *ctx)
{
	/* Shared by sys_exit_open, _openat, _openat2 and _creat: all return
	 * the new descriptor. */
	return on_open_exit(ctx);
}

/*
 * Common write path. vec != 0 means buf is a struct iovec array of count
 * entries. pos < 0 means "current file position".
 */
static __always_inline int on_write(__u32 fd, const void *buf, __u64 count, bool vec,
				    __s64 pos, __u16 kind)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 tgid = pid_tgid >> 32;
	if (ward_ignored(tgid))
		return 0;

	__u64 key = fd_key(tgid, fd);
	struct tracked_fd *t = bpf_map_lookup_elem(&tracked, &key);
	if (!t)
		return 0; /* hot path: every untracked write on the host ends here */

	struct file *f = fd_file(fd);
	struct inode *inode = f ? BPF_CORE_READ(f, f_inode) : NULL;
	if (!inode || BPF_CORE_READ(inode, i_ino) != t->ino ||
	    BPF_CORE_READ(inode, i_sb, s_dev) != t->dev) {
		/* fd number reused for another file without a close we saw */
		bpf_map_delete_elem(&tracked, &key);
		return 0;
	}

	__u32 cpu = bpf_get_smp_processor_id();
	struct write_scratch *s = bpf_map_lookup_elem(&write_scratch, &cpu);
	if (!s)
		return 0;

	struct write_event *e = &s->hdr;
	e->type = EV_WRITE;
	e->tgid = tgid;
	e->ts_boot_ns = bpf_ktime_get_boot_ns();
	e->tid = (__u32)pid_tgid;
	e->fd = fd;
	e->dev = t->dev;
	e->kind = kind;
	e->ino = t->ino;
	e->watch_id = t->watch_id;
	if (pos >= 0)
		e->offset = pos;
	else if (t->f_flags & O_APPEND)
		e->offset = -1; /* lands at EOF, unknown until the write happens */
	else
		e->offset = BPF_CORE_READ(f, f_pos);

	__u32 cap = max_capture;
	if (cap > MAX_CAPTURE)
		cap = MAX_CAPTURE;
	__u16 flags = 0;
	__u64 requested = 0;
	__u32 off = 0;

	if (!vec) {
		requested = count;
		__u64 n = count < cap ? count : cap;
		WARD_BARRIER_VAR(n);
		if (n > MAX_CAPTURE)
			n = MAX_CAPTURE;
		if (n > 0) {
			if (bpf_probe_read_user(s->data, n, buf) < 0)
				flags |= WRITE_FLAG_READ_FAILED;
			else
				off = n;
		}
	} else {
		const struct iovec *iov = buf;
		if (count > MAX_IOV)
			flags |= WRITE_FLAG_IOV_LIMIT;
		for (int i = 0; i < MAX_IOV; i++) {
			if (i >= count)
				break;
			struct iovec v;
			if (bpf_probe_read_user(&v, sizeof(v), &iov[i]) < 0) {
				flags |= WRITE_FLAG_READ_FAILED;
				break;
			}
			requested += v.iov_len;
			if (off >= cap)
				continue; /* keep summing lengths */
			__u64 n = cap - off;
			if (v.iov_len < n)
				n = v.iov_len;
			WARD_BARRIER_VAR(n);
			if (n > MAX_CAPTURE)
				n = MAX_CAPTURE;
			if (n == 0)
				continue;
			/* off < cap <= MAX_CAPTURE here, so the mask is a no-op that
			 * proves o + n <= 2 * MAX_CAPTURE to the verifier. */
			__u32 o = off & (MAX_CAPTURE - 1);
			WARD_BARRIER_VAR(o);
			if (bpf_probe_read_user(&s->data[o], n, v.iov_base) < 0) {
				flags |= WRITE_FLAG_READ_FAILED;
				break;
			}
			off = o + n;
		}
	}

	if (flags & WRITE_FLAG_READ_FAILED)
		ward_count_drop(WARD_DROP_READ_FAILED);
	if (requested > off || (flags & WRITE_FLAG_IOV_LIMIT)) {
		flags |= WRITE_FLAG_TRUNCATED;
		ward_count_drop(WARD_DROP_TRUNCATED);
	}
	e->requested = requested;
	e->captured = off;
	e->flags = flags;

	__u64 size = off;
	WARD_BARRIER_VAR(size);
	if (size > MAX_CAPTURE)
		return 0;
	if (bpf_ringbuf_output(&events, s, sizeof(*e) + size, 0) < 0)
		ward_count_drop(WARD_DROP_RINGBUF_FULL);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_write")
int enter_write(struct trace_event_raw_sys_enter *ctx)
{
	return on_write(ctx->args[0], (const void *)ctx->args[1], ctx->args[2], false, -1, KIND_WRITE);
}

SEC("tracepoint/syscalls/sys_enter_pwrite64")
int enter_pwrite64(struct trace_event_raw_sys_enter *ctx)
{
	return on_write(ctx->args[0], (const void *)ctx->args[1], ctx->args[2], false,
			(__s64)ctx->args[3], KIND_PWRITE64);
}

SEC("tracepoint/syscalls/sys_enter_writev")
int enter_writev(struct trace_event_raw_sys_enter *ctx)
{
	return on_write(ctx->args[0], (const void *)ctx->args[1], ctx->args[2], true, -1, KIND_WRITEV);
}

/* pwritev/pwritev2 take (fd, vec, vlen, pos_l, pos_h[, flags]); on 64-bit
 * pos_l carries the whole offset. pwritev2 with pos -1 uses f_pos. */
SEC("tracepoint/syscalls/sys_enter_pwritev")
int enter_pwritev(struct trace_event_raw_sys_enter *ctx)
{
	return on_write(ctx->args[0], (const void *)ctx->args[1], ctx->args[2], true,
			(__s64)ctx->args[3], KIND_PWRITEV);
}

SEC("tracepoint/syscalls/sys_enter_pwritev2")
int enter_pwritev2(struct trace_event_raw_sys_enter *ctx)
{
	return on_write(ctx->args[0], (const void *)ctx->args[1], ctx->args[2], true,
			(__s64)ctx->args[3], KIND_PWRITEV2);
}

/*
 * In-kernel copies into a tracked descriptor (copy_file_range, sendfile,
 * splice). The data never passes through a user buffer, so the record
 * carries only a length, flagged truncated: user space re-reads the file.
 * Not counted as a capture drop since nothing could be copied.
 *
 * The length a caller asks for says little (coreutils cp asks for ~2^63 and
 * gets the file size), so the entry stashes the record per thread and the
 * exit emits it with the bytes the syscall actually moved; failed or empty
 * copies emit nothing.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64); /* pid_tgid */
	__type(value, struct write_event);
} copy_pending SEC(".maps");

/* off_out is a user loff_t pointer; NULL means the file position. */
static __always_inline int on_copy_enter(__u32 fd, const __s64 *off_out, __u16 kind)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 tgid = pid_tgid >> 32;
	if (ward_ignored(tgid))
		return 0;

	__u64 key = fd_key(tgid, fd);
	struct tracked_fd *t = bpf_map_lookup_elem(&tracked, &key);
	if (!t)
		return 0; /* hot path */

	struct file *f = fd_file(fd);
	struct inode *inode = f ? BPF_CORE_READ(f, f_inode) : NULL;
	if (!inode || BPF_CORE_READ(inode, i_ino) != t->ino ||
	    BPF_CORE_READ(inode, i_sb, s_dev) != t->dev) {
		bpf_map_delete_elem(&tracked, &key);
		return 0;
	}

	struct write_event e = {
		.type = EV_WRITE,
		.tgid = tgid,
		.tid = (__u32)pid_tgid,
		.fd = fd,
		.dev = t->dev,
		.kind = kind,
		.flags = WRITE_FLAG_TRUNCATED,
		.ino = t->ino,
		.watch_id = t->watch_id,
	};
	if (off_out) {
		__s64 pos = -1;
		if (bpf_probe_read_user(&pos, sizeof(pos), off_out) < 0) {
			ward_count_drop(WARD_DROP_READ_FAILED);
			e.flags |= WRITE_FLAG_READ_FAILED;
			pos = -1;
		}
		e.offset = pos;
	} else if (t->f_flags & O_APPEND) {
		e.offset = -1;
	} else {
		e.offset = BPF_CORE_READ(f, f_pos);
	}
	if (bpf_map_update_elem(&copy_pending, &pid_tgid, &e, BPF_ANY) < 0)
		ward_count_drop(WARD_DROP_MAP_FULL);
	return 0;
}

/* copy_file_range(fd_in, off_in, fd_out, off_out, len, flags) */
SEC("tracepoint/syscalls/sys_enter_copy_file_range")
int enter_copy_file_range(struct trace_event_raw_sys_enter *ctx)
{
	return on_copy_enter(ctx->args[2], (const __s64 *)ctx->args[3], KIND_COPY_FILE_RANGE);
}

/* sendfile64(out_fd, in_fd, offset, count): offset is the input's. */
SEC("tracepoint/syscalls/sys_enter_sendfile64")
int enter_sendfile64(struct trace_event_raw_sys_enter *ctx)
{
	return on_copy_enter(ctx->args[0], NULL, KIND_SENDFILE);
}

/* splice(fd_in, off_in, fd_out, off_out, len, flags) */
SEC("tracepoint/syscalls/sys_enter_splice")
int enter_splice(struct trace_event_raw_sys_enter *ctx)
{
	return on_copy_enter(ctx->args[2], (const __s64 *)ctx->args[3], KIND_SPLICE);
}

/* Shared by the three copy syscalls' exits: all return bytes moved. */
SEC("tracepoint/syscalls/sys_exit_copy_file_range")
int exit_copy(struct trace_event_raw_sys_exit *ctx)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct write_event *p = bpf_map_lookup_elem(&copy_pending, &pid_tgid);
	if (!p)
		return 0; /* hot path: not a copy into a tracked fd */
	struct write_event e = *p;
	bpf_map_delete_elem(&copy_pending, &pid_tgid);
	long ret = ctx->ret;
	if (ret <= 0)
		return 0;
	e.ts_boot_ns = bpf_ktime_get_boot_ns();
	e.requested = ret;
	if (bpf_ringbuf_output(&events, &e, sizeof(e), 0) < 0)
		ward_count_drop(WARD_DROP_RINGBUF_FULL);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_close")
int enter_close(struct trace_event_raw_sys_enter *ctx)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 tgid = pid_tgid >> 32;
	__u32 fd = ctx->args[0];
	__u64 key = fd_key(tgid, fd);
	struct tracked_fd *t = bpf_map_lookup_elem(&tracked, &key);
	if (!t)
		return 0;

	struct close_event e = {
		.type = EV_CLOSE,
		.tgid = tgid,
		.ts_boot_ns = bpf_ktime_get_boot_ns(),
		.tid = (__u32)pid_tgid,
		.fd = fd,
		.dev = t->dev,
		.watch_id = t->watch_id,
		.ino = t->ino,
	};
	bpf_map_delete_elem(&tracked, &key);
	if (bpf_ringbuf_output(&events, &e, sizeof(e), 0) < 0)
		ward_count_drop(WARD_DROP_RINGBUF_FULL);
	return 0;
}
