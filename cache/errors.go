package cache

import (
	"errors"
	"fmt"
)

// Sentinel errors callers branch on. Their texts are the TagCache protocol's reasons.
var (
	// ErrNotInteger: INCR/DECR found a value that is not a decimal int64.
	ErrNotInteger = errors.New("value is not an integer")
	// ErrOverflow: INCR/DECR would leave the int64 range.
	ErrOverflow = errors.New("integer overflow")
	// ErrEmptyKey: a key must have at least one byte.
	ErrEmptyKey = errors.New("missing_key")
	// ErrLimit wraps every *LimitError, so callers can test errors.Is(err, ErrLimit).
	ErrLimit = errors.New("limit exceeded")
	// ErrNoStamp: Import was given an entry without a stamp (0); every stamp a Clock
	// hands out is above 0.
	ErrNoStamp = errors.New("entry has no stamp")
)

// LimitError reports input over one of the store's configured limits. Its text names
// the limit and its value, e.g. "key too long (limit 1024 bytes)".
type LimitError struct {
	What  string // "key too long", "value too large", "too many tags", "tag too long"
	Limit int64  // the configured bound
	Unit  string // "bytes" or "tags"
}

func (e *LimitError) Error() string {
	return fmt.Sprintf("%s (limit %d %s)", e.What, e.Limit, e.Unit)
}

// Is makes errors.Is(err, ErrLimit) true for every LimitError.
func (e *LimitError) Is(target error) bool { return target == ErrLimit }
