//go:build ignore

// SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause
/*
 * Ward process probe: one record per successful execve, one per fork that
 * creates a process (threads are skipped here, in the kernel) and one per
 * thread-group exit.
 *
 * Every hook exists in three flavours so the loader can fall back on older
 * kernels: tp_btf (BTF-typed arguments, cheapest), raw_tp (same arguments,
 * read with CO-RE probe reads) and the classic tracepoint (stable ABI,
 * needs tracefs). All flavours funnel into the same emit functions.
 */
#include "vmlinux.h"
#include "ward_common.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define EV_EXEC 1
#define EV_EXIT 2
#define EV_FORK 3

#define FILENAME_MAX_LEN 512
#define ARGS_MAX_LEN 1024

#define EXEC_FLAG_ARGS_TRUNCATED (1 << 0)
#define EXEC_FLAG_FILENAME_TRUNCATED (1 << 1)
#define EXEC_FLAG_ARGS_READ_FAILED (1 << 2)

/* Layout mirrored by process.go (offset test in process_test.go). */
struct exec_event {
	__u32 type;
	__u32 tgid;
	__u64 ts_boot_ns;
	__u32 ppid;
	__u32 uid;
	__u32 gid;
	__u32 flags;
	__u64 start_boot_ns;
	__u64 cgroup_id;
	char comm[WARD_TASK_COMM_LEN];
	__u16 filename_len; /* bytes used in filename, without NUL */
	__u16 args_len;     /* bytes used in args, NUL separated */
	__u32 exe_dev;      /* the executable's inode (mm->exe_file), 0 if unread: */
	__u64 exe_ino;      /* user space caches the resolved path by it */
	char filename[FILENAME_MAX_LEN];
	char args[ARGS_MAX_LEN];
};

struct exit_event {
	__u32 type;
	__u32 tgid;
	__u64 ts_boot_ns;
	__u32 ppid;
	__u32 exit_code; /* wait(2) status: code << 8 | signal */
	__u64 start_boot_ns;
	__u64 cgroup_id;
	char comm[WARD_TASK_COMM_LEN];
};

/*
 * A fork that created a process. The parent is the forking task (current);
 * the child has not run yet and still shares the parent's program, args and
 * credentials, so user space copies those until the child execs.
 */
struct fork_event {
	__u32 type;
	__u32 tgid; /* child: a new process, so its pid is its tgid */
	__u64 ts_boot_ns;
	__u32 parent_tgid;
	__u32 parent_pid; /* the forking thread */
	__u32 uid;
	__u32 gid;
	__u64 start_boot_ns;        /* child; 0 when the fallback could not find it */
	__u64 parent_start_boot_ns; /* the forking process's thread-group leader */
	__u64 cgroup_id;
	char comm[WARD_TASK_COMM_LEN];
};

/* Referenced only so clang emits BTF for them and bpf2go generates Go
 * mirrors, which process_test.go compares against the hand-written decoder. */
const struct exec_event *unused_exec_event __attribute__((unused));
const struct exit_event *unused_exit_event __attribute__((unused));
const struct fork_event *unused_fork_event __attribute__((unused));

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 22); /* overridden by the loader */
} events SEC(".maps");

/* Kernels before 5.5 named the boot-based start time real_start_time. */
struct task_struct___old {
	u64 real_start_time;
} __attribute__((preserve_access_index));

static __always_inline __u64 task_start_boot_ns(struct task_struct *task)
{
	if (bpf_core_field_exists(task->start_boottime))
		return BPF_CORE_READ(task, start_boottime);
	struct task_struct___old *old = (void *)task;
	return BPF_CORE_READ(old, real_start_time);
}

/*
 * emit_exec fills and submits an exec record. filename_src is a kernel
 * string pointer (bprm->filename or the tracepoint's __data_loc payload).
 */
static __always_inline int emit_exec(struct task_struct *task, const char *filename_src)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 tgid = pid_tgid >> 32;

	if (ward_ignored(tgid))
		return 0;

	struct exec_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		ward_count_drop(WARD_DROP_RINGBUF_FULL);
		return 0;
	}

	__u64 uid_gid = bpf_get_current_uid_gid();
	e->type = EV_EXEC;
	e->tgid = tgid;
	e->ts_boot_ns = bpf_ktime_get_boot_ns();
	e->ppid = BPF_CORE_READ(task, real_parent, tgid);
	e->uid = (__u32)uid_gid;
	e->gid = uid_gid >> 32;
	e->flags = 0;
	e->start_boot_ns = task_start_boot_ns(task);
	e->cgroup_id = bpf_get_current_cgroup_id();
	struct inode *exe = BPF_CORE_READ(task, mm, exe_file, f_inode);
	e->exe_dev = exe ? BPF_CORE_READ(exe, i_sb, s_dev) : 0;
	e->exe_ino = exe ? BPF_CORE_READ(exe, i_ino) : 0;
	bpf_get_current_comm(e->comm, sizeof(e->comm));

	long n = bpf_probe_read_kernel_str(e->filename, sizeof(e->filename), filename_src);
	if (n <= 0) {
		ward_count_drop(WARD_DROP_READ_FAILED);
		e->filename_len = 0;
	} else {
		e->filename_len = n - 1;
		if (n == sizeof(e->filename))
			e->flags |= EXEC_FLAG_FILENAME_TRUNCATED;
	}

	/*
	 * At sched_process_exec the new mm is installed and copy_strings()
	 * has laid out argv contiguously in [arg_start, arg_end).
	 */
	unsigned long arg_start = BPF_CORE_READ(task, mm, arg_start);
	unsigned long arg_end = BPF_CORE_READ(task, mm, arg_end);
	__u64 len = arg_end > arg_start ? arg_end - arg_start : 0;
	if (len > ARGS_MAX_LEN) {
		len = ARGS_MAX_LEN;
		e->flags |= EXEC_FLAG_ARGS_TRUNCATED;
		ward_count_drop(WARD_DROP_ARGS_TRUNCATED);
	}
	WARD_BARRIER_VAR(len);
	if (len > 0 && len <= ARGS_MAX_LEN) {
		if (bpf_probe_read_user(e->args, len, (void *)arg_start) < 0) {
			e->flags |= EXEC_FLAG_ARGS_READ_FAILED;
			ward_count_drop(WARD_DROP_READ_FAILED);
			len = 0;
		}
	} else {
		len = 0;
	}
	e->args_len = len;

	bpf_ringbuf_submit(e, 0);
	return 0;
}

static __always_inline int emit_exit(struct task_struct *task)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 tgid = pid_tgid >> 32;
	__u32 pid = (__u32)pid_tgid;

	/* Only the thread-group leader: one record per process, not per thread. */
	if (pid != tgid || ward_ignored(tgid))
		return 0;

	struct exit_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		ward_count_drop(WARD_DROP_RINGBUF_FULL);
		return 0;
	}
	e->type = EV_EXIT;
	e->tgid = tgid;
	e->ts_boot_ns = bpf_ktime_get_boot_ns();
	e->ppid = BPF_CORE_READ(task, real_parent, tgid);
	e->exit_code = BPF_CORE_READ(task, exit_code);
	e->start_boot_ns = task_start_boot_ns(task);
	e->cgroup_id = bpf_get_current_cgroup_id();
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	bpf_ringbuf_submit(e, 0);
	return 0;
}

/*
 * emit_fork reports a fork from the forking task (current). child may be NULL
 * (classic-tracepoint fallback that could not find the child): the record then
 * carries child_pid and no start time.
 */
static __always_inline int emit_fork(struct task_struct *child, __u32 child_pid)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 tgid = pid_tgid >> 32;

	if (ward_ignored(tgid))
		return 0;

	struct fork_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		ward_count_drop(WARD_DROP_RINGBUF_FULL);
		return 0;
	}
	struct task_struct *cur = (struct task_struct *)bpf_get_current_task();
	__u64 uid_gid = bpf_get_current_uid_gid();
	e->type = EV_FORK;
	e->tgid = child_pid;
	e->ts_boot_ns = bpf_ktime_get_boot_ns();
	e->parent_tgid = tgid;
	e->parent_pid = (__u32)pid_tgid;
	e->uid = (__u32)uid_gid;
	e->gid = uid_gid >> 32;
	e->start_boot_ns = child ? task_start_boot_ns(child) : 0;
	e->parent_start_boot_ns = task_start_boot_ns(BPF_CORE_READ(cur, group_leader));
	e->cgroup_id = bpf_get_current_cgroup_id();
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	bpf_ringbuf_submit(e, 0);
	return 0;
}

/* A clone that shares the parent's thread group made a thread, not a process. */
static __always_inline int fork_from_tasks(struct task_struct *parent, struct task_struct *child)
{
	__u32 child_tgid = BPF_CORE_READ(child, tgid);
	if (child_tgid == BPF_CORE_READ(parent, tgid))
		return 0;
	return emit_fork(child, child_tgid);
}

/* ---- exec ---- */

SEC("tp_btf/sched_process_exec")
int BPF_PROG(exec_btf, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	return emit_exec(p, BPF_CORE_READ(bprm, filename));
}

SEC("raw_tp/sched_process_exec")
int BPF_PROG(exec_raw, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	return emit_exec(p, BPF_CORE_READ(bprm, filename));
}

SEC("tracepoint/sched/sched_process_exec")
int exec_tp(struct trace_event_raw_sched_process_exec *ctx)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	/* __data_loc: low 16 bits are the offset from the record start. */
	__u32 loc = BPF_CORE_READ(ctx, __data_loc_filename);
	return emit_exec(task, (const char *)ctx + (loc & 0xFFFF));
}

/* ---- fork ---- */

SEC("tp_btf/sched_process_fork")
int BPF_PROG(fork_btf, struct task_struct *parent, struct task_struct *child)
{
	return fork_from_tasks(parent, child);
}

SEC("raw_tp/sched_process_fork")
int BPF_PROG(fork_raw, struct task_struct *parent, struct task_struct *child)
{
	return fork_from_tasks(parent, child);
}

/*
 * The classic tracepoint carries pids only. copy_process() appends a new
 * process (not a thread, which goes on its group's thread list) to its real
 * parent's children list, and the forking thread cannot fork again before this
 * tracepoint returns, so the child is the tail of current->children: when that
 * tail has child_pid, this fork made a process. Anything else (a thread, or a
 * CLONE_PARENT fork whose child was added to the grandparent's list) is skipped.
 */
SEC("tracepoint/sched/sched_process_fork")
int fork_tp(struct trace_event_raw_sched_process_fork *ctx)
{
	struct task_struct *cur = (struct task_struct *)bpf_get_current_task();
	__u32 child_pid = BPF_CORE_READ(ctx, child_pid);
	struct list_head *tail = BPF_CORE_READ(cur, children.prev);
	struct task_struct *child =
		(struct task_struct *)((void *)tail - bpf_core_field_offset(struct task_struct, sibling));
	if ((__u32)BPF_CORE_READ(child, pid) != child_pid)
		return 0;
	if ((__u32)BPF_CORE_READ(child, tgid) != child_pid)
		return 0;
	return emit_fork(child, child_pid);
}

/* ---- exit ---- */

SEC("tp_btf/sched_process_exit")
int BPF_PROG(exit_btf, struct task_struct *p)
{
	return emit_exit(p);
}

SEC("raw_tp/sched_process_exit")
int BPF_PROG(exit_raw, struct task_struct *p)
{
	return emit_exit(p);
}

SEC("tracepoint/sched/sched_process_exit")
int exit_tp(void *ctx)
{
	return emit_exit((struct task_struct *)bpf_get_current_task());
}
