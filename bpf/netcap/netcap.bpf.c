//go:build ignore

// SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause
/*
 * Ward packet capture: the first packets of every flow, for the network
 * intelligence parsers (TLS/QUIC ClientHello, DNS, HTTP Host, STUN), joined
 * to the owning process by socket cookie. Also the packet half of
 * enforcement: traffic of a socket the agent marked (a TLS/QUIC flow whose
 * server name belongs to a blocked app) is dropped.
 *
 * Hooks:
 *   cgroup_skb/egress, cgroup_skb/ingress on the cgroup v2 root (preferred):
 *     every packet of every local socket on every interface, including ones
 *     that appear later; skb->sk is the owning socket, so the socket cookie
 *     and per-socket storage are at hand.
 *   tcx/egress, tcx/ingress per interface (fallback when cgroup_skb cannot
 *     attach): the loader attaches to each link and follows new links over
 *     netlink. Ingress packets have no socket yet (cookie 0); flows are then
 *     joined by their 5-tuple.
 *
 * The data of a record starts at the IP header (the L2 header is skipped on
 * tcx) and holds at most snap_len bytes of the packet.
 *
 * Budget: per flow direction, at most max_packets packets and max_bytes
 * captured bytes. The flow key is (socket cookie, remote address and port,
 * local port, protocol), so an unconnected UDP socket talking to several
 * peers (WebRTC, a DNS stub) gets a budget per peer. TCP sockets keep their
 * budget in socket-local storage (one pointer dereference per packet once
 * the budget is spent); everything else in an LRU hash.
 *
 * DNS (UDP port 53 either side) is always captured, bounded by a per-CPU
 * rate (dns_per_sec), so the agent's IP->name cache fills even for a
 * resolver socket whose budget is spent.
 *
 * Loopback: a packet between two local sockets passes the sender's egress
 * and the receiver's ingress; ingress on the loopback device (ifindex 1 in
 * every network namespace) is skipped so it is captured once.
 *
 * The programs never drop a packet unless the agent put its socket cookie
 * in `drop_cookies` (enforcement). cgroup_skb returns 1 (pass), tcx
 * TCX_NEXT.
 */
#include "vmlinux.h"
#include "ward_common.h"
#include <bpf/bpf_endian.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define IPPROTO_TCP 6
#define IPPROTO_UDP 17

#define DIR_EGRESS 0
#define DIR_INGRESS 1

#define REC_PACKET 1
#define REC_DROP 2

#define F_DNS 1       /* captured under the DNS rule, not the flow budget */
#define F_TRUNCATED 2 /* the packet is longer than the capture */
#define F_TCX 4       /* captured by the tcx fallback */

#define HOOK_CGROUP 0
#define HOOK_TCX 1

#define LOOPBACK_IFINDEX 1

/* Largest capture per record (snap_len is clamped to it). */
#define CAP_MAX 4096

/* Counters (not drops): what the programs saw and skipped. Keep in the order
 * of counterNames in netcap.go. */
enum cap_counter {
	C_PACKETS = 0,      /* packets the programs ran on */
	C_CAPTURED = 1,     /* records emitted */
	C_DNS = 2,          /* of which under the DNS rule */
	C_OVER_BUDGET = 3,  /* flow budget spent: not captured */
	C_DNS_LIMITED = 4,  /* DNS packets over the per-CPU rate */
	C_NOT_IP = 5,       /* not IPv4/IPv6 */
	C_NOT_TCPUDP = 6,   /* other protocols, IPv6 extension headers, later fragments */
	C_LOOPBACK_IN = 7,  /* loopback ingress (already seen at egress) */
	C_ENFORCED = 8,     /* packets dropped by enforcement */
	C_SELF = 9,         /* the agent's own packets */
	C_MAX = 10,
};

struct cap_hdr {
	__u64 ts_boot_ns;
	__u64 cookie;   /* socket cookie, 0 when the packet has no socket (tcx ingress) */
	__u32 pkt_len;  /* bytes of the packet from the IP header on */
	__u32 ifindex;
	__u16 cap_len;  /* bytes of data following the header */
	__u8 dir;       /* DIR_EGRESS / DIR_INGRESS */
	__u8 flags;     /* F_* */
	__u8 type;      /* REC_PACKET / REC_DROP */
	__u8 _pad[3];
	__u32 rule;     /* REC_DROP: the rule the agent gave with the cookie */
};

struct cap_rec {
	struct cap_hdr h;
	__u8 data[CAP_MAX];
};

struct flow_key {
	__u64 cookie;
	__u8 remote[16];
	__u16 rport;
	__u16 lport;
	__u8 proto;
	__u8 _pad[3];
};

struct budget {
	__u32 pkts[2];
	__u32 bytes[2];
};

struct drop_val {
	__u32 rule;
	__u32 reported;
};

struct dns_rate {
	__u64 window;
	__u32 count;
	__u32 _pad;
};

/* The agent's switchboard (array: the lookup is inlined by the verifier). */
struct ctl {
	__u32 drops_active; /* drop_cookies has entries */
	__u32 _pad;
};

const struct cap_hdr *unused_cap_hdr __attribute__((unused));
const struct flow_key *unused_flow_key __attribute__((unused));
const struct drop_val *unused_drop_val __attribute__((unused));

const volatile __u32 max_packets = 10;
const volatile __u32 max_bytes = 8192;
const volatile __u32 snap_len = 2048;
const volatile __u32 dns_per_sec = 2000;

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct budget);
} sk_budget SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct flow_key);
	__type(value, struct budget);
} flow_budget SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct drop_val);
} drop_cookies SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ctl);
} ctl SEC(".maps");

/* tcx: bytes of link-layer header per interface (set by the loader). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, __u32);
} l2_len SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct cap_rec);
} scratch SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct dns_rate);
} dns_rate SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, C_MAX);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 8 << 20); /* overridden by the loader */
} events SEC(".maps");

static __always_inline void count(__u32 c)
{
	__u64 *v = bpf_map_lookup_elem(&counters, &c);
	if (v)
		*v += 1;
}

/* Enforcement: drop the packet when the agent marked its socket. */
static __always_inline bool enforce_drop(__u64 cookie, __u8 dir, __u32 ifindex)
{
	__u32 zero = 0;
	struct ctl *c = bpf_map_lookup_elem(&ctl, &zero);
	if (!c || !c->drops_active || cookie == 0)
		return false;
	struct drop_val *d = bpf_map_lookup_elem(&drop_cookies, &cookie);
	if (!d)
		return false;
	count(C_ENFORCED);
	if (!d->reported) {
		d->reported = 1;
		struct cap_hdr h = {};
		h.ts_boot_ns = bpf_ktime_get_boot_ns();
		h.cookie = cookie;
		h.ifindex = ifindex;
		h.dir = dir;
		h.type = REC_DROP;
		h.rule = d->rule;
		if (bpf_ringbuf_output(&events, &h, sizeof(h), 0) < 0)
			ward_count_drop(WARD_DROP_RINGBUF_FULL);
	}
	return true;
}

/* DNS is captured past the flow budget, at most dns_per_sec per CPU. */
static __always_inline bool dns_allowed(void)
{
	__u32 zero = 0;
	struct dns_rate *r = bpf_map_lookup_elem(&dns_rate, &zero);
	if (!r)
		return false;
	__u64 win = bpf_ktime_get_boot_ns() / 1000000000ULL;
	if (r->window != win) {
		r->window = win;
		r->count = 0;
	}
	if (r->count >= dns_per_sec) {
		count(C_DNS_LIMITED);
		return false;
	}
	r->count++;
	return true;
}

/*
 * capture runs on one packet whose IP header is at offset l2 of skb. It
 * returns true when enforcement wants the packet dropped.
 */
static __always_inline bool capture(struct __sk_buff *skb, __u8 dir, __u32 l2, int hook)
{
	count(C_PACKETS);
	__u64 cookie = bpf_get_socket_cookie(skb);
	if (enforce_drop(cookie, dir, skb->ifindex))
		return true;
	if (dir == DIR_INGRESS && skb->ifindex == LOOPBACK_IFINDEX) {
		count(C_LOOPBACK_IN);
		return false;
	}
	if (dir == DIR_EGRESS && ward_ignore_tgid != 0 && (bpf_get_current_pid_tgid() >> 32) == ward_ignore_tgid) {
		count(C_SELF);
		return false;
	}

	/* Socket-local budget for full TCP sockets: the cheap path for the
	 * bulk of packets, which belong to flows whose budget is spent. */
	struct budget *b = NULL;
	struct bpf_sock *sk = NULL;
	struct bpf_sock *any = hook == HOOK_CGROUP ? skb->sk : NULL;
	if (any) {
		sk = bpf_sk_fullsock(any);
		if (sk && sk->protocol == IPPROTO_TCP) {
			b = bpf_sk_storage_get(&sk_budget, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
			if (b && (b->pkts[dir] >= max_packets || b->bytes[dir] >= max_bytes)) {
				count(C_OVER_BUDGET);
				return false;
			}
		}
	}

	__u8 hdr[40];
	if (bpf_skb_load_bytes(skb, l2, hdr, 20) < 0) {
		count(C_NOT_IP);
		return false;
	}
	struct flow_key k = {};
	k.cookie = cookie;
	__u32 l4off;
	__u8 ver = hdr[0] >> 4;
	if (ver == 4) {
		__u32 ihl = (hdr[0] & 0x0f) * 4;
		__u16 frag = ((__u16)hdr[6] << 8) | hdr[7];
		if (ihl < 20 || (frag & 0x1fff) != 0) {
			count(C_NOT_TCPUDP); /* a later fragment carries no ports */
			return false;
		}
		k.proto = hdr[9];
		__builtin_memcpy(k.remote, dir == DIR_EGRESS ? &hdr[16] : &hdr[12], 4);
		l4off = l2 + ihl;
	} else if (ver == 6) {
		if (bpf_skb_load_bytes(skb, l2, hdr, 40) < 0) {
			count(C_NOT_IP);
			return false;
		}
		k.proto = hdr[6];
		__builtin_memcpy(k.remote, dir == DIR_EGRESS ? &hdr[24] : &hdr[8], 16);
		l4off = l2 + 40;
	} else {
		count(C_NOT_IP);
		return false;
	}
	if (k.proto != IPPROTO_TCP && k.proto != IPPROTO_UDP) {
		count(C_NOT_TCPUDP);
		return false;
	}
	__u16 ports[2];
	if (bpf_skb_load_bytes(skb, l4off, ports, 4) < 0) {
		count(C_NOT_TCPUDP);
		return false;
	}
	__u16 sport = bpf_ntohs(ports[0]), dport = bpf_ntohs(ports[1]);
	k.rport = dir == DIR_EGRESS ? dport : sport;
	k.lport = dir == DIR_EGRESS ? sport : dport;

	__u8 flags = hook == HOOK_TCX ? F_TCX : 0;
	if (!b) {
		b = bpf_map_lookup_elem(&flow_budget, &k);
		if (!b) {
			/* EEXIST when another CPU created it first: fine. */
			struct budget fresh = {};
			bpf_map_update_elem(&flow_budget, &k, &fresh, BPF_NOEXIST);
			b = bpf_map_lookup_elem(&flow_budget, &k);
			if (!b)
				ward_count_drop(WARD_DROP_MAP_FULL);
		}
	}
	bool over = !b || b->pkts[dir] >= max_packets || b->bytes[dir] >= max_bytes;
	if (over) {
		if (k.proto == IPPROTO_UDP && (sport == 53 || dport == 53) && dns_allowed()) {
			flags |= F_DNS;
		} else {
			count(C_OVER_BUDGET);
			return false;
		}
	}

	__u32 zero = 0;
	struct cap_rec *r = bpf_map_lookup_elem(&scratch, &zero);
	if (!r)
		return false;
	__u32 pkt = skb->len > l2 ? skb->len - l2 : 0;
	__u32 len = pkt;
	if (len > snap_len)
		len = snap_len;
	if (len > CAP_MAX)
		len = CAP_MAX;
	if (len < pkt)
		flags |= F_TRUNCATED;
	if (len < 1)
		return false;
	/* Identity for 1..CAP_MAX; lets the verifier prove the bounds. */
	len = ((len - 1) & (CAP_MAX - 1)) + 1;
	WARD_BARRIER_VAR(len);
	if (bpf_skb_load_bytes(skb, l2, r->data, len) < 0) {
		ward_count_drop(WARD_DROP_READ_FAILED);
		return false;
	}
	r->h.ts_boot_ns = bpf_ktime_get_boot_ns();
	r->h.cookie = cookie;
	r->h.pkt_len = pkt;
	r->h.ifindex = skb->ifindex;
	r->h.cap_len = len;
	r->h.dir = dir;
	r->h.flags = flags;
	r->h.type = REC_PACKET;
	r->h.rule = 0;
	if (bpf_ringbuf_output(&events, r, sizeof(r->h) + len, 0) < 0) {
		ward_count_drop(WARD_DROP_RINGBUF_FULL);
		return false;
	}
	if ((flags & F_DNS) && len < pkt)
		ward_count_drop(WARD_DROP_TRUNCATED); /* a DNS answer cut by snap_len */
	count(C_CAPTURED);
	if (flags & F_DNS) {
		count(C_DNS);
	} else if (b) {
		/* Per-socket or per-flow state may be updated on several CPUs
		 * at once; an off-by-one in a capture budget is harmless. */
		b->pkts[dir] += 1;
		b->bytes[dir] += len;
	}
	return false;
}

SEC("cgroup_skb/egress")
int cg_egress(struct __sk_buff *skb)
{
	return capture(skb, DIR_EGRESS, 0, HOOK_CGROUP) ? 0 : 1;
}

SEC("cgroup_skb/ingress")
int cg_ingress(struct __sk_buff *skb)
{
	return capture(skb, DIR_INGRESS, 0, HOOK_CGROUP) ? 0 : 1;
}

static __always_inline __u32 tc_l2(struct __sk_buff *skb)
{
	__u32 ifindex = skb->ifindex;
	__u32 *l2 = bpf_map_lookup_elem(&l2_len, &ifindex);
	return l2 ? *l2 : 14;
}

SEC("tcx/egress")
int tc_egress(struct __sk_buff *skb)
{
	return capture(skb, DIR_EGRESS, tc_l2(skb), HOOK_TCX) ? TCX_DROP : TCX_NEXT;
}

SEC("tcx/ingress")
int tc_ingress(struct __sk_buff *skb)
{
	return capture(skb, DIR_INGRESS, tc_l2(skb), HOOK_TCX) ? TCX_DROP : TCX_NEXT;
}
