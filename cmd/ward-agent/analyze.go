package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"runtime/pprof"
	"strings"

	"github.com/ward-dlp/ward/classifiers/catalog"
	"github.com/ward-dlp/ward/classifiers/traffic"
)

// analyzeCmd runs the network pipeline offline on a pcap/pcapng file: the same
// traffic.Analyzer the live path feeds, so what it prints is what the agent would ship.
func analyzeCmd(args []string) error {
	fs := flag.NewFlagSet("analyze", flag.ContinueOnError)
	pcapPath := fs.String("pcap", "", "pcap or pcapng file to analyse (- for standard input)")
	output := fs.String("o", "text", "output format: text or json (one object per line)")
	sanctioned := fs.String("sanctioned", "", "YAML file with the organisation's sanctioned/unsanctioned apps and tenants")
	catalogPath := fs.String("catalog", "", "application catalog file (default: the one built into ward-agent)")
	upload := fs.Uint64("upload-threshold", 10<<20, "bytes uploaded to one unsanctioned storage/AI app per host and hour that raise a detection")
	level := fs.String("log-level", "warn", "debug, info, warn or error")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the analysis to this file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *pcapPath == "" {
		return errors.New("analyze: --pcap FILE is required")
	}
	if *output != "text" && *output != "json" {
		return fmt.Errorf("analyze: -o %q: want text or json", *output)
	}
	log, err := newLogger(*level, "text", os.Stderr)
	if err != nil {
		return err
	}
	var cat *catalog.Catalog
	if *catalogPath != "" {
		b, err := os.ReadFile(*catalogPath)
		if err != nil {
			return fmt.Errorf("analyze: read catalog: %w", err)
		}
		if cat, err = catalog.Parse(b); err != nil {
			return fmt.Errorf("analyze: catalog %s: %w", *catalogPath, err)
		}
	} else if cat, err = catalog.Builtin(); err != nil {
		return fmt.Errorf("analyze: %w", err)
	}
	pol := catalog.DefaultPolicy()
	if *sanctioned != "" {
		if pol, err = catalog.LoadPolicy(*sanctioned, cat); err != nil {
			return fmt.Errorf("analyze: %w", err)
		}
	}
	var in io.Reader = os.Stdin
	if *pcapPath != "-" {
		f, err := os.Open(*pcapPath)
		if err != nil {
			return fmt.Errorf("analyze: %w", err)
		}
		defer f.Close()
		in = f
	}
	if *cpuProfile != "" {
		pf, err := os.Create(*cpuProfile)
		if err != nil {
			return fmt.Errorf("analyze: %w", err)
		}
		defer pf.Close()
		if err := pprof.StartCPUProfile(pf); err != nil {
			return fmt.Errorf("analyze: cpu profile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
	out := bufio.NewWriterSize(os.Stdout, 1<<16)
	defer out.Flush()
	p := newPrinter(out, *output == "json")
	a, err := traffic.New(traffic.Config{
		Catalog: cat, Policy: pol, Log: log, UploadBytes: *upload,
		MaxFlows:    1 << 20,
		OnRecord:    p.flow,
		OnDetection: p.detection,
	})
	if err != nil {
		return fmt.Errorf("analyze: %w", err)
	}
	// One pass over a file with little long-lived garbage: trade memory for fewer GCs.
	debug.SetGCPercent(400)
	n, rerr := traffic.ReadCapture(in, a)
	a.Flush()
	p.finish(a.Stats(), cat.Version)
	if p.err != nil {
		return fmt.Errorf("analyze: write output: %w", p.err)
	}
	log.Info("analyze done", "packets", n, "flows", a.Stats().FlowsCreated, "detections", a.Stats().Detections)
	if rerr != nil {
		return fmt.Errorf("analyze %s: %w", *pcapPath, rerr)
	}
	return nil
}

type printer struct {
	w      *bufio.Writer
	json   bool
	enc    *json.Encoder
	dets   []traffic.Detection
	header bool
	buf    []byte
	err    error
}

func newPrinter(w *bufio.Writer, asJSON bool) *printer {
	p := &printer{w: w, json: asJSON}
	if asJSON {
		p.enc = json.NewEncoder(w)
		p.enc.SetEscapeHTML(false)
	}
	return p
}

type jsonDetection struct {
	Type string `json:"type"`
	*traffic.Detection
}

type jsonStats struct {
	Type    string `json:"type"`
	Catalog string `json:"catalog_version"`
	traffic.Stats
}

func (p *printer) flow(r traffic.FlowRecord) {
	if p.err != nil {
		return
	}
	if p.json {
		p.buf = append(r.AppendJSON(p.buf[:0], `"type":"flow",`), '\n')
		_, p.err = p.w.Write(p.buf)
		return
	}
	if !p.header {
		p.header = true
		_, p.err = fmt.Fprintf(p.w, "%-24s %-5s %-40s %-40s %-22s %-18s %-12s %-44s %-6s %-8s %-36s %s\n",
			"START", "PROTO", "CLIENT", "SERVER", "APP", "CATEGORY", "STATUS", "NAME (SOURCE)", "L7", "TLS", "JA4", "BYTES UP/DOWN")
	}
	name := r.Name
	if r.NameSource != "" {
		name += " (" + string(r.NameSource) + ")"
	}
	app := r.App
	if r.Tenant != "" {
		app += " [" + r.Tenant + "]"
	}
	_, p.err = fmt.Fprintf(p.w, "%-24s %-5s %-40s %-40s %-22s %-18s %-12s %-44s %-6s %-8s %-36s %d/%d\n",
		r.Start.Format("2006-01-02T15:04:05.000Z"), r.Proto, r.Client, r.Server, dash(app), dash(r.Category), r.Status,
		dash(name), r.Protocol, dash(strings.TrimPrefix(r.TLSVersion, "TLS ")), dash(r.JA4), r.BytesUp, r.BytesDown)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func (p *printer) detection(d traffic.Detection) {
	if p.err != nil {
		return
	}
	if p.json {
		p.err = p.enc.Encode(jsonDetection{"detection", &d})
		return
	}
	p.dets = append(p.dets, d)
}

func (p *printer) finish(st traffic.Stats, catVersion string) {
	if p.err != nil {
		return
	}
	if p.json {
		p.err = p.enc.Encode(jsonStats{"stats", catVersion, st})
		return
	}
	fmt.Fprintf(p.w, "\nDETECTIONS (%d)\n", len(p.dets))
	for _, d := range p.dets {
		fmt.Fprintf(p.w, "%s %-6s %-24s %s -> %s %s: %s [%s]\n", d.Time.Format("2006-01-02T15:04:05.000Z"), d.Severity, d.Kind,
			d.Client, d.Server, dash(d.App), d.Summary, strings.Join(d.Evidence, " "))
	}
	_, p.err = fmt.Fprintf(p.w, "\npackets=%d flows=%d detections=%d tls_hellos=%d quic_hellos=%d dns=%d stun=%d http=%d ip_fragments=%d reassembled=%d fragment_overlaps=%d decode_errors=%d panics=%d catalog=%s\n",
		st.Packets, st.FlowsCreated, st.Detections, st.TLSClientHellos, st.QUICClientHellos, st.DNSMessages, st.STUNMessages, st.HTTPHosts,
		st.Fragments, st.FragReassembled, st.FragOverlaps, st.DecodeErrors, st.Panics, catVersion)
}
