package filewrite

// The BPF object is committed; regenerate after editing filewrite.bpf.c or
// bpf/include/*.h. vmlinux.h is committed too and is not regenerated here.
//go:generate go tool bpf2go -cc clang -cflags "-O2 -g -Wall -Werror" -target bpfel -type open_event -type write_event -type close_event -type watch_key -type tracked_fd -type pathop_event -type fdop_event filewrite filewrite.bpf.c -- -I../include
