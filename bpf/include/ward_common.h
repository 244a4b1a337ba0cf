// SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause
/*
 * Helpers shared by every Ward BPF program.
 *
 * Each program includes this header exactly once, so the maps declared here
 * are private to that object (one drop-counter array per capability).
 */
#ifndef WARD_COMMON_H
#define WARD_COMMON_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>

#define WARD_TASK_COMM_LEN 16

/*
 * Drop reasons. Indexes into ward_drops; the Go side (bpf/internal/kernel)
 * holds the matching names, keep both lists in the same order.
 */
enum ward_drop_reason {
	WARD_DROP_RINGBUF_FULL = 0,   /* bpf_ringbuf_reserve/output failed */
	WARD_DROP_MAP_FULL = 1,       /* tracked-fd map update failed */
	WARD_DROP_TRUNCATED = 2,      /* captured fewer bytes than requested */
	WARD_DROP_READ_FAILED = 3,    /* bpf_probe_read_* failed */
	WARD_DROP_PATH_TOO_DEEP = 4,  /* d_parent walk hit the depth bound */
	WARD_DROP_PATH_TOO_LONG = 5,  /* a path component name could not be copied */
	WARD_DROP_ARGS_TRUNCATED = 6, /* argv longer than the capture bound */
	WARD_DROP_MAX = 7,
};

/* Per-CPU so the hot path never contends on a shared cache line. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, WARD_DROP_MAX);
	__type(key, __u32);
	__type(value, __u64);
} ward_drops SEC(".maps");

static __always_inline void ward_count_drop(__u32 reason)
{
	__u64 *v = bpf_map_lookup_elem(&ward_drops, &reason);
	if (v)
		*v += 1; /* per-CPU slot: no atomic needed */
}

/*
 * Thread-group id of the agent itself, written by the loader before load.
 * Events caused by the agent are ignored so it can never feed on its own
 * writes (e.g. when it persists captured data into a watched directory).
 * 0 disables the filter.
 */
const volatile __u32 ward_ignore_tgid = 0;

static __always_inline bool ward_ignored(__u32 tgid)
{
	return ward_ignore_tgid != 0 && tgid == ward_ignore_tgid;
}

/* Keep the compiler from hoisting/merging bounds checks the verifier needs. */
#define WARD_BARRIER_VAR(v) asm volatile("" : "+r"(v))

#endif /* WARD_COMMON_H */
