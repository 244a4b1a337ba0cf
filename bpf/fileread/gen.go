package fileread

// The BPF object is committed; regenerate after editing fileread.bpf.c or
// bpf/include/*.h. vmlinux.h is committed too and is not regenerated here.
//go:generate go tool bpf2go -cc clang -cflags "-O2 -g -Wall -Werror" -target bpfel -type read_event -type inode_key -type emit_key fileread fileread.bpf.c -- -I../include
