package edm

import (
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/ward-dlp/ward/classifiers/phi"
)

// NormSSN returns the nine digits of an SSN written with or without '-' or ' '.
func NormSSN(s string) ([]byte, bool) {
	var out []byte
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= '0' && c <= '9':
			out = append(out, c)
		case c == '-' || c == ' ':
		default:
			return nil, false
		}
	}
	return out, len(out) == 9
}

// NormMRN upper-cases an MRN and drops '-', ' ' and '.', as the matcher does for tokens.
func NormMRN(s string) ([]byte, bool) {
	var out []byte
	digits := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= '0' && c <= '9':
			digits++
			out = append(out, c)
		case c >= 'a' && c <= 'z':
			out = append(out, c-'a'+'A')
		case c >= 'A' && c <= 'Z':
			out = append(out, c)
		case c == '-' || c == ' ' || c == '.':
		default:
			return nil, false
		}
	}
	return out, digits >= 4 && len(out) <= 20
}

// NormSurname keeps the ASCII letters of a surname, lower-cased ("O'Brien-Lee" → "obrienlee").
func NormSurname(s string) []byte {
	var out []byte
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z':
			out = append(out, c)
		case c >= 'A' && c <= 'Z':
			out = append(out, c-'A'+'a')
		}
	}
	return out
}

// NormNameDOB joins a normalised surname and a yyyymmdd date of birth.
func NormNameDOB(surname []byte, ymd [8]byte) []byte {
	return append(append(append([]byte{}, surname...), '|'), ymd[:]...)
}

// BuildStats says what a CSV build added, for the admin's console (never values).
type BuildStats struct {
	Rows, SSNs, MRNs, NameDOBs, Skipped int
}

// BuildCSV reads a patient index CSV with a header row naming any of the columns mrn,
// ssn, last_name (or surname, family_name) and dob (or birth_date), and adds every valid
// value. Invalid cells are counted, not fatal; a file without any usable column is.
func BuildCSV(r io.Reader, b *Builder) (BuildStats, error) {
	var st BuildStats
	cr := csv.NewReader(r)
	cr.FieldsPerRecord = -1
	cr.ReuseRecord = true
	head, err := cr.Read()
	if err != nil {
		return st, fmt.Errorf("edm: reading CSV header: %w", err)
	}
	col := map[string]int{}
	for i, h := range head {
		h = strings.ToLower(strings.TrimSpace(strings.TrimPrefix(h, "\ufeff")))
		switch h {
		case "mrn", "medical_record_number", "patient_id":
			col["mrn"] = i
		case "ssn", "social_security_number":
			col["ssn"] = i
		case "last_name", "surname", "family_name", "lastname":
			col["last"] = i
		case "dob", "birth_date", "date_of_birth", "birthdate":
			col["dob"] = i
		}
	}
	_, hasLast := col["last"]
	_, hasDOB := col["dob"]
	_, hasMRN := col["mrn"]
	_, hasSSN := col["ssn"]
	if !hasMRN && !hasSSN && !(hasLast && hasDOB) {
		return st, errors.New("edm: CSV header has none of mrn, ssn, or last_name+dob")
	}
	cell := func(rec []string, name string) (string, bool) {
		i, ok := col[name]
		if !ok || i >= len(rec) {
			return "", false
		}
		v := strings.TrimSpace(rec[i])
		return v, v != ""
	}
	for line := 2; ; line++ {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return st, fmt.Errorf("edm: CSV line %d: %w", line, err)
		}
		st.Rows++
		if v, ok := cell(rec, "ssn"); ok {
			if n, ok := NormSSN(v); ok {
				if err := b.Add(KindSSN, n); err != nil {
					return st, err
				}
				st.SSNs++
			} else {
				st.Skipped++
			}
		}
		if v, ok := cell(rec, "mrn"); ok {
			if n, ok := NormMRN(v); ok {
				if err := b.Add(KindMRN, n); err != nil {
					return st, err
				}
				st.MRNs++
			} else {
				st.Skipped++
			}
		}
		last, okL := cell(rec, "last")
		dob, okD := cell(rec, "dob")
		if okL && okD {
			ymd, ok := phi.ParseDate(dob)
			sn := NormSurname(last)
			if ok && len(sn) >= 2 {
				if err := b.Add(KindNameDOB, NormNameDOB(sn, ymd)); err != nil {
					return st, err
				}
				st.NameDOBs++
			} else {
				st.Skipped++
			}
		}
	}
	return st, nil
}
