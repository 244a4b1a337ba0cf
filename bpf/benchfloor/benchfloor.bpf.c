//go:build ignore

// SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause
/*
 * Benchmark-only programs: the floor that any syscall-tracepoint sensor pays, and the
 * single-dispatcher alternative to one tracepoint per syscall. Never loaded by the agent.
 *
 *   empty             : attached to any syscalls:sys_{enter,exit}_* tracepoint, returns at
 *                       once. What the kernel's tracepoint path costs before a sensor does
 *                       any work of its own.
 *   raw_empty_*       : raw_tp/sys_enter and raw_tp/sys_exit, returning at once: the floor
 *                       of a dispatcher, which runs on every syscall of the host.
 *   raw_inline_*      : raw_tp dispatcher with Ward's unwatched-write filter inlined: a
 *                       switch on the syscall number; for the write family the agent-tgid
 *                       check and one LRU-hash lookup of (tgid << 32 | fd), exactly what
 *                       filewrite's enter_write does before it returns for an untracked fd.
 *   btf_inline_*      : the same as tp_btf (BTF-typed arguments, no probe_read for regs).
 *   btf_tail_*        : Falco modern_bpf style: tp_btf dispatcher that tail-calls the
 *                       per-syscall program from a prog array indexed by syscall number;
 *                       a syscall without an entry falls through and returns.
 *
 * A hit in the tracked map only counts (hits): the capture work after it is the same for
 * every attach style, so the comparison is about reaching the decision.
 * x86-64 syscall numbers; the package builds only for amd64.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define NR_write 1
#define NR_open 2
#define NR_close 3
#define NR_mmap 9
#define NR_pwrite64 18
#define NR_writev 20
#define NR_dup 32
#define NR_dup2 33
#define NR_sendfile 40
#define NR_fcntl 72
#define NR_truncate 76
#define NR_ftruncate 77
#define NR_rename 82
#define NR_creat 85
#define NR_openat 257
#define NR_renameat 264
#define NR_splice 275
#define NR_dup3 292
#define NR_pwritev 296
#define NR_renameat2 316
#define NR_copy_file_range 326
#define NR_pwritev2 328
#define NR_io_uring_setup 425
#define NR_io_uring_enter 426
#define NR_openat2 437

#define MAX_NR 512

const volatile __u32 ignore_tgid = 0;

/* Same shape as filewrite's tracked map: (tgid << 32 | fd) -> 24-byte value. */
struct tracked_fd {
	__u32 watch_id;
	__u32 dev;
	__u64 ino;
	__u32 f_flags;
	__u32 _pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct tracked_fd);
} tracked SEC(".maps");

/* Per-thread state an exit program would look up (filewrite's copy_pending, pathop stash). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, __u64);
} pending SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} hits SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, MAX_NR);
	__type(key, __u32);
	__type(value, __u32);
} enter_calls SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, MAX_NR);
	__type(key, __u32);
	__type(value, __u32);
} exit_calls SEC(".maps");

SEC("tracepoint")
int empty(void *ctx)
{
	return 0;
}

SEC("raw_tp/sys_enter")
int raw_empty_enter(void *ctx)
{
	return 0;
}

SEC("raw_tp/sys_exit")
int raw_empty_exit(void *ctx)
{
	return 0;
}

/* filewrite's on_write up to its "hot path" return. */
static __always_inline int fd_filter(__u64 fd)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	if (ignore_tgid != 0 && tgid == ignore_tgid)
		return 0;
	__u64 key = ((__u64)tgid << 32) | (__u32)fd;
	if (!bpf_map_lookup_elem(&tracked, &key))
		return 0;
	__u32 zero = 0;
	__u64 *n = bpf_map_lookup_elem(&hits, &zero);
	if (n)
		*n += 1;
	return 0;
}

/* filewrite's exit programs (copy, pathop, dup) start with a per-thread lookup. */
static __always_inline int pending_exit(void)
{
	__u64 id = bpf_get_current_pid_tgid();
	if (!bpf_map_lookup_elem(&pending, &id))
		return 0;
	bpf_map_delete_elem(&pending, &id);
	return 0;
}

/* The syscalls filewrite hooks at entry with a descriptor-keyed filter. Path syscalls
 * (rename*, truncate) stash their arguments in filewrite; they are not in the benchmark
 * workloads, so they stop at the switch here. */
static __always_inline int enter_switch(long id, __u64 fd)
{
	switch (id) {
	case NR_write:
	case NR_pwrite64:
	case NR_writev:
	case NR_pwritev:
	case NR_pwritev2:
	case NR_copy_file_range:
	case NR_sendfile:
	case NR_splice:
	case NR_close:
	case NR_ftruncate:
	case NR_mmap:
	case NR_io_uring_enter:
	case NR_dup:
	case NR_dup2:
	case NR_dup3:
	case NR_fcntl:
		return fd_filter(fd);
	}
	return 0;
}

static __always_inline int exit_switch(long id)
{
	switch (id) {
	case NR_copy_file_range:
	case NR_sendfile:
	case NR_splice:
	case NR_rename:
	case NR_renameat:
	case NR_renameat2:
	case NR_truncate:
	case NR_dup:
	case NR_dup2:
	case NR_dup3:
	case NR_fcntl:
		return pending_exit();
	}
	/* open*, io_uring_setup: filewrite checks the return value first; failed opens are
	 * rare and successful ones do the dentry walk in any design. */
	return 0;
}

SEC("raw_tp/sys_enter")
int raw_inline_enter(struct bpf_raw_tracepoint_args *ctx)
{
	struct pt_regs *regs = (struct pt_regs *)ctx->args[0];
	long id = ctx->args[1];
	switch (id) {
	case NR_write:
	case NR_pwrite64:
	case NR_writev:
	case NR_pwritev:
	case NR_pwritev2:
	case NR_copy_file_range:
	case NR_sendfile:
	case NR_splice:
	case NR_close:
	case NR_ftruncate:
	case NR_mmap:
	case NR_io_uring_enter:
	case NR_dup:
	case NR_dup2:
	case NR_dup3:
	case NR_fcntl:
		/* Read the argument only for the syscalls that need it: raw_tp has no BTF,
		 * so each register costs a probe_read. */
		return enter_switch(id, PT_REGS_PARM1_CORE_SYSCALL(regs));
	}
	return 0;
}

SEC("raw_tp/sys_exit")
int raw_inline_exit(struct bpf_raw_tracepoint_args *ctx)
{
	struct pt_regs *regs = (struct pt_regs *)ctx->args[0];
	return exit_switch(BPF_CORE_READ(regs, orig_ax));
}

SEC("tp_btf/sys_enter")
int BPF_PROG(btf_inline_enter, struct pt_regs *regs, long id)
{
	return enter_switch(id, regs->di);
}

SEC("tp_btf/sys_exit")
int BPF_PROG(btf_inline_exit, struct pt_regs *regs, long ret)
{
	return exit_switch(regs->orig_ax);
}

SEC("tp_btf/sys_enter")
int BPF_PROG(btf_tail_enter, struct pt_regs *regs, long id)
{
	bpf_tail_call(ctx, &enter_calls, (__u32)id);
	return 0; /* no program for this syscall */
}

SEC("tp_btf/sys_exit")
int BPF_PROG(btf_tail_exit, struct pt_regs *regs, long ret)
{
	bpf_tail_call(ctx, &exit_calls, (__u32)regs->orig_ax);
	return 0;
}

/* Tail-call targets: same program type and attach point as the dispatcher. */
SEC("tp_btf/sys_enter")
int BPF_PROG(btf_tail_fd_filter, struct pt_regs *regs, long id)
{
	return fd_filter(regs->di);
}

SEC("tp_btf/sys_exit")
int BPF_PROG(btf_tail_pending_exit, struct pt_regs *regs, long ret)
{
	return pending_exit();
}
