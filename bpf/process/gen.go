package process

// The BPF object is committed; regenerate after editing process.bpf.c or
// bpf/include/*.h. vmlinux.h is committed too and is not regenerated here.
//go:generate go tool bpf2go -cc clang -cflags "-O2 -g -Wall -Werror" -target bpfel -type exec_event -type exit_event -type fork_event process process.bpf.c -- -I../include
