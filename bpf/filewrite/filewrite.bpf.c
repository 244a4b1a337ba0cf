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
 *   sys_exit_rename*: a rename whose destination lands under a watched
 *                     directory emits PATHOP (see "Renames" below); so does
 *                     truncate(2) of a path there.
 *   sys_enter_ftruncate / sys_enter_mmap / io_uring_{setup,enter}:
 *                     FDOP records for a truncated tracked file, a writable
 *                     shared mapping of one, and io_uring used by a process
 *                     holding one (data the probe cannot see: flagged, not
 *                     classified).
 *   dup/dup2/dup3/fcntl(F_DUPFD*): the new descriptor inherits tracking.
 *
 * Known gaps (user space must not assume more):
 *   - fork: the child inherits tracking of descriptors numbered below 1024
 *     (see "fork" at the end); ones above are not inherited.
 *   - writes through a shared mapping or io_uring are flagged, not captured;
 *     a read-only shared mapping made writable later with mprotect is flagged
 *     when the mprotect hook loaded (bpf_find_vma, 5.17+).
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

/*
 * How many `tracked` entries have an fd number in each slot (fd mod
 * FD_HOT_SLOTS), host-wide. The write, close and copy hooks run on every such
 * syscall of the host; a zero here lets them return before any helper call
 * or hash lookup, which is most of what they cost over an empty program on
 * this kernel (a helper call and an LRU-hash lookup cost ~30 and ~50 ns; the
 * array lookup is inlined by the verifier). The count may only err high: it
 * is raised before an entry is inserted and lowered after one is deleted, so
 * a write can never see zero while its entry exists. LRU evictions leave it
 * high, which costs lookups but loses nothing.
 */
#define FD_HOT_SLOTS 1024

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, FD_HOT_SLOTS);
	__type(key, __u32);
	__type(value, __s64);
} fd_hot SEC(".maps");

static __always_inline void fd_hot_add(__u32 fd, __s64 delta)
{
	__u32 slot = fd & (FD_HOT_SLOTS - 1);
	__s64 *n = bpf_map_lookup_elem(&fd_hot, &slot);
	if (n)
		__sync_fetch_and_add(n, delta);
}

/* True when no tracked entry can have this fd number. */
static __always_inline bool fd_cold(__u32 fd)
{
	__u32 slot = fd & (FD_HOT_SLOTS - 1);
	__s64 *n = bpf_map_lookup_elem(&fd_hot, &slot);
	return n && *n <= 0;
}

/* Insert or replace the entry for (tgid, fd), keeping fd_hot in step. */
static __always_inline long track_put(__u64 key, struct tracked_fd *t)
{
	__u32 fd = (__u32)key;
	fd_hot_add(fd, 1);
	long err = bpf_map_update_elem(&tracked, &key, t, BPF_NOEXIST);
	if (err == 0)
		return 0;
	fd_hot_add(fd, -1);
	if (err != -17 /* EEXIST */)
		return err;
	return bpf_map_update_elem(&tracked, &key, t, BPF_EXIST);
}

/* Delete the entry for (tgid, fd) if there is one; true if there was. */
static __always_inline bool track_del(__u64 key)
{
	if (bpf_map_delete_elem(&tracked, &key) != 0)
		return false;
	fd_hot_add((__u32)key, -1);
	return true;
}

/*
 * The live entry for key, or NULL. Unwatch cannot keep fd_hot right from user
 * space (no atomic add on a map value there), so it zeroes the watch id of the
 * entries under the directory instead, and the first hook that meets one
 * deletes it here.
 */
static __always_inline struct tracked_fd *tracked_get(__u64 key)
{
	struct tracked_fd *t = bpf_map_lookup_elem(&tracked, &key);
	if (t && t->watch_id == 0) {
		track_del(key);
		return NULL;
	}
	return t;
}

/*
 * Processes holding tracked descriptors: tgid -> count and the last time an
 * io_uring use was reported. Feeds the io_uring flag only, so a count that
 * drifts (LRU evictions, close_range) errs towards reporting.
 */
struct tgid_state {
	__s64 tracked;
	__u64 uring_reported_ns;
	__u32 watch_id;
	__u32 shared_ro; /* read-only shared mappings of tracked files (mprotect watch) */
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, struct tgid_state);
} tgid_targets SEC(".maps");

static __always_inline void tgid_track(__u32 tgid, __u32 watch_id, __s64 delta)
{
	struct tgid_state *st = bpf_map_lookup_elem(&tgid_targets, &tgid);
	if (st) {
		__sync_fetch_and_add(&st->tracked, delta);
		if (delta > 0)
			st->watch_id = watch_id;
		return;
	}
	if (delta <= 0)
		return;
	struct tgid_state init = {.tracked = delta, .watch_id = watch_id};
	bpf_map_update_elem(&tgid_targets, &tgid, &init, BPF_NOEXIST);
}

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

static __always_inline int on_open_track(__u64 pid_tgid, __u32 fd, struct file *f, struct inode *inode);

/*
 * Every open on the host runs this. Most are read-only, so the write-mode and
 * regular-file checks come first, and on_open_track does the rest for the few
 * that pass.
 */
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
	/* The fd number is fresh: any entry under it is stale (close_range,
	 * O_CLOEXEC exec, dup2 over it). */
	if (!fd_cold(fd))
		track_del(fd_key(tgid, fd));

	struct file *f = fd_file(fd);
	if (!f)
		return 0;
	if (!(BPF_CORE_READ(f, f_mode) & FMODE_WRITE))
		return 0;
	struct inode *inode = BPF_CORE_READ(f, f_inode);
	if ((BPF_CORE_READ(inode, i_mode) & S_IFMT) != S_IFREG)
		return 0;
	return on_open_track(pid_tgid, fd, f, inode);
}

/*
 * exit_open_btf is on_open_exit with the filter done through BTF pointers:
 * loads from the current task and, after bpf_rdonly_cast, from the file are
 * inlined by the verifier instead of being one bpf_probe_read_kernel call each
 * (~9 helper calls, ~270 ns per open on this kernel, down to two). Needs
 * bpf_get_current_task_btf and the bpf_rdonly_cast kfunc (6.2+); the loader
 * falls back to exit_open elsewhere.
 */
extern void *bpf_rdonly_cast(const void *obj, __u32 btf_id) __ksym __weak;

SEC("tracepoint/syscalls/sys_exit_openat")
int exit_open_btf(struct trace_event_raw_sys_exit *ctx)
{
	long ret = ctx->ret;
	if (ret < 0)
		return 0;
	struct task_struct *task = bpf_get_current_task_btf();
	__u32 tgid = task->tgid;
	if (ward_ignored(tgid))
		return 0;
	__u32 fd = (__u32)ret;
	if (!fd_cold(fd))
		track_del(fd_key(tgid, fd));

	struct fdtable *fdt = task->files->fdt;
	if (fd >= fdt->max_fds)
		return 0;
	struct file **fds = fdt->fd;
	struct file *fp = NULL;
	bpf_probe_read_kernel(&fp, sizeof(fp), &fds[fd]);
	if (!fp)
		return 0;
	struct file *f = bpf_rdonly_cast(fp, bpf_core_type_id_kernel(struct file));
	if (!(f->f_mode & FMODE_WRITE))
		return 0;
	if ((f->f_inode->i_mode & S_IFMT) != S_IFREG)
		return 0;
	return on_open_track(bpf_get_current_pid_tgid(), fd, fp, BPF_CORE_READ(fp, f_inode));
}

/* An open for writing of a regular file: track it if it is under a watched
 * directory and report the open with its path. */
static __always_inline int on_open_track(__u64 pid_tgid, __u32 fd, struct file *f, struct inode *inode)
{
	__u32 tgid = pid_tgid >> 32;
	__u64 key = fd_key(tgid, fd);

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
	if (track_put(key, &t) < 0) {
		ward_count_drop(WARD_DROP_MAP_FULL);
		path_flags |= PATH_FLAG_UNTRACKED;
	} else {
		tgid_track(tgid, wid, 1);
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
	if (fd_cold(fd))
		return 0; /* hot path: every write on the host whose fd number nobody tracks */
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 tgid = pid_tgid >> 32;
	if (ward_ignored(tgid))
		return 0;

	__u64 key = fd_key(tgid, fd);
	struct tracked_fd *t = tracked_get(key);
	if (!t)
		return 0; /* hot path: every untracked write on the host ends here */

	struct file *f = fd_file(fd);
	struct inode *inode = f ? BPF_CORE_READ(f, f_inode) : NULL;
	if (!inode || BPF_CORE_READ(inode, i_ino) != t->ino ||
	    BPF_CORE_READ(inode, i_sb, s_dev) != t->dev) {
		/* fd number reused for another file without a close we saw */
		track_del(key);
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
	if (fd_cold(fd))
		return 0;
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 tgid = pid_tgid >> 32;
	if (ward_ignored(tgid))
		return 0;

	__u64 key = fd_key(tgid, fd);
	struct tracked_fd *t = tracked_get(key);
	if (!t)
		return 0; /* hot path */

	struct file *f = fd_file(fd);
	struct inode *inode = f ? BPF_CORE_READ(f, f_inode) : NULL;
	if (!inode || BPF_CORE_READ(inode, i_ino) != t->ino ||
	    BPF_CORE_READ(inode, i_sb, s_dev) != t->dev) {
		track_del(key);
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
	__u32 fd = ctx->args[0];
	if (fd_cold(fd))
		return 0;
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 tgid = pid_tgid >> 32;
	__u64 key = fd_key(tgid, fd);
	struct tracked_fd *t = tracked_get(key);
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
	if (track_del(key))
		tgid_track(tgid, 0, -1);
	if (bpf_ringbuf_output(&events, &e, sizeof(e), 0) < 0)
		ward_count_drop(WARD_DROP_RINGBUF_FULL);
	return 0;
}

/*
 * ---- Renames and truncates by path ----
 *
 * A file can reach a watched directory without being opened there: a rename
 * from an unwatched directory on the same file system (into a sync folder)
 * moves the inode, no byte is written. The syscall only has user strings, and
 * BPF cannot look a path up, so the exit decides from what it can see:
 *
 *   - a relative destination: walk up from its base directory (the dfd's
 *     directory or the cwd). A watched ancestor decides at once; reaching the
 *     root with a destination that contains '/' ("Dropbox/a.pdf") leaves the
 *     decision to user space, which gets the base's absolute path.
 *   - an absolute destination: FNV-1a hashes of each of its directory
 *     prefixes are looked up in watch_prefix, which user space fills with the
 *     watched directories' paths (as configured and with symlinks resolved).
 *     Paths spelled with "." or ".." components, or relative to a chroot,
 *     are not matched this way.
 *
 * coreutils mv renames with renameat2(AT_FDCWD, src, dirfd, basename), which
 * is the first case and needs no string matching.
 */
#define EV_PATHOP 4
#define EV_FDOP 5

#define PATHOP_RENAME 1
#define PATHOP_TRUNCATE 2

#define PATHOP_BASE_WATCHED (1 << 0)     /* new_base is relative to watch_id */
#define PATHOP_PREFIX (1 << 1)           /* absolute destination, prefix-matched */
#define PATHOP_UNRESOLVED (1 << 2)       /* new_base is absolute; user space decides */
#define PATHOP_NAME_TRUNCATED (1 << 3)   /* a user path filled its buffer */
#define PATHOP_OLD_BASE_WATCHED (1 << 4) /* old_base is relative to old_watch_id */
#define PATHOP_OLD_BASE_ROOT (1 << 5)    /* old_base is absolute */
#define PATHOP_PATH_TRUNCATED (1 << 6)   /* a component name could not be read */

#define PATH_NAME 512
#define BASE_DEPTH 24
#define AT_FDCWD -100

#define FNV_OFFSET 0xcbf29ce484222325ULL
#define FNV_PRIME 0x100000001b3ULL

struct pathop_event {
	__u32 type;
	__u32 tgid;
	__u64 ts_boot_ns;
	__u32 tid;
	__u32 uid;
	__u32 gid;
	__u32 watch_id; /* the destination's watched dir; 0 with PATHOP_UNRESOLVED */
	__u16 op;
	__u16 flags;
	__u16 new_depth; /* slots used in new_base */
	__u16 old_depth; /* slots used in old_base */
	__u32 old_watch_id;
	__u32 rename_flags;
	__s64 length; /* truncate(2) length */
	char comm[WARD_TASK_COMM_LEN];
	char new_name[PATH_NAME]; /* as the process passed it */
	char old_name[PATH_NAME];
	/* base directories' names, innermost first; empty at mount crossings */
	char new_base[BASE_DEPTH][NAME_BUF];
	char old_base[BASE_DEPTH][NAME_BUF];
};

struct pathop_args {
	__u64 old_name;
	__u64 new_name;
	__s32 old_dfd;
	__s32 new_dfd;
	__u32 flags;
	__u16 op;
	__u16 _pad;
	__s64 length;
};

#define FDOP_FTRUNCATE 1
#define FDOP_MMAP_SHARED 2
#define FDOP_IO_URING_SETUP 3
#define FDOP_IO_URING_ENTER 4
#define FDOP_DUP 5
/* FDOP_INHERIT 6: defined with the fork hook below */

struct fdop_event {
	__u32 type;
	__u32 tgid;
	__u64 ts_boot_ns;
	__u32 tid;
	__s32 fd; /* the tracked fd (for io_uring: the ring fd; for dup: the new fd) */
	__u32 dev;
	__u32 watch_id;
	__u64 ino;
	__u16 op;
	__u16 _pad;
	__u32 arg32; /* mmap: prot */
	__s64 arg;   /* ftruncate: length; mmap: length; io_uring_enter: to_submit; dup: old fd */
};

const struct pathop_event *unused_pathop_event __attribute__((unused));
const struct fdop_event *unused_fdop_event __attribute__((unused));

/* FNV-1a of a watched directory's absolute path -> watch id. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8192);
	__type(key, __u64);
	__type(value, __u32);
} watch_prefix SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64); /* pid_tgid */
	__type(value, struct pathop_args);
} pathop_pending SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pathop_event);
} pathop_scratch SEC(".maps");

static __always_inline int pathop_enter(__u16 op, __s32 old_dfd, const char *old_name, __s32 new_dfd,
					const char *new_name, __u32 flags, __s64 length)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	if (ward_ignored(pid_tgid >> 32))
		return 0;
	struct pathop_args a = {
		.old_name = (__u64)old_name,
		.new_name = (__u64)new_name,
		.old_dfd = old_dfd,
		.new_dfd = new_dfd,
		.flags = flags,
		.op = op,
		.length = length,
	};
	if (bpf_map_update_elem(&pathop_pending, &pid_tgid, &a, BPF_ANY) < 0)
		ward_count_drop(WARD_DROP_MAP_FULL);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_rename")
int enter_rename(struct trace_event_raw_sys_enter *ctx)
{
	return pathop_enter(PATHOP_RENAME, AT_FDCWD, (const char *)ctx->args[0], AT_FDCWD,
			    (const char *)ctx->args[1], 0, 0);
}

SEC("tracepoint/syscalls/sys_enter_renameat")
int enter_renameat(struct trace_event_raw_sys_enter *ctx)
{
	return pathop_enter(PATHOP_RENAME, ctx->args[0], (const char *)ctx->args[1], ctx->args[2],
			    (const char *)ctx->args[3], 0, 0);
}

SEC("tracepoint/syscalls/sys_enter_renameat2")
int enter_renameat2(struct trace_event_raw_sys_enter *ctx)
{
	return pathop_enter(PATHOP_RENAME, ctx->args[0], (const char *)ctx->args[1], ctx->args[2],
			    (const char *)ctx->args[3], ctx->args[4], 0);
}

SEC("tracepoint/syscalls/sys_enter_truncate")
int enter_truncate(struct trace_event_raw_sys_enter *ctx)
{
	return pathop_enter(PATHOP_TRUNCATE, AT_FDCWD, NULL, AT_FDCWD, (const char *)ctx->args[0], 0,
			    (__s64)ctx->args[1]);
}

/* The directory a relative path starts from: the dfd's, or the cwd. */
static __always_inline bool base_dir(__s32 dfd, struct dentry **d, struct mount **mnt)
{
	if (dfd == AT_FDCWD) {
		struct task_struct *task = (struct task_struct *)bpf_get_current_task();
		*d = BPF_CORE_READ(task, fs, pwd.dentry);
		*mnt = real_mount(BPF_CORE_READ(task, fs, pwd.mnt));
	} else {
		struct file *f = fd_file(dfd);
		if (!f)
			return false;
		*d = BPF_CORE_READ(f, f_path.dentry);
		*mnt = real_mount(BPF_CORE_READ(f, f_path.mnt));
	}
	return *d != NULL;
}

/*
 * Walk from directory cur upward, naming cur and each ancestor in slots
 * (innermost first, empty at mount crossings), until a watched directory
 * (its id is returned) or the root (*at_root). Results go to *depth_out in
 * the scratch map so the verifier sees one state after each walk.
 */
static __always_inline __u32 walk_dir(struct dentry *cur, struct mount *mnt, char (*slots)[NAME_BUF],
				      __u16 *depth_out, bool *at_root, __u16 *flags)
{
	*at_root = false;
	*depth_out = 0;
	for (__u32 depth = 0; depth < BASE_DEPTH; depth++) {
		struct watch_key wk = {
			.dev = BPF_CORE_READ(cur, d_sb, s_dev),
			.ino = BPF_CORE_READ(cur, d_inode, i_ino),
		};
		__u32 *id = bpf_map_lookup_elem(&watched, &wk);
		if (id) {
			*depth_out = depth;
			return *id;
		}
		if (cur == BPF_CORE_READ(mnt, mnt.mnt_root)) {
			struct mount *parent = BPF_CORE_READ(mnt, mnt_parent);
			if (parent == mnt) {
				*depth_out = depth;
				*at_root = true;
				return 0;
			}
			slots[depth][0] = 0;
			cur = BPF_CORE_READ(mnt, mnt_mountpoint);
			mnt = parent;
			continue;
		}
		struct dentry *up = BPF_CORE_READ(cur, d_parent);
		if (up == cur)
			return 0; /* a detached tree: no path to report */
		const unsigned char *name = BPF_CORE_READ(cur, d_name.name);
		if (bpf_probe_read_kernel_str(slots[depth], NAME_BUF, name) <= 0) {
			slots[depth][0] = 0;
			*flags |= PATHOP_PATH_TRUNCATED;
		}
		cur = up;
	}
	ward_count_drop(WARD_DROP_PATH_TOO_DEEP);
	return 0;
}

/* Longest watched directory prefix of an absolute path, by hash. */
static __always_inline __u32 prefix_match(const char *name)
{
	__u64 h = FNV_OFFSET;
	__u32 found = 0;
	char prev = 0;
	for (__u32 i = 0; i < PATH_NAME; i++) {
		char c = name[i];
		if (c == 0)
			break;
		if (c == '/') {
			if (prev == '/')
				continue; /* "//" spells the same directory */
			if (i > 0) {
				__u32 *id = bpf_map_lookup_elem(&watch_prefix, &h);
				if (id)
					found = *id;
			}
		}
		h ^= (__u8)c;
		h *= FNV_PRIME;
		prev = c;
	}
	return found;
}

static __always_inline bool has_slash(const char *name)
{
	for (__u32 i = 0; i < PATH_NAME; i++) {
		char c = name[i];
		if (c == 0)
			return false;
		if (c == '/')
			return true;
	}
	return false;
}

static __always_inline int pathop_exit(struct trace_event_raw_sys_exit *ctx)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct pathop_args *pa = bpf_map_lookup_elem(&pathop_pending, &pid_tgid);
	if (!pa)
		return 0;
	struct pathop_args a = *pa;
	bpf_map_delete_elem(&pathop_pending, &pid_tgid);
	if (ctx->ret != 0)
		return 0;

	__u32 zero = 0;
	struct pathop_event *e = bpf_map_lookup_elem(&pathop_scratch, &zero);
	if (!e)
		return 0;
	__u16 flags = 0;
	long n = bpf_probe_read_user_str(e->new_name, PATH_NAME, (const void *)a.new_name);
	if (n <= 0)
		return 0;
	if (n >= PATH_NAME)
		flags |= PATHOP_NAME_TRUNCATED;

	__u32 wid = 0;
	bool at_root = false;
	if (e->new_name[0] == '/') {
		e->new_depth = 0;
		wid = prefix_match(e->new_name);
		if (!wid)
			return 0;
		flags |= PATHOP_PREFIX;
	} else {
		struct dentry *d;
		struct mount *mnt;
		if (!base_dir(a.new_dfd, &d, &mnt))
			return 0;
		wid = walk_dir(d, mnt, e->new_base, &e->new_depth, &at_root, &flags);
		if (wid)
			flags |= PATHOP_BASE_WATCHED;
		else if (at_root && has_slash(e->new_name))
			flags |= PATHOP_UNRESOLVED;
		else
			return 0;
	}

	e->old_name[0] = 0;
	e->old_depth = 0;
	e->old_watch_id = 0;
	if (a.op == PATHOP_RENAME) {
		n = bpf_probe_read_user_str(e->old_name, PATH_NAME, (const void *)a.old_name);
		if (n >= PATH_NAME)
			flags |= PATHOP_NAME_TRUNCATED;
		if (n > 0 && e->old_name[0] != '/') {
			struct dentry *d;
			struct mount *mnt;
			bool old_root = false;
			if (base_dir(a.old_dfd, &d, &mnt)) {
				e->old_watch_id = walk_dir(d, mnt, e->old_base, &e->old_depth, &old_root, &flags);
				if (e->old_watch_id)
					flags |= PATHOP_OLD_BASE_WATCHED;
				else if (old_root)
					flags |= PATHOP_OLD_BASE_ROOT;
			}
		}
	}

	__u64 uid_gid = bpf_get_current_uid_gid();
	e->type = EV_PATHOP;
	e->tgid = pid_tgid >> 32;
	e->ts_boot_ns = bpf_ktime_get_boot_ns();
	e->tid = (__u32)pid_tgid;
	e->uid = (__u32)uid_gid;
	e->gid = uid_gid >> 32;
	e->watch_id = wid;
	e->op = a.op;
	e->flags = flags;
	e->rename_flags = a.flags;
	e->length = a.length;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	if (bpf_ringbuf_output(&events, e, sizeof(*e), 0) < 0)
		ward_count_drop(WARD_DROP_RINGBUF_FULL);
	return 0;
}

/* Shared by the exits of rename, renameat, renameat2 and truncate. */
SEC("tracepoint/syscalls/sys_exit_renameat2")
int exit_pathop(struct trace_event_raw_sys_exit *ctx)
{
	return pathop_exit(ctx);
}

/* ---- Operations on tracked descriptors that move no user buffer ---- */

/* The tracked entry for (tgid, fd) if it still names the same file. */
static __always_inline struct tracked_fd *tracked_live(__u32 tgid, __u32 fd)
{
	__u64 key = fd_key(tgid, fd);
	struct tracked_fd *t = tracked_get(key);
	if (!t)
		return NULL;
	struct file *f = fd_file(fd);
	struct inode *inode = f ? BPF_CORE_READ(f, f_inode) : NULL;
	if (!inode || BPF_CORE_READ(inode, i_ino) != t->ino || BPF_CORE_READ(inode, i_sb, s_dev) != t->dev) {
		track_del(key);
		return NULL;
	}
	return t;
}

static __always_inline void emit_fdop(__u64 pid_tgid, __s32 fd, struct tracked_fd *t, __u32 watch_id,
				      __u16 op, __u32 arg32, __s64 arg)
{
	struct fdop_event e = {
		.type = EV_FDOP,
		.tgid = pid_tgid >> 32,
		.ts_boot_ns = bpf_ktime_get_boot_ns(),
		.tid = (__u32)pid_tgid,
		.fd = fd,
		.watch_id = watch_id,
		.op = op,
		.arg32 = arg32,
		.arg = arg,
	};
	if (t) {
		e.dev = t->dev;
		e.ino = t->ino;
		e.watch_id = t->watch_id;
	}
	if (bpf_ringbuf_output(&events, &e, sizeof(e), 0) < 0)
		ward_count_drop(WARD_DROP_RINGBUF_FULL);
}

SEC("tracepoint/syscalls/sys_enter_ftruncate")
int enter_ftruncate(struct trace_event_raw_sys_enter *ctx)
{
	if (fd_cold(ctx->args[0]))
		return 0;
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 tgid = pid_tgid >> 32;
	if (ward_ignored(tgid))
		return 0;
	struct tracked_fd *t = tracked_live(tgid, ctx->args[0]);
	if (t)
		emit_fdop(pid_tgid, ctx->args[0], t, 0, FDOP_FTRUNCATE, 0, (__s64)ctx->args[1]);
	return 0;
}

#define PROT_WRITE 0x2
#define MAP_TYPE 0x0f
#define MAP_SHARED 0x01
#define MAP_SHARED_VALIDATE 0x03

#define FDOP_MPROTECT_SHARED 7
#define VM_SHARED 0x8

/*
 * Read-only shared mappings of tracked files, (tgid, dev, ino) -> watch id:
 * mprotect(PROT_WRITE) over one makes it writable later, and stores through it
 * then reach the file with no syscall. shared_ro_live counts live entries
 * host-wide (raised on insert, lowered at the process's exit by its tgid_state
 * count) so that mprotect, which JITs call often, returns at once while there
 * are none.
 */
struct shared_key {
	__u32 tgid;
	__u32 dev;
	__u64 ino;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct shared_key);
	__type(value, __u32);
} shared_ro SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __s64);
} shared_ro_live SEC(".maps");

static __always_inline void remember_shared_ro(__u32 tgid, struct tracked_fd *t)
{
	struct shared_key k = {.tgid = tgid, .dev = t->dev, .ino = t->ino};
	__u32 wid = t->watch_id;
	if (bpf_map_update_elem(&shared_ro, &k, &wid, BPF_NOEXIST) != 0)
		return; /* already known, or the map is full (LRU: cannot be) */
	struct tgid_state *st = bpf_map_lookup_elem(&tgid_targets, &tgid);
	if (!st)
		return; /* cannot be lowered at exit: leave the global count alone */
	__sync_fetch_and_add(&st->shared_ro, 1);
	__u32 zero = 0;
	__s64 *n = bpf_map_lookup_elem(&shared_ro_live, &zero);
	if (n)
		__sync_fetch_and_add(n, 1);
}

/* mmap(addr, len, prot, flags, fd, off): stores through a writable shared
 * mapping reach the file with no syscall at all. A read-only shared mapping
 * is remembered for mprotect. */
SEC("tracepoint/syscalls/sys_enter_mmap")
int enter_mmap(struct trace_event_raw_sys_enter *ctx)
{
	__u32 prot = ctx->args[2];
	__u32 type = ctx->args[3] & MAP_TYPE;
	if (type != MAP_SHARED && type != MAP_SHARED_VALIDATE)
		return 0; /* hot path: private and anonymous mappings */
	__s32 fd = ctx->args[4];
	if (fd < 0 || fd_cold(fd))
		return 0;
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 tgid = pid_tgid >> 32;
	if (ward_ignored(tgid))
		return 0;
	struct tracked_fd *t = tracked_live(tgid, fd);
	if (!t)
		return 0;
	if (prot & PROT_WRITE)
		emit_fdop(pid_tgid, fd, t, 0, FDOP_MMAP_SHARED, prot, (__s64)ctx->args[1]);
	else
		remember_shared_ro(tgid, t);
	return 0;
}

struct mprotect_ctx {
	__u32 tgid;
	__u32 found;
	struct tracked_fd t;
};

static long mprotect_vma(struct task_struct *task, struct vm_area_struct *vma, struct mprotect_ctx *c)
{
	if (!(BPF_CORE_READ(vma, vm_flags) & VM_SHARED))
		return 0;
	struct file *f = BPF_CORE_READ(vma, vm_file);
	if (!f)
		return 0;
	struct shared_key k = {
		.tgid = c->tgid,
		.dev = BPF_CORE_READ(f, f_inode, i_sb, s_dev),
		.ino = BPF_CORE_READ(f, f_inode, i_ino),
	};
	__u32 *wid = bpf_map_lookup_elem(&shared_ro, &k);
	if (!wid)
		return 0;
	c->found = 1;
	c->t.watch_id = *wid;
	c->t.dev = k.dev;
	c->t.ino = k.ino;
	return 0;
}

/* mprotect(addr, len, prot): bpf_find_vma needs 5.17+; without it the hook does
 * not load and Status reports the gap. */
SEC("tracepoint/syscalls/sys_enter_mprotect")
int enter_mprotect(struct trace_event_raw_sys_enter *ctx)
{
	if (!(ctx->args[2] & PROT_WRITE))
		return 0;
	__u32 zero = 0;
	__s64 *live = bpf_map_lookup_elem(&shared_ro_live, &zero);
	if (!live || *live <= 0)
		return 0; /* hot path: no read-only shared mapping of a tracked file anywhere */
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 tgid = pid_tgid >> 32;
	if (ward_ignored(tgid))
		return 0;
	struct mprotect_ctx c = {.tgid = tgid};
	bpf_find_vma(bpf_get_current_task_btf(), ctx->args[0], mprotect_vma, &c, 0);
	if (c.found)
		emit_fdop(pid_tgid, -1, &c.t, 0, FDOP_MPROTECT_SHARED, ctx->args[2], (__s64)ctx->args[1]);
	return 0;
}

/* io_uring by a process holding tracked descriptors: its reads and writes
 * bypass the syscalls above. Reported at setup and, at most once a second
 * per process, at submission. */
static __always_inline struct tgid_state *holding_targets(__u32 tgid)
{
	if (ward_ignored(tgid))
		return NULL;
	struct tgid_state *st = bpf_map_lookup_elem(&tgid_targets, &tgid);
	if (!st || st->tracked <= 0)
		return NULL;
	return st;
}

SEC("tracepoint/syscalls/sys_exit_io_uring_setup")
int exit_io_uring_setup(struct trace_event_raw_sys_exit *ctx)
{
	if (ctx->ret < 0)
		return 0;
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct tgid_state *st = holding_targets(pid_tgid >> 32);
	if (!st)
		return 0;
	emit_fdop(pid_tgid, ctx->ret, NULL, st->watch_id, FDOP_IO_URING_SETUP, 0, 0);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_io_uring_enter")
int enter_io_uring_enter(struct trace_event_raw_sys_enter *ctx)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct tgid_state *st = holding_targets(pid_tgid >> 32);
	if (!st)
		return 0;
	__u64 now = bpf_ktime_get_boot_ns();
	__u64 last = st->uring_reported_ns;
	if (last && now - last < 1000000000ULL)
		return 0;
	st->uring_reported_ns = now;
	emit_fdop(pid_tgid, ctx->args[0], NULL, st->watch_id, FDOP_IO_URING_ENTER, 0, (__s64)ctx->args[1]);
	return 0;
}

/* ---- dup/dup2/dup3/fcntl(F_DUPFD*): the copy inherits tracking ---- */

#define F_DUPFD 0
#define F_DUPFD_CLOEXEC 1030

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);   /* pid_tgid */
	__type(value, __s32); /* old fd, when tracked */
} dup_pending SEC(".maps");

static __always_inline int dup_enter(__s32 oldfd)
{
	if (fd_cold(oldfd))
		return 0;
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 tgid = pid_tgid >> 32;
	if (ward_ignored(tgid))
		return 0;
	__u64 key = fd_key(tgid, oldfd);
	if (!tracked_get(key))
		return 0;
	if (bpf_map_update_elem(&dup_pending, &pid_tgid, &oldfd, BPF_ANY) < 0)
		ward_count_drop(WARD_DROP_MAP_FULL);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_dup")
int enter_dup(struct trace_event_raw_sys_enter *ctx)
{
	return dup_enter(ctx->args[0]);
}

/* dup2(oldfd, newfd) and dup3(oldfd, newfd, flags) */
SEC("tracepoint/syscalls/sys_enter_dup3")
int enter_dup3(struct trace_event_raw_sys_enter *ctx)
{
	return dup_enter(ctx->args[0]);
}

SEC("tracepoint/syscalls/sys_enter_fcntl")
int enter_fcntl(struct trace_event_raw_sys_enter *ctx)
{
	__u32 cmd = ctx->args[1];
	if (cmd != F_DUPFD && cmd != F_DUPFD_CLOEXEC)
		return 0;
	return dup_enter(ctx->args[0]);
}

/* Shared by the exits of dup, dup2, dup3 and fcntl: all return the new fd
 * (fcntl only for F_DUPFD*, the only commands that leave a pending entry). */
SEC("tracepoint/syscalls/sys_exit_dup3")
int exit_dup(struct trace_event_raw_sys_exit *ctx)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__s32 *pending = bpf_map_lookup_elem(&dup_pending, &pid_tgid);
	if (!pending)
		return 0;
	__s32 oldfd = *pending;
	bpf_map_delete_elem(&dup_pending, &pid_tgid);
	long ret = ctx->ret;
	if (ret < 0 || ret == oldfd)
		return 0;
	__u32 tgid = pid_tgid >> 32;
	struct tracked_fd *t = tracked_live(tgid, oldfd);
	if (!t)
		return 0;
	struct tracked_fd copy = *t;
	__u64 key = fd_key(tgid, ret);
	if (track_put(key, &copy) < 0) {
		ward_count_drop(WARD_DROP_MAP_FULL);
		return 0;
	}
	tgid_track(tgid, copy.watch_id, 1);
	emit_fdop(pid_tgid, ret, &copy, 0, FDOP_DUP, 0, oldfd);
	return 0;
}

/*
 * ---- fork: the child inherits its parent's tracked descriptors ----
 *
 * `{ cat a; cat b; } > /media/usb/out` opens the file in the shell and the
 * writes come from children that inherited fd 1. A fork by a process holding
 * tracked descriptors (tgid_targets: rare, so every other fork pays one
 * helper call and an LRU lookup) copies its entries to the child's tgid,
 * checking only the fd numbers whose fd_hot slot is non-zero. bpf_loop keeps
 * the verifier from unrolling the 1024 slots (5.17+; without it the hook does
 * not load and the gap is reported by Status). fds numbered >= FD_HOT_SLOTS
 * are not inherited this way. Threads share the fd table under one tgid and
 * need nothing.
 */
#define FDOP_INHERIT 6

struct inherit_ctx {
	__u64 parent_pid_tgid;
	__u32 parent;
	__u32 child;
	__s64 left; /* parent's tracked count: stop once all are found */
};

static long inherit_one(__u32 fd, struct inherit_ctx *c)
{
	if (c->left <= 0)
		return 1;
	if (fd_cold(fd))
		return 0;
	__u64 key = fd_key(c->parent, fd);
	struct tracked_fd *t = tracked_get(key);
	if (!t)
		return 0;
	c->left--;
	struct tracked_fd copy = *t;
	__u64 ckey = fd_key(c->child, fd);
	if (track_put(ckey, &copy) < 0) {
		ward_count_drop(WARD_DROP_MAP_FULL);
		return 0;
	}
	tgid_track(c->child, copy.watch_id, 1);
	/* Reported under the child's tgid; arg is the parent's. */
	emit_fdop(((__u64)c->child << 32) | c->child, fd, &copy, 0, FDOP_INHERIT, 0, c->parent);
	return 0;
}

SEC("raw_tp/sched_process_fork")
int fork_inherit(struct bpf_raw_tracepoint_args *ctx)
{
	struct task_struct *parent = (struct task_struct *)ctx->args[0];
	struct task_struct *child = (struct task_struct *)ctx->args[1];
	__u32 ptgid = BPF_CORE_READ(parent, tgid);
	__u32 ctgid = BPF_CORE_READ(child, tgid);
	if (ptgid == ctgid)
		return 0; /* a thread */
	struct tgid_state *st = holding_targets(ptgid);
	if (!st)
		return 0; /* hot path: the parent holds nothing tracked */
	struct inherit_ctx c = {.parent = ptgid, .child = ctgid, .left = st->tracked};
	bpf_loop(FD_HOT_SLOTS, inherit_one, &c, 0);
	return 0;
}

/*
 * Exit: the kernel closes a dying process's descriptors without close(2), so
 * its entries would stay in `tracked` until the LRU evicts them, and their
 * fd_hot slots would stay hot for good (most programs never close what they
 * wrote). When the last thread of a process that held tracked descriptors
 * exits (signal->live has reached zero before the tracepoint fires), its
 * entries are deleted. Same slot walk and limits as fork.
 */
struct forget_ctx {
	__u32 tgid;
	__u32 _pad;
	__s64 left;
};

static long forget_one(__u32 fd, struct forget_ctx *c)
{
	if (c->left <= 0)
		return 1;
	if (fd_cold(fd))
		return 0;
	if (track_del(fd_key(c->tgid, fd)))
		c->left--;
	return 0;
}

SEC("raw_tp/sched_process_exit")
int exit_forget(struct bpf_raw_tracepoint_args *ctx)
{
	struct task_struct *task = (struct task_struct *)ctx->args[0];
	__u32 tgid = BPF_CORE_READ(task, tgid);
	struct tgid_state *st = bpf_map_lookup_elem(&tgid_targets, &tgid);
	if (!st)
		return 0; /* hot path: held nothing tracked */
	if (BPF_CORE_READ(task, signal, live.counter) != 0)
		return 0; /* other threads still use the descriptor table */
	if (st->shared_ro) {
		__u32 zero = 0;
		__s64 *n = bpf_map_lookup_elem(&shared_ro_live, &zero);
		if (n)
			__sync_fetch_and_add(n, -(__s64)st->shared_ro);
	}
	if (st->tracked > 0) {
		struct forget_ctx c = {.tgid = tgid, .left = st->tracked};
		bpf_loop(FD_HOT_SLOTS, forget_one, &c, 0);
	}
	bpf_map_delete_elem(&tgid_targets, &tgid);
	return 0;
}
