package netcap

// The BPF object is committed; regenerate after editing netcap.bpf.c or
// bpf/include/*.h. vmlinux.h is committed too and is not regenerated here.
//go:generate go tool bpf2go -cc clang -cflags "-O2 -g -Wall -Werror" -target bpfel -type cap_hdr -type flow_key -type drop_val netcap netcap.bpf.c -- -I../include
