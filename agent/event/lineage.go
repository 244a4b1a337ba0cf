package event

import (
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/ward-dlp/ward/agent/lineage"
	"github.com/ward-dlp/ward/agent/proc"
	wardv1 "github.com/ward-dlp/ward/api/ward/v1"
)

// Access reports a process opening a tagged file for reading. p is the process-table
// entry; when the table did not know the process, known is false and fallback (pid, uid,
// comm from the probe) is used.
func (b *Builder) Access(p proc.Info, known bool, fallback *wardv1.Process, tag lineage.Tag, readWrite bool, at time.Time) *wardv1.Event {
	pr := Process(p)
	if !known {
		pr = fallback
	}
	fa := &wardv1.FileAccess{
		Process: pr, Path: tag.Path, Device: uint64(tag.Dev), Inode: tag.Ino,
		DataClass: wardv1.DataClass(tag.Class), ReadWrite: readWrite, TagOrigin: tag.Origin,
	}
	if !tag.At.IsZero() {
		fa.TaggedAt = timestamppb.New(tag.At)
	}
	ev := b.envelope(at)
	ev.Payload = &wardv1.Event_Access{Access: fa}
	return ev
}

// Taints converts a process's lineage sources.
func Taints(ss []lineage.Source) []*wardv1.Taint {
	out := make([]*wardv1.Taint, 0, len(ss))
	for _, s := range ss {
		out = append(out, &wardv1.Taint{
			SourcePath: s.Path, Device: uint64(s.Dev), Inode: s.Ino, DataClass: wardv1.DataClass(s.Class),
			ReadTime: timestamppb.New(s.ReadTime), ReadByPid: s.ReadBy, Inherited: s.Inherited,
		})
	}
	return out
}
