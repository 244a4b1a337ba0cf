package tlsplain

// The BPF object is committed; regenerate after editing tlsplain.bpf.c or
// bpf/include/*.h. vmlinux.h is committed too and is not regenerated here.
//go:generate go tool bpf2go -cc clang -cflags "-O2 -g -Wall -Werror" -target bpfel -type tls_event -type sock_info tlsplain tlsplain.bpf.c -- -I../include
