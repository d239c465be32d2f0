package bridge

import (
	"os"
	"testing"

	"github.com/smartybridge/smartybridge/decrypt"
)

func readFile(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile("../testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func key(t testing.TB, s string) *decrypt.Key {
	t.Helper()
	k, err := decrypt.ParseKey(s)
	if err != nil {
		t.Fatal(err)
	}
	return &k
}

const (
	realKey = "D491470F47126332B07D1923B3504188"
	testKey = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
)
