package benchfloor

// The BPF object is committed; regenerate after editing benchfloor.bpf.c. vmlinux.h is
// shared with the other capabilities. x86-64 only: the dispatcher switches on x86-64
// syscall numbers and reads pt_regs.
//go:generate go tool bpf2go -cc clang -cflags "-O2 -g -Wall -Werror" -target amd64 benchfloor benchfloor.bpf.c -- -I../include
