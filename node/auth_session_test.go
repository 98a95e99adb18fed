package node

import (
	"strings"
	"testing"
)

// A text or RESP session authenticated before the credentials changed must AUTH again.
func TestSessionsMustAuthenticateAgainAfterCredentialsChange(t *testing.T) {
	for _, change := range []struct {
		name string
		do   func(*Auth)
	}{
		{"rotate", func(a *Auth) { a.Rotate() }},
		{"change_password", func(a *Auth) { a.ChangePassword("another password") }},
		{"reset", func(a *Auth) { a.Reset() }},
	} {
		t.Run(change.name, func(t *testing.T) {
			n := startRESPNode(t, func(c *Config) { c.TCPPort = 0; c.TCPAuth = "on" })
			text := dialTextProto(t, n)
			if got := text.do("AUTH\t" + DefaultUsername + "\t" + DefaultPassword); got != "OK" {
				t.Fatalf("text AUTH: %q", got)
			}
			if got := text.do("PUT\tk\t-\t-\tv"); got != "OK" {
				t.Fatalf("text PUT after AUTH: %q", got)
			}
			resp := dialRESP(t, n)
			resp.expect(respStatus("OK"), "AUTH", DefaultUsername, DefaultPassword)
			resp.expect("v", "GET", "k")

			change.do(n.Auth())
			if got := text.do("GET\tk"); got != "ERR unauthorized" {
				t.Fatalf("text GET after the credentials changed: %q", got)
			}
			resp.expectErr("NOAUTH", "GET", "k")
			if change.name == "reset" { // the same credentials again: AUTH works
				if got := text.do("AUTH\t" + DefaultUsername + "\t" + DefaultPassword); got != "OK" {
					t.Fatalf("text AUTH after reset: %q", got)
				}
				resp.expect(respStatus("OK"), "AUTH", DefaultUsername, DefaultPassword)
				resp.expect("v", "GET", "k")
			} else if got := text.do("AUTH\t" + DefaultUsername + "\t" + DefaultPassword); !strings.HasPrefix(got, "ERR") {
				t.Fatalf("text AUTH with the old credentials: %q", got)
			}
		})
	}
}

// A value or key the text protocol cannot put on one line (stored over RESP) gets an
// error reply, not a broken stream.
func TestTextRefusesRepliesItCannotFrame(t *testing.T) {
	n := startRESPNode(t, func(c *Config) { c.TCPPort = 0 })
	resp := dialRESP(t, n)
	resp.expect(respStatus("OK"), "SET", "multi", "line one\nline two")
	resp.expect(respStatus("OK"), "SET", "a\nb", "v", "TAGS", "t")
	text := dialTextProto(t, n)
	if got := text.do("GET\tmulti"); got != "ERR "+string(errValueNewline) {
		t.Fatalf("GET of a value with a newline: %q", got)
	}
	if got := text.do("KEYS_BY_TAG\tt"); got != "ERR "+string(errKeyUnlistable) {
		t.Fatalf("KEYS_BY_TAG listing a key with a newline: %q", got)
	}
	if got := text.do("PUT\tplain\t-\t-\tv"); got != "OK" { // the stream is intact
		t.Fatalf("PUT after: %q", got)
	}
}
