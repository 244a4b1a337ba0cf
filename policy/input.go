package policy

import "time"

// Input is the facts one decision is made on. Sensors fill what they know; everything else
// stays empty. Field comments name the CEL attribute each field is visible as.
type Input struct {
	// Time is when the activity happened (time); it also drives mass-export windows and the
	// expiry of exceptions and consents, so replays decide as the original did.
	Time time.Time
	// Kind is event.kind: file-write, network or process.
	Kind string
	// Classes maps each data class found to the highest confidence (0-100) seen for it
	// (data.classes; data.detected lists the classes at or above the bundle's thresholds).
	Classes map[Class]int
	// Records is how many records (identifier occurrences) the content holds (data.records).
	Records int64
	// Bytes is the size of the content (data.bytes).
	Bytes int64
	// Detectors names the detectors that matched (data.detectors).
	Detectors []string
	// Patients are keyed fingerprints of EDM-matched patient identifiers (data.patients),
	// matched against the consent registry.
	Patients []string
	// Document is the SHA-256 (hex) of the content, matched against consents naming documents.
	Document string

	Destination Destination
	App         AppInput
	Network     Network
	File        File
	Process     Process
	User        User
	Host        Host
	Lineage     Lineage
}

// Lineage is the regulated data the acting process may carry because it, or the ancestor
// that started it, read a file known to hold it (lineage.*): the classes (lineage.classes,
// e.g. ["part2"]) and the source files' paths (lineage.sources). Empty for a clean process.
type Lineage struct {
	Classes []string
	Sources []string
}

// Destination is where the content is going (destination.*).
type Destination struct {
	// Kind is one of the Dest* constants.
	Kind   string
	Path   string
	Domain string
	Org    string
	// Address and Port are the remote endpoint of a network send (destination.address,
	// destination.port); Address is an IP literal, IPv4 without the ::ffff: prefix.
	Address string
	Port    int64
}

// AppInput is the application involved (app.*). When Name is empty the policy recognises the
// app from the process name or the destination domain using the bundle's apps list.
type AppInput struct {
	Name       string
	Category   string
	Sanctioned bool
	Purpose    string
}

// Network carries what network intelligence saw (network.*): Evasion lists techniques such
// as "doh" (DNS over HTTPS to an unsanctioned resolver) and "ech" (Encrypted Client Hello).
type Network struct {
	Evasion []string
	// Direction is "send" or "receive" for TLS plaintext (network.direction).
	Direction string
}

// File is the file written (file.*): Ext is the lower-case extension without the dot, Media
// is audio, video, image, document, archive or "" (see MediaKind).
type File struct {
	Path  string
	Ext   string
	Media string
}

// Process is the acting process (process.*): Name is the executable's base name.
type Process struct {
	Exe  string
	Name string
	Hash string
	Args []string
}

// User is the acting user (user.*), with the groups attribute-based rules test.
type User struct {
	Name   string
	UID    int64
	Groups []string
}

// Host is the machine (host.*): Tags come from the agent's configuration (e.g. "clinical").
type Host struct {
	Name string
	Tags []string
}

// MediaKind classifies a lower-case file extension for file.media.
func MediaKind(ext string) string {
	switch ext {
	case "mp4", "m4v", "mkv", "webm", "mov", "avi", "wmv", "flv", "ts", "3gp", "ogv":
		return "video"
	case "mp3", "m4a", "wav", "ogg", "oga", "opus", "flac", "aac", "wma", "amr", "weba":
		return "audio"
	case "png", "jpg", "jpeg", "gif", "bmp", "tif", "tiff", "heic", "webp":
		return "image"
	case "pdf", "doc", "docx", "odt", "rtf", "txt", "csv", "xls", "xlsx", "ods", "json", "xml", "hl7", "ccda", "md":
		return "document"
	case "zip", "7z", "tar", "gz", "tgz", "bz2", "xz", "zst", "rar":
		return "archive"
	}
	return ""
}
