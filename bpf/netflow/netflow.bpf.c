//go:build ignore

// SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause
/*
 * Ward network-flow probe: who connects where, how a TCP connection lives
 * and how many bytes it moved, and the kernel half of destination denial.
 *
 * Hooks (no kprobes, fentry or LSM):
 *   cgroup/connect4, connect6 : every connect(2) (TCP and UDP) in the cgroup
 *                               tree, in the caller's context: pid, uid,
 *                               comm, socket cookie, destination. A
 *                               destination in `denied` is refused (EPERM)
 *                               and reported as DENY. `denied` holds
 *                               addresses and CIDRs (LPM trie), per port
 *                               or for every port.
 *   cgroup/sendmsg4, sendmsg6 : unconnected UDP sends (sendto/sendmsg with
 *                               an address: DNS). One record per (socket,
 *                               destination) per second, with the number of
 *                               sends since the last one. Denied
 *                               destinations are refused too.
 *   tracepoint/sock/inet_sock_set_state :
 *                               TCP SYN_SENT, ESTABLISHED and CLOSE with the
 *                               full 4-tuple and, at CLOSE, tcp_sock's
 *                               bytes_acked / bytes_received (CO-RE).
 *
 * Records are joined in user space by socket cookie. connect4/6 create the
 * cookie (bpf_get_socket_cookie), and the state tracepoint reads it back
 * from sk->__sk_common.skc_cookie; sockets nobody asked a cookie for
 * (accepted server sockets) report cookie 0 and are joined by 4-tuple.
 *
 * Known gaps: the state tracepoint fires in softirq for ESTABLISHED and
 * most CLOSEs, so only CONNECT, SYN_SENT and UDP records carry a trustworthy
 * pid; connected-UDP sends and UDP socket close are not seen (connect4/6
 * reports the connect, user space ends the flow on idle); byte counts come
 * only from TCP (they count sequence space, so SYN and FIN can add up to 2
 * to the payload).
 */
#include "vmlinux.h"
#include "ward_common.h"
#include <bpf/bpf_endian.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define EV_CONNECT 1
#define EV_STATE 2
#define EV_UDP_SEND 3
#define EV_DENY 4

#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17

#define TCP_ESTABLISHED 1
#define TCP_SYN_SENT 2
#define TCP_CLOSE 7
#define TCP_LISTEN 10

#define DENY_VIA_CONNECT 1
#define DENY_VIA_SENDMSG 2

/* Re-report a UDP (socket, destination) at most this often. */
#define UDP_REPORT_NS 1000000000ULL

struct flow_event {
	__u32 type;
	__u32 tgid;   /* 0 when the hook ran outside the owning process */
	__u64 ts_boot_ns;
	__u64 cookie; /* socket cookie, 0 unknown */
	__u32 tid;
	__u32 uid;
	__u32 gid;
	__u16 family;   /* AF_INET / AF_INET6 */
	__u16 protocol; /* IPPROTO_TCP / IPPROTO_UDP */
	__u8 saddr[16]; /* network order; IPv4 in the first 4 bytes */
	__u8 daddr[16];
	__u16 sport;    /* host order, 0 when not bound yet */
	__u16 dport;
	__s32 oldstate; /* EV_STATE: TCP states; EV_DENY: DENY_VIA_* */
	__s32 newstate;
	__u32 count;    /* EV_UDP_SEND: sends since the last record */
	__u64 bytes_acked;
	__u64 bytes_received;
	char comm[WARD_TASK_COMM_LEN];
};

/*
 * A denied destination: an LPM-trie key. The first 32 bits (family, port)
 * always match exactly; prefixlen - 32 is the address prefix length, so a
 * CIDR is one entry. port 0 denies every port of the prefix.
 */
struct deny_key {
	__u32 prefixlen;
	__u16 family;
	__u16 port; /* host order */
	__u8 addr[16];
};

struct udp_key {
	__u64 cookie;
	__u16 family;
	__u16 port;
	__u32 _pad;
	__u8 addr[16];
};

struct udp_seen {
	__u64 last_ns;
	__u64 count; /* sends not yet reported */
};

const struct flow_event *unused_flow_event __attribute__((unused));
const struct deny_key *unused_deny_key __attribute__((unused));

/*
 * Filled by the agent from policy. The trie sits in slot 0 of an array of
 * maps so a new policy's whole deny list replaces the old one in a single
 * update (no moment with half of each); an empty slot means no enforcement.
 */
struct deny_trie {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct deny_key);
	__type(value, __u32); /* rule id, echoed in the DENY record's count */
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 1);
	__type(key, __u32);
	__array(values, struct deny_trie);
} denied SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct udp_key);
	__type(value, struct udp_seen);
} udp_seen SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4 << 20); /* overridden by the loader */
} events SEC(".maps");

static __always_inline void fill_task(struct flow_event *e)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u64 uid_gid = bpf_get_current_uid_gid();
	e->tgid = pid_tgid >> 32;
	e->tid = (__u32)pid_tgid;
	e->uid = (__u32)uid_gid;
	e->gid = uid_gid >> 32;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
}

static __always_inline void emit(struct flow_event *e)
{
	if (bpf_ringbuf_output(&events, e, sizeof(*e), 0) < 0)
		ward_count_drop(WARD_DROP_RINGBUF_FULL);
}

/* Destination of a sock_addr call into e (family, daddr, dport). */
static __always_inline void dest_of(struct bpf_sock_addr *ctx, struct flow_event *e, bool v6)
{
	if (v6) {
		e->family = AF_INET6;
		__u32 a0 = ctx->user_ip6[0], a1 = ctx->user_ip6[1];
		__u32 a2 = ctx->user_ip6[2], a3 = ctx->user_ip6[3];
		__builtin_memcpy(&e->daddr[0], &a0, 4);
		__builtin_memcpy(&e->daddr[4], &a1, 4);
		__builtin_memcpy(&e->daddr[8], &a2, 4);
		__builtin_memcpy(&e->daddr[12], &a3, 4);
	} else {
		e->family = AF_INET;
		__u32 a = ctx->user_ip4;
		__builtin_memcpy(&e->daddr[0], &a, 4);
	}
	e->dport = bpf_ntohs((__u16)ctx->user_port);
	e->protocol = ctx->protocol;
}

static __always_inline __u32 *deny_lookup(__u16 family, const __u8 *addr, __u16 port)
{
	__u32 zero = 0;
	void *trie = bpf_map_lookup_elem(&denied, &zero);
	if (!trie)
		return NULL; /* no deny list installed */
	struct deny_key k = { .family = family, .port = port };
	k.prefixlen = 32 + (family == AF_INET6 ? 128 : 32);
	__builtin_memcpy(k.addr, addr, 16);
	__u32 *rule = bpf_map_lookup_elem(trie, &k);
	if (rule)
		return rule;
	k.port = 0;
	return bpf_map_lookup_elem(trie, &k);
}

/* Rule id when e's destination is denied; IPv4-mapped IPv6 addresses are
 * also checked against IPv4 entries. */
static __always_inline __u32 *deny_match(struct flow_event *e)
{
	__u32 *rule = deny_lookup(e->family, e->daddr, e->dport);
	if (rule || e->family != AF_INET6)
		return rule;
	__u32 w0, w1, w2;
	__builtin_memcpy(&w0, &e->daddr[0], 4);
	__builtin_memcpy(&w1, &e->daddr[4], 4);
	__builtin_memcpy(&w2, &e->daddr[8], 4);
	if (w0 != 0 || w1 != 0 || w2 != bpf_htonl(0xffff))
		return NULL;
	__u8 v4[16] = {};
	__builtin_memcpy(v4, &e->daddr[12], 4);
	return deny_lookup(AF_INET, v4, e->dport);
}

static __always_inline int on_connect(struct bpf_sock_addr *ctx, bool v6)
{
	struct flow_event e = {};
	fill_task(&e);
	if (ward_ignored(e.tgid))
		return 1; /* the agent's own traffic is neither reported nor denied */
	e.ts_boot_ns = bpf_ktime_get_boot_ns();
	e.cookie = bpf_get_socket_cookie(ctx);
	dest_of(ctx, &e, v6);
	__u32 *rule = deny_match(&e);
	if (rule) {
		e.type = EV_DENY;
		e.oldstate = DENY_VIA_CONNECT;
		e.count = *rule;
		emit(&e);
		return 0; /* connect(2) fails with EPERM */
	}
	e.type = EV_CONNECT;
	emit(&e);
	return 1;
}

SEC("cgroup/connect4")
int connect4(struct bpf_sock_addr *ctx)
{
	return on_connect(ctx, false);
}

SEC("cgroup/connect6")
int connect6(struct bpf_sock_addr *ctx)
{
	return on_connect(ctx, true);
}

static __always_inline int on_sendmsg(struct bpf_sock_addr *ctx, bool v6)
{
	struct flow_event e = {};
	fill_task(&e);
	if (ward_ignored(e.tgid))
		return 1;
	e.cookie = bpf_get_socket_cookie(ctx);
	dest_of(ctx, &e, v6);
	__u32 *rule = deny_match(&e);
	if (rule) {
		e.ts_boot_ns = bpf_ktime_get_boot_ns();
		e.type = EV_DENY;
		e.oldstate = DENY_VIA_SENDMSG;
		e.count = *rule;
		emit(&e);
		return 0;
	}

	struct udp_key k = { .cookie = e.cookie, .family = e.family, .port = e.dport };
	__builtin_memcpy(k.addr, e.daddr, 16);
	__u64 now = bpf_ktime_get_boot_ns();
	struct udp_seen *s = bpf_map_lookup_elem(&udp_seen, &k);
	if (s) {
		__sync_fetch_and_add(&s->count, 1);
		if (now - s->last_ns < UDP_REPORT_NS)
			return 1; /* reported recently: counted, not emitted */
		/* Report what was counted and subtract exactly that, so sends
		 * counted concurrently on other CPUs are kept for next time. */
		__u64 n = s->count;
		__sync_fetch_and_add(&s->count, -n);
		e.count = n > 0xffffffff ? 0xffffffff : (__u32)n;
		s->last_ns = now;
	} else {
		struct udp_seen n = { .last_ns = now, .count = 0 };
		if (bpf_map_update_elem(&udp_seen, &k, &n, BPF_ANY) < 0)
			ward_count_drop(WARD_DROP_MAP_FULL);
		e.count = 1;
	}
	e.type = EV_UDP_SEND;
	e.ts_boot_ns = now;
	emit(&e);
	return 1;
}

SEC("cgroup/sendmsg4")
int sendmsg4(struct bpf_sock_addr *ctx)
{
	return on_sendmsg(ctx, false);
}

SEC("cgroup/sendmsg6")
int sendmsg6(struct bpf_sock_addr *ctx)
{
	return on_sendmsg(ctx, true);
}

SEC("tracepoint/sock/inet_sock_set_state")
int sock_set_state(struct trace_event_raw_inet_sock_set_state *ctx)
{
	if (ctx->protocol != IPPROTO_TCP)
		return 0;
	int oldstate = ctx->oldstate, newstate = ctx->newstate;
	bool want = (newstate == TCP_SYN_SENT) || (newstate == TCP_ESTABLISHED) ||
		    (newstate == TCP_CLOSE && oldstate != TCP_LISTEN);
	if (!want)
		return 0;

	struct flow_event e = {};
	struct sock *sk = (struct sock *)ctx->skaddr;
	e.type = EV_STATE;
	e.ts_boot_ns = bpf_ktime_get_boot_ns();
	e.family = ctx->family;
	e.protocol = IPPROTO_TCP;
	e.sport = ctx->sport;
	e.dport = ctx->dport;
	e.oldstate = oldstate;
	e.newstate = newstate;
	/* Tracepoint context arrays cannot be copied with variable-offset
	 * loads; the helper reads them (as libbpf-tools tcpstates does). */
	long err;
	if (e.family == AF_INET6)
		err = bpf_probe_read_kernel(e.saddr, 16, ctx->saddr_v6) |
		      bpf_probe_read_kernel(e.daddr, 16, ctx->daddr_v6);
	else
		err = bpf_probe_read_kernel(e.saddr, 4, ctx->saddr) |
		      bpf_probe_read_kernel(e.daddr, 4, ctx->daddr);
	if (err)
		ward_count_drop(WARD_DROP_READ_FAILED);
	if (bpf_core_read(&e.cookie, sizeof(e.cookie), &sk->__sk_common.skc_cookie.counter) < 0)
		ward_count_drop(WARD_DROP_READ_FAILED);
	/* SYN_SENT is set inside connect(2): the current task owns the socket.
	 * Later transitions mostly run in softirq on whatever task was there. */
	if (newstate == TCP_SYN_SENT) {
		fill_task(&e);
		if (ward_ignored(e.tgid))
			return 0;
	}
	if (newstate == TCP_CLOSE) {
		struct tcp_sock *tp = (struct tcp_sock *)sk;
		if (bpf_core_read(&e.bytes_acked, sizeof(e.bytes_acked), &tp->bytes_acked) < 0 ||
		    bpf_core_read(&e.bytes_received, sizeof(e.bytes_received), &tp->bytes_received) < 0)
			ward_count_drop(WARD_DROP_READ_FAILED);
	}
	emit(&e);
	return 0;
}
