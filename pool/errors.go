package pool

import (
	"errors"
	"time"
)

// ErrAborted is returned by Serve when the response was already committed to
// the client and could not be completed correctly. The caller must abort the
// client connection (panic with http.ErrAbortHandler) so the client sees a
// failed transfer rather than a short file.
var ErrAborted = errors.New("response aborted after it was committed")

// Error is a failure that happened before anything was sent to the client.
type Error struct {
	// Status is the HTTP status to answer with.
	Status int
	// RetryAfter, when positive, is the Retry-After to advertise.
	RetryAfter time.Duration
	// Err says why.
	Err error
}

func (e *Error) Error() string { return e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

var (
	errClosed       = errors.New("pool is shut down")
	errQueueFull    = errors.New("request queue is full")
	errQueueTimeout = errors.New("timed out waiting for a free worker")
	errNoUntried    = errors.New("no untried mirror left in the pool")
	errNoWorkers    = errors.New("the pool has no mirror")
	errNotFound     = errors.New("a fresh mirror has not got the file")

	errPeekTimeout  = errors.New("peek timeout")
	errStalled      = errors.New("transfer stalled")
	errTrickle      = errors.New("transfer far slower than the pool's median")
	errContinuation = errors.New("continuation")
	errClientGone   = errors.New("client went away")
	errOvertaken    = errors.New("a faster mirror takes over the chunk the client waits for")
)

// statusError is a mirror's answer with an unusable status.
type statusError struct{ status string }

func (e *statusError) Error() string { return "status " + e.status }

// notFoundError is a mirror's 404 or 410.
type notFoundError struct{ *statusError }

func (e *notFoundError) Unwrap() error { return e.statusError }

// failureReason is a short label for metrics.
func failureReason(err error) string {
	switch {
	case errors.Is(err, errPeekTimeout):
		return "peek_timeout"
	case errors.Is(err, errStalled):
		return "stalled"
	case errors.Is(err, errTrickle):
		return "trickle"
	case errors.As(err, new(*notFoundError)):
		return "not_found"
	case errors.As(err, new(*statusError)), errors.Is(err, errUnexpectedStatus):
		return "status"
	case errors.Is(err, errLied):
		return "lied"
	case errors.Is(err, errLength), errors.Is(err, errShortBody), errors.Is(err, errUndelimited):
		return "length"
	case errors.Is(err, errHTML):
		return "html"
	case errors.Is(err, errNonPublic):
		return "refused"
	case errors.Is(err, errContinuation):
		return "continuation"
	default:
		return "error"
	}
}
