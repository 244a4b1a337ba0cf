//go:build ignore

// SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause
/*
 * Ward TLS plaintext probe: what a process sends (and optionally receives)
 * through a TLS library, before encryption, with the socket it goes to.
 *
 * Hooks (uprobes are attached per library file by the loader; every program
 * learns which library and direction it serves from its attach cookie):
 *   uprobe    rw_enter / uretprobe rw_exit
 *             (conn, buf, len) -> byte count: OpenSSL/BoringSSL SSL_write,
 *             SSL_read (int), GnuTLS gnutls_record_send/recv (ssize_t).
 *   uprobe    rw_ex_enter / uretprobe rw_ex_exit
 *             (conn, buf, len, size_t *done) -> 1 on success: SSL_write_ex,
 *             SSL_read_ex.
 *   uprobe    nspr_enter (+ rw_exit)
 *             NSPR PR_Write/PR_Send/PR_Read/PR_Recv on a layered descriptor
 *             whose bottom layer is a TCP socket (NSS puts its SSL layer on
 *             top of the socket; PR_Write on files and pipes is skipped).
 *   uprobe    go_write
 *             Go crypto/tls.(*Conn).Write, captured at entry (a uretprobe
 *             would corrupt Go's movable stacks). ABIInternal, amd64:
 *             receiver in RAX, slice pointer in RBX, length in RCX.
 *   tracepoint/syscalls/sys_enter_{write,writev,sendto,sendmsg}
 *             binds a library connection to its socket (below).
 *
 * Plaintext is copied at the return of the call, with the byte count the
 * library reports, so failed and retried calls (WANT_WRITE, E_AGAIN) are not
 * reported twice. The entry probe stashes its arguments per thread.
 *
 * Which socket? The TLS libraries hide the descriptor in private structs
 * whose layout changes between versions (OpenSSL BIOs, curl's own BIO,
 * GnuTLS transport pointers). Instead, while a thread is inside a hooked
 * call, the first write/writev/sendto/sendmsg it makes to an AF_INET/AF_INET6
 * stream socket names the connection: the library encrypts and sends on the
 * caller's thread. The binding is kept per (tgid, connection pointer) for
 * calls that make no syscall (reads, buffered writes) and checked by every
 * call that does: a send on another socket (a reused pointer) reads the new
 * socket's addresses, a send on the same one costs the fd-table walk and one
 * comparison of struct sock pointers. Go is the
 * exception: its Write is not returned to, so the descriptor is read from
 * tls.Conn -> net.Conn -> *netFD -> poll.FD.Sysfd (layouts stable since
 * Go 1.9) and checked to be a socket of the calling process. The socket gives
 * the kernel cookie (joined with bpf/netflow records) and the 4-tuple.
 *
 * Known gaps: reads on a connection that never wrote through a hooked call
 * carry no socket; x86-64 only (register access); Go reads are not hooked.
 */
#include "vmlinux.h"
#include "ward_common.h"
#include <bpf/bpf_endian.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define EV_DATA 1

/* Attach cookie layout, mirrored in tlsplain.go. */
#define COOKIE_LIB_MASK 0xff
#define COOKIE_RECV (1 << 8)  /* the call receives (read/recv) */
#define COOKIE_RET32 (1 << 9) /* the byte count is a C int, not ssize_t */

#define FLAG_TRUNCATED (1 << 0)   /* the call moved more than max_capture */
#define FLAG_READ_FAILED (1 << 1) /* the user buffer could not be read */
#define FLAG_AT_ENTRY (1 << 2)    /* captured at entry: total is what was asked */

#define AF_INET 2
#define AF_INET6 10
#define SOCK_STREAM 1
#define S_IFMT 00170000
#define S_IFSOCK 0140000

/* NSPR (prio.h, public ABI). */
#define PR_DESC_SOCKET_TCP 2
#define PR_DESC_LAYERED 4
#define NSPR_MAX_LAYERS 8

/*
 * One ring record holds at most CHUNK bytes; a call is split into up to
 * MAX_CHUNKS records. max_capture (set by the loader) bounds a call.
 */
#define CHUNK (16 * 1024)
#define MAX_CHUNKS 16

const volatile __u32 max_capture = 64 * 1024;

/*
 * Wake the reader only when this much is pending: a notification per record
 * costs more than copying a small record (an irq_work per call). The loader
 * flushes the ring periodically, so a quiet ring is still read.
 */
const volatile __u32 wakeup_bytes = 256 * 1024;

struct sock_info {
	__u64 cookie; /* kernel socket cookie, 0 when nobody asked for one */
	__s32 fd;
	__u16 family; /* 0: no socket known */
	__u16 sport;  /* host order */
	__u16 dport;
	__u16 _pad[3];
	__u8 saddr[16]; /* network order; IPv4 in the first 4 bytes */
	__u8 daddr[16];
};

struct tls_event {
	__u32 type;
	__u32 tgid;
	__u64 ts_boot_ns;
	__u64 conn; /* SSL *, gnutls_session_t, PRFileDesc *, *tls.Conn */
	__u32 tid;
	__u32 uid;
	__u32 gid;
	__u8 lib;
	__u8 recv;
	__u16 flags;
	__u32 total;  /* bytes the call moved (asked, with FLAG_AT_ENTRY) */
	__u32 offset; /* of this record's data within the call */
	__u32 len;    /* bytes of data following the header */
	__u32 _pad;
	struct sock_info sock;
	char comm[WARD_TASK_COMM_LEN];
};

/* A call in flight on one thread, from entry to return. */
struct inflight {
	__u64 conn;
	__u64 buf;
	__u64 done_ptr; /* _ex variants: where the library stores the count */
	__u64 cookie;
	__u32 bound; /* BOUND_*: where sock below comes from */
	__u32 _pad;
	__u64 sk; /* kernel struct sock * of sock */
	struct sock_info sock;
};

/* What the probe remembers of a connection: its socket. */
struct conn_state {
	__u64 sk;
	struct sock_info sock;
};

#define BOUND_NONE 0
#define BOUND_LEARNED 1 /* resolved from a socket send during this call */
#define BOUND_CACHED 2  /* the connection's last socket, not yet confirmed by a send */
#define BOUND_CONFIRMED 3 /* cached, and this call sent on that same socket */

struct conn_key {
	__u64 conn;
	__u32 tgid;
	__u32 _pad;
};

struct scratch {
	struct tls_event hdr;
	__u8 data[CHUNK];
};

const struct tls_event *unused_tls_event __attribute__((unused));

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 8 << 20); /* overridden by the loader */
} events SEC(".maps");

/* Keyed by pid_tgid: one call in flight per thread (the calls do not nest). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct inflight);
} inflight SEC(".maps");

/* Last socket seen for each library connection. LRU: freed connections age out. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct conn_key);
	__type(value, struct conn_state);
} conns SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct scratch);
} scratch SEC(".maps");

/*
 * Hooked calls in flight on the host (entries in `inflight`). The syscall
 * tracepoints read it first: while no thread is inside a TLS call, a write
 * costs one array load (inlined by the verifier), not a hash lookup. A thread
 * that dies inside a call leaves it too high; the loader recounts it from
 * `inflight` periodically.
 */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __s64);
} active SEC(".maps");

static __always_inline void active_add(__s64 d)
{
	__u32 zero = 0;
	__s64 *v = bpf_map_lookup_elem(&active, &zero);
	if (v)
		__sync_fetch_and_add(v, d);
}

/* The IPv4/IPv6 stream socket behind fd of the current task, or NULL. */
static __always_inline struct sock *sk_of_fd(__s64 fd)
{
	if (fd < 0 || fd > 0x7fffffff)
		return NULL;
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
	if (!fdt || (__u64)fd >= BPF_CORE_READ(fdt, max_fds))
		return NULL;
	struct file **fds = BPF_CORE_READ(fdt, fd);
	struct file *f = NULL;
	if (bpf_probe_read_kernel(&f, sizeof(f), &fds[fd]) < 0 || !f)
		return NULL;
	umode_t mode = BPF_CORE_READ(f, f_inode, i_mode);
	if ((mode & S_IFMT) != S_IFSOCK)
		return NULL;
	struct socket *so = BPF_CORE_READ(f, private_data);
	struct sock *sk = so ? BPF_CORE_READ(so, sk) : NULL;
	if (!sk)
		return NULL;
	__u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);
	if ((family != AF_INET && family != AF_INET6) || BPF_CORE_READ(sk, sk_type) != SOCK_STREAM)
		return NULL;
	return sk;
}

/* Fills si from a socket sk_of_fd returned. */
static __always_inline void fill_sock(struct sock *sk, __s64 fd, struct sock_info *si)
{
	__u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);
	si->fd = (__s32)fd;
	si->family = family;
	si->sport = BPF_CORE_READ(sk, __sk_common.skc_num);
	si->dport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	if (bpf_core_read(&si->cookie, sizeof(si->cookie), &sk->__sk_common.skc_cookie.counter) < 0)
		si->cookie = 0;
	long err;
	if (family == AF_INET6)
		err = bpf_core_read(si->saddr, 16, &sk->__sk_common.skc_v6_rcv_saddr) |
		      bpf_core_read(si->daddr, 16, &sk->__sk_common.skc_v6_daddr);
	else
		err = bpf_core_read(si->saddr, 4, &sk->__sk_common.skc_rcv_saddr) |
		      bpf_core_read(si->daddr, 4, &sk->__sk_common.skc_daddr);
	if (err)
		ward_count_drop(WARD_DROP_READ_FAILED);
}

static __always_inline void stash(__u64 conn, __u64 buf, __u64 done_ptr, __u64 cookie)
{
	__u64 id = bpf_get_current_pid_tgid();
	if (ward_ignored(id >> 32))
		return;
	struct inflight in = {.conn = conn, .buf = buf, .done_ptr = done_ptr, .cookie = cookie};
	/* Start from the connection's last socket: a send on the same descriptor then only
	 * confirms it, instead of resolving the socket and rewriting the map on every call. */
	struct conn_key k = {.conn = conn, .tgid = id >> 32};
	struct conn_state *known = bpf_map_lookup_elem(&conns, &k);
	if (known) {
		in.sock = known->sock;
		in.sk = known->sk;
		in.bound = BOUND_CACHED;
	}
	if (bpf_map_update_elem(&inflight, &id, &in, BPF_ANY) < 0) {
		ward_count_drop(WARD_DROP_MAP_FULL);
		return;
	}
	active_add(1);
}

/*
 * Copies up to max_capture bytes of buf into ring records of at most CHUNK
 * bytes each. total is what the call moved.
 */
static __always_inline void emit(__u64 conn, __u64 cookie, __u64 buf, __u64 total, __u16 flags,
				 struct sock_info *si)
{
	__u32 zero = 0;
	struct scratch *s = bpf_map_lookup_elem(&scratch, &zero);
	if (!s)
		return;
	__u64 id = bpf_get_current_pid_tgid();
	__u64 ug = bpf_get_current_uid_gid();
	struct tls_event *e = &s->hdr;
	e->type = EV_DATA;
	e->tgid = id >> 32;
	e->tid = (__u32)id;
	e->uid = (__u32)ug;
	e->gid = ug >> 32;
	e->ts_boot_ns = bpf_ktime_get_boot_ns();
	e->conn = conn;
	e->lib = cookie & COOKIE_LIB_MASK;
	e->recv = (cookie & COOKIE_RECV) ? 1 : 0;
	e->total = total > 0xffffffff ? 0xffffffff : (__u32)total;
	e->_pad = 0;
	if (si)
		e->sock = *si;
	else
		__builtin_memset(&e->sock, 0, sizeof(e->sock));
	bpf_get_current_comm(e->comm, sizeof(e->comm));

	__u64 want = total;
	__u32 cap = max_capture;
	if (cap > CHUNK * MAX_CHUNKS)
		cap = CHUNK * MAX_CHUNKS;
	if (want > cap) {
		want = cap;
		flags |= FLAG_TRUNCATED;
		ward_count_drop(WARD_DROP_TRUNCATED);
	}
	__u64 wake = bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) >= wakeup_bytes ? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP;
	__u32 off = 0;
	for (int i = 0; i < MAX_CHUNKS; i++) {
		if (off >= want)
			break;
		__u64 n = want - off;
		if (n > CHUNK)
			n = CHUNK;
		WARD_BARRIER_VAR(n);
		if (n > CHUNK || n == 0)
			break;
		e->offset = off;
		e->flags = flags;
		if (bpf_probe_read_user(s->data, n, (const void *)(buf + off)) < 0) {
			/* Not resident (or not user memory): report the gap, keep the call. */
			e->flags |= FLAG_READ_FAILED;
			ward_count_drop(WARD_DROP_READ_FAILED);
			e->len = 0;
			if (bpf_ringbuf_output(&events, s, sizeof(*e), wake) < 0)
				ward_count_drop(WARD_DROP_RINGBUF_FULL);
			return;
		}
		e->len = n;
		if (bpf_ringbuf_output(&events, s, sizeof(*e) + n, wake) < 0) {
			ward_count_drop(WARD_DROP_RINGBUF_FULL);
			return;
		}
		off += n;
	}
}

/* At return: the call moved n bytes (n <= 0: nothing, or an error). */
static __always_inline void finish(__s64 n)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct inflight *in = bpf_map_lookup_elem(&inflight, &id);
	if (!in)
		return;
	struct inflight c = *in;
	if (bpf_map_delete_elem(&inflight, &id) == 0)
		active_add(-1);
	if (n <= 0)
		return;
	struct sock_info *si = NULL;
	if (c.bound == BOUND_LEARNED) {
		struct conn_key k = {.conn = c.conn, .tgid = id >> 32};
		struct conn_state st = {.sk = c.sk, .sock = c.sock};
		if (bpf_map_update_elem(&conns, &k, &st, BPF_ANY) < 0)
			ward_count_drop(WARD_DROP_MAP_FULL);
	}
	if (c.bound != BOUND_NONE)
		si = &c.sock;
	emit(c.conn, c.cookie, c.buf, n, 0, si);
}

SEC("uprobe")
int rw_enter(struct pt_regs *ctx)
{
	stash(ctx->di, ctx->si, 0, bpf_get_attach_cookie(ctx));
	return 0;
}

SEC("uretprobe")
int rw_exit(struct pt_regs *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct inflight *in = bpf_map_lookup_elem(&inflight, &id);
	if (!in)
		return 0;
	__s64 n = (in->cookie & COOKIE_RET32) ? (__s64)(int)ctx->ax : (__s64)ctx->ax;
	finish(n);
	return 0;
}

SEC("uprobe")
int rw_ex_enter(struct pt_regs *ctx)
{
	stash(ctx->di, ctx->si, ctx->cx, bpf_get_attach_cookie(ctx));
	return 0;
}

SEC("uretprobe")
int rw_ex_exit(struct pt_regs *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct inflight *in = bpf_map_lookup_elem(&inflight, &id);
	if (!in)
		return 0;
	__u64 done = 0;
	if ((int)ctx->ax != 1 || !in->done_ptr ||
	    bpf_probe_read_user(&done, sizeof(done), (const void *)in->done_ptr) < 0)
		done = 0;
	finish((__s64)done);
	return 0;
}

SEC("uprobe")
int nspr_enter(struct pt_regs *ctx)
{
	/* struct PRFileDesc { const PRIOMethods *methods; PRFilePrivate *secret;
	 *                     PRFileDesc *lower, *higher; ... };
	 * struct PRIOMethods { PRDescType file_type; ... }; */
	__u64 fd = ctx->di, methods = 0;
	__u32 type = 0;
	if (bpf_probe_read_user(&methods, sizeof(methods), (const void *)fd) < 0 || !methods ||
	    bpf_probe_read_user(&type, sizeof(type), (const void *)methods) < 0 || type != PR_DESC_LAYERED)
		return 0; /* files, pipes, plain sockets: not TLS */
	__u64 p = fd;
	for (int i = 0; i < NSPR_MAX_LAYERS; i++) {
		__u64 lower = 0;
		if (bpf_probe_read_user(&lower, sizeof(lower), (const void *)(p + 16)) < 0)
			return 0;
		if (!lower)
			break;
		p = lower;
	}
	if (bpf_probe_read_user(&methods, sizeof(methods), (const void *)p) < 0 || !methods ||
	    bpf_probe_read_user(&type, sizeof(type), (const void *)methods) < 0 || type != PR_DESC_SOCKET_TCP)
		return 0;
	stash(fd, ctx->si, 0, bpf_get_attach_cookie(ctx));
	return 0;
}

SEC("uprobe")
int go_write(struct pt_regs *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	if (ward_ignored(id >> 32))
		return 0;
	__u64 conn = ctx->ax, buf = ctx->bx, len = ctx->cx;
	if (!conn || !buf || !len || (__s64)len < 0)
		return 0;
	/* tls.Conn{conn net.Conn} -> iface data (+8) -> *net.TCPConn{conn{fd *netFD}}
	 * -> netFD{pfd poll.FD{fdmu fdMutex (16 bytes), Sysfd int}} */
	__u64 data = 0, netfd = 0;
	__s64 sysfd = -1;
	struct sock *sk = NULL;
	if (bpf_probe_read_user(&data, sizeof(data), (const void *)(conn + 8)) == 0 && data &&
	    bpf_probe_read_user(&netfd, sizeof(netfd), (const void *)data) == 0 && netfd &&
	    bpf_probe_read_user(&sysfd, sizeof(sysfd), (const void *)(netfd + 16)) == 0)
		sk = sk_of_fd(sysfd);
	struct conn_key k = {.conn = conn, .tgid = id >> 32};
	struct conn_state *known = bpf_map_lookup_elem(&conns, &k);
	struct sock_info *sp = NULL;
	if (sk && known && known->sk == (__u64)sk) {
		sp = &known->sock; /* the same socket as last time */
	} else if (sk) {
		struct conn_state st = {.sk = (__u64)sk};
		fill_sock(sk, sysfd, &st.sock);
		if (bpf_map_update_elem(&conns, &k, &st, BPF_ANY) < 0)
			ward_count_drop(WARD_DROP_MAP_FULL);
		emit(conn, bpf_get_attach_cookie(ctx), buf, len, FLAG_AT_ENTRY, &st.sock);
		return 0;
	} else if (known) {
		sp = &known->sock;
	}
	emit(conn, bpf_get_attach_cookie(ctx), buf, len, FLAG_AT_ENTRY, sp);
	return 0;
}

/* A socket send inside a hooked call names the call's connection. */
static __always_inline int bind_send(__s64 fd)
{
	__u32 zero = 0;
	__s64 *n = bpf_map_lookup_elem(&active, &zero);
	if (!n || *n <= 0)
		return 0; /* hot path: no TLS call in flight anywhere */
	__u64 id = bpf_get_current_pid_tgid();
	struct inflight *in = bpf_map_lookup_elem(&inflight, &id);
	if (!in || in->bound == BOUND_LEARNED || in->bound == BOUND_CONFIRMED)
		return 0; /* a write by a thread not inside a TLS call */
	struct sock *sk = sk_of_fd(fd);
	if (!sk)
		return 0;
	if (in->bound == BOUND_CACHED && in->sk == (__u64)sk) {
		in->bound = BOUND_CONFIRMED; /* the same socket as last time */
		return 0;
	}
	fill_sock(sk, fd, &in->sock);
	in->sk = (__u64)sk;
	in->bound = BOUND_LEARNED;
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_write")
int enter_write(struct trace_event_raw_sys_enter *ctx)
{
	return bind_send(ctx->args[0]);
}

SEC("tracepoint/syscalls/sys_enter_writev")
int enter_writev(struct trace_event_raw_sys_enter *ctx)
{
	return bind_send(ctx->args[0]);
}

SEC("tracepoint/syscalls/sys_enter_sendto")
int enter_sendto(struct trace_event_raw_sys_enter *ctx)
{
	return bind_send(ctx->args[0]);
}

SEC("tracepoint/syscalls/sys_enter_sendmsg")
int enter_sendmsg(struct trace_event_raw_sys_enter *ctx)
{
	return bind_send(ctx->args[0]);
}

/* The floor for benchmarks: what a uprobe costs before Ward does anything. */
SEC("uprobe")
int noop(struct pt_regs *ctx)
{
	return 0;
}
