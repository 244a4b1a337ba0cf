package account

import (
	"strings"
	"testing"
)

var fastParams = Params{Time: 1, Memory: 8 * 1024, Threads: 1, KeyLen: 32, SaltLen: 16}

func TestPasswordHash(t *testing.T) {
	h, err := HashPassword("correct horse battery", fastParams)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(h, "$argon2id$v=19$m=8192,t=1,p=1$") {
		t.Fatalf("hash %q", h)
	}
	ok, rehash, err := VerifyPassword("correct horse battery", h, fastParams)
	if err != nil || !ok || rehash {
		t.Fatalf("verify: ok=%v rehash=%v err=%v", ok, rehash, err)
	}
	ok, _, err = VerifyPassword("correct horse batterY", h, fastParams)
	if err != nil || ok {
		t.Fatalf("wrong password accepted: ok=%v err=%v", ok, err)
	}
	_, rehash, _ = VerifyPassword("correct horse battery", h, DefaultParams)
	if !rehash {
		t.Fatal("hash with weaker parameters not flagged for rehash")
	}
	for _, bad := range []string{"", "$argon2i$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA", "$argon2id$v=19$m=99999999,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA", "$argon2id$v=19$m=8,t=1,p=1$!!$aGFzaA"} {
		if _, _, err := VerifyPassword("x", bad, fastParams); err == nil {
			t.Errorf("malformed hash %q accepted", bad)
		}
	}
}

func TestSaltsDiffer(t *testing.T) {
	a, _ := HashPassword("same password here", fastParams)
	b, _ := HashPassword("same password here", fastParams)
	if a == b {
		t.Fatal("two hashes of one password are equal: salt not random")
	}
}

func TestRecoveryCodes(t *testing.T) {
	codes, hashes, err := RecoveryCodes(10)
	if err != nil || len(codes) != 10 || len(hashes) != 10 {
		t.Fatalf("codes %v err %v", codes, err)
	}
	seen := map[string]bool{}
	for i, c := range codes {
		if len(c) != 19 || seen[c] {
			t.Fatalf("code %q", c)
		}
		seen[c] = true
		if string(HashRecoveryCode(strings.ToUpper(strings.ReplaceAll(c, "-", " ")))) != string(hashes[i]) {
			t.Fatalf("code %q does not normalise to its hash", c)
		}
	}
}

func TestSealer(t *testing.T) {
	s, err := OpenSealer(t.TempDir() + "/console.key")
	if err != nil {
		t.Fatal(err)
	}
	sealed, err := s.Seal([]byte("JBSWY3DPEHPK3PXP"), "user:1")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(sealed), "JBSWY3DP") {
		t.Fatal("sealed secret contains the plaintext")
	}
	if pt, err := s.Open(sealed, "user:1"); err != nil || string(pt) != "JBSWY3DPEHPK3PXP" {
		t.Fatalf("open: %q %v", pt, err)
	}
	if _, err := s.Open(sealed, "user:2"); err == nil {
		t.Fatal("secret sealed for one account opened for another")
	}
}

func TestCheckPassword(t *testing.T) {
	if CheckPassword("short") == nil {
		t.Fatal("short password accepted")
	}
	if CheckPassword("twelve chars") != nil {
		t.Fatal("12-character password refused")
	}
}
