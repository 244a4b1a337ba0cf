package main

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/ward-dlp/ward/classifiers/edm"
)

// cmdEDM runs the offline EDM commands: nothing here talks to the collector, so a clinic's
// patient index never leaves the admin's machine in plaintext.
func cmdEDM(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return errors.New("usage: wardctl edm keygen -o KEYFILE | wardctl edm build --key-file KEYFILE -o OUT.edm PATIENTS.csv")
	}
	switch args[0] {
	case "keygen":
		return cmdEDMKeygen(args[1:], stdout, stderr)
	case "build":
		return cmdEDMBuild(args[1:], stdout, stderr)
	}
	return fmt.Errorf("unknown edm command %q (keygen, build)", args[0])
}

func cmdEDMKeygen(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("edm keygen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("o", "", "key file to create")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *out == "" {
		return errors.New("edm keygen: -o KEYFILE is required")
	}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return fmt.Errorf("edm keygen: %w", err)
	}
	f, err := os.OpenFile(*out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("edm keygen: %w", err)
	}
	if _, err := fmt.Fprintln(f, hex.EncodeToString(key)); err != nil {
		f.Close()
		return fmt.Errorf("edm keygen: writing %s: %w", *out, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("edm keygen: %w", err)
	}
	fmt.Fprintf(stdout, "wrote %s (keep it with the agents' configuration; anyone with it can test guesses against an index)\n", *out)
	return nil
}

// ReadEDMKey reads a key file: hex (as keygen writes) or raw bytes.
func readEDMKey(path string) ([]byte, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading EDM key: %w", err)
	}
	if k, err := hex.DecodeString(strings.TrimSpace(string(raw))); err == nil {
		raw = k
	}
	if len(raw) < edm.MinKeyLen {
		return nil, fmt.Errorf("EDM key %s is %d bytes, need at least %d", path, len(raw), edm.MinKeyLen)
	}
	return raw, nil
}

func cmdEDMBuild(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("edm build", flag.ContinueOnError)
	fs.SetOutput(stderr)
	keyFile := fs.String("key-file", "", "EDM key (wardctl edm keygen)")
	out := fs.String("o", "", "index file to write")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *keyFile == "" || *out == "" || fs.NArg() != 1 {
		return errors.New("usage: wardctl edm build --key-file KEYFILE -o OUT.edm PATIENTS.csv")
	}
	key, err := readEDMKey(*keyFile)
	if err != nil {
		return fmt.Errorf("edm build: %w", err)
	}
	in, err := os.Open(fs.Arg(0))
	if err != nil {
		return fmt.Errorf("edm build: %w", err)
	}
	defer in.Close()
	b, err := edm.NewBuilder(key)
	if err != nil {
		return fmt.Errorf("edm build: %w", err)
	}
	st, err := edm.BuildCSV(in, b)
	if err != nil {
		return fmt.Errorf("edm build: %s: %w", fs.Arg(0), err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(*out), ".edm-*")
	if err != nil {
		return fmt.Errorf("edm build: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := b.WriteTo(tmp); err != nil {
		tmp.Close()
		return fmt.Errorf("edm build: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("edm build: %w", err)
	}
	if err := os.Rename(tmp.Name(), *out); err != nil {
		return fmt.Errorf("edm build: %w", err)
	}
	fmt.Fprintf(stdout, "wrote %s: %d rows, %d SSNs, %d MRNs, %d surname+DOB, %d cells skipped as invalid\n",
		*out, st.Rows, st.SSNs, st.MRNs, st.NameDOBs, st.Skipped)
	return nil
}
