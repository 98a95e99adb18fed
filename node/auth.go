package node

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultUsername and DefaultPassword are the original TagCache's well-known credentials.
// They are accepted only when every client listener is bound to loopback and no
// credentials were configured (see Config.Username).
const (
	DefaultUsername = "admin"
	DefaultPassword = "password"
)

// Auth holds the client credentials and the bearer tokens issued for them. It is shared
// by the HTTP API and the text protocol's AUTH command.
type Auth struct {
	tokenTTL time.Duration
	now      func() time.Time
	// gen counts credential changes (starting at 1): a text or RESP session remembers the
	// generation it authenticated under and must AUTH again once it changed.
	gen atomic.Uint64

	mu       sync.Mutex           // protects the fields below
	username string               // current username
	password string               // current password
	defUser  string               // what Reset restores
	defPass  string               // what Reset restores
	tokens   map[string]time.Time // token -> expiry
}

// NewAuth returns credentials user/pass (Reset restores them) whose tokens live tokenTTL.
func NewAuth(user, pass string, tokenTTL time.Duration) *Auth {
	a := &Auth{
		tokenTTL: tokenTTL, now: time.Now,
		username: user, password: pass, defUser: user, defPass: pass,
		tokens: make(map[string]time.Time),
	}
	a.gen.Store(1)
	return a
}

// Gen returns the credentials' generation; it changes whenever they do.
func (a *Auth) Gen() uint64 { return a.gen.Load() }

// sessionAuth is the authentication state of a text or RESP connection.
type sessionAuth struct {
	ok  bool   // AUTH succeeded, or none is required
	gen uint64 // Auth.Gen at the successful AUTH; 0 when none is required
}

// valid reports whether the session is authenticated under the current credentials;
// a change of credentials since its AUTH ends that.
func (s *sessionAuth) valid(a *Auth) bool {
	if s.ok && s.gen != 0 && s.gen != a.Gen() {
		s.ok = false
	}
	return s.ok
}

// login checks user/pass and marks the session authenticated under the generation the
// check ran against (taken first, so a change racing the check is noticed next time).
func (s *sessionAuth) login(a *Auth, user, pass string) bool {
	gen := a.Gen()
	if !a.Check(user, pass) {
		return false
	}
	s.ok, s.gen = true, gen
	return true
}

// Check reports whether user/pass are the current credentials, in constant time.
func (a *Auth) Check(user, pass string) bool {
	a.mu.Lock()
	u, p := a.username, a.password
	a.mu.Unlock()
	okU := subtle.ConstantTimeCompare([]byte(user), []byte(u))
	okP := subtle.ConstantTimeCompare([]byte(pass), []byte(p))
	return okU&okP == 1
}

// Login issues a bearer token for valid credentials.
func (a *Auth) Login(user, pass string) (token string, ttl time.Duration, ok bool) {
	if !a.Check(user, pass) {
		return "", 0, false
	}
	token = randomString(32)
	a.mu.Lock()
	now := a.now()
	for t, exp := range a.tokens { // drop expired tokens so the map stays bounded by use
		if !now.Before(exp) {
			delete(a.tokens, t)
		}
	}
	a.tokens[token] = now.Add(a.tokenTTL)
	a.mu.Unlock()
	return token, a.tokenTTL, true
}

// CheckToken reports whether token was issued and has not expired or been revoked.
func (a *Auth) CheckToken(token string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	exp, ok := a.tokens[token]
	if ok && !a.now().Before(exp) {
		delete(a.tokens, token)
		return false
	}
	return ok
}

// CheckHeader validates an HTTP Authorization header, Basic or Bearer.
func (a *Auth) CheckHeader(h string) bool {
	if tok, ok := strings.CutPrefix(h, "Bearer "); ok {
		return a.CheckToken(strings.TrimSpace(tok))
	}
	if b64, ok := strings.CutPrefix(h, "Basic "); ok {
		raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(b64))
		if err != nil {
			return false
		}
		user, pass, ok := strings.Cut(string(raw), ":")
		return ok && a.Check(user, pass)
	}
	return false
}

// Rotate replaces the credentials by random ones, revokes every token and returns them.
func (a *Auth) Rotate() (user, pass string) {
	user, pass = randomString(12), randomString(24)
	a.set(user, pass)
	return user, pass
}

// ChangePassword sets a new password and revokes every token.
func (a *Auth) ChangePassword(pass string) {
	a.mu.Lock()
	u := a.username
	a.mu.Unlock()
	a.set(u, pass)
}

// Reset restores the configured credentials and revokes every token.
func (a *Auth) Reset() {
	a.set(a.defUser, a.defPass)
}

func (a *Auth) set(user, pass string) {
	a.mu.Lock()
	a.username, a.password = user, pass
	clear(a.tokens)
	a.gen.Add(1)
	a.mu.Unlock()
}

// randomString returns n random characters from [A-Za-z0-9].
func randomString(n int) string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
	out := make([]byte, 0, n)
	buf := make([]byte, 2*n)
	for len(out) < n {
		if _, err := rand.Read(buf); err != nil {
			panic("crypto/rand: " + err.Error())
		}
		for _, c := range buf {
			// 248 = 4*62: reject the top bytes so every character is equally likely.
			if c < 248 && len(out) < n {
				out = append(out, alphabet[int(c)%len(alphabet)])
			}
		}
	}
	return string(out)
}
