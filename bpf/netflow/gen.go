package netflow

// The BPF object is committed; regenerate after editing netflow.bpf.c or
// bpf/include/*.h. vmlinux.h is committed too and is not regenerated here.
//go:generate go tool bpf2go -cc clang -cflags "-O2 -g -Wall -Werror" -target bpfel -type flow_event -type deny_key netflow netflow.bpf.c -- -I../include
