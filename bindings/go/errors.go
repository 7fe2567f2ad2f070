package rkv

import "rkv/capi"

// Status is a librkv status code. Failed calls return an *Error whose
// Unwrap is its Status, so errors.Is(err, rkv.ErrCapacity) works.
type Status int32

// Status values (pinned by the C API).
var (
	StatusOK              = Status(capi.RKV_OK)
	StatusInvalidArgument = Status(capi.RKV_ERR_INVALID_ARGUMENT)
	StatusOutOfRange      = Status(capi.RKV_ERR_OUT_OF_RANGE)
	StatusUnsupported     = Status(capi.RKV_ERR_UNSUPPORTED)
	StatusShapeMismatch   = Status(capi.RKV_ERR_SHAPE_MISMATCH)
	StatusStructSize      = Status(capi.RKV_ERR_STRUCT_SIZE)
	StatusCapacity        = Status(capi.RKV_ERR_CAPACITY)
	StatusMissingQueries  = Status(capi.RKV_ERR_MISSING_QUERIES)
	StatusBadState        = Status(capi.RKV_ERR_BAD_STATE)
	StatusOverflow        = Status(capi.RKV_ERR_OVERFLOW)
	StatusOutOfMemory     = Status(capi.RKV_ERR_OUT_OF_MEMORY)
	StatusDevice          = Status(capi.RKV_ERR_DEVICE)
	StatusFaulted         = Status(capi.RKV_ERR_FAULTED)
	StatusInternal        = Status(capi.RKV_ERR_INTERNAL)
)

// Sentinel errors, one per failing status, for errors.Is.
var (
	ErrInvalidArgument error = StatusInvalidArgument // NULL pointer, bad value, bad stride
	ErrOutOfRange      error = StatusOutOfRange      // sequence, layer or head index outside the cache
	ErrUnsupported     error = StatusUnsupported     // unknown enum value, or a feature this build lacks
	ErrShapeMismatch   error = StatusShapeMismatch   // heads, head_dim or dtype disagree with the cache
	ErrStructSize      error = StatusStructSize      // a struct size the library does not know
	ErrCapacity        error = StatusCapacity        // too many tokens for the cache, or a buffer too small
	ErrMissingQueries  error = StatusMissingQueries  // the method needs queries that were never appended
	ErrBadState        error = StatusBadState        // not valid in the sequence's current state
	ErrOverflow        error = StatusOverflow        // a size computation overflows
	ErrOutOfMemory     error = StatusOutOfMemory     // allocation failed at create
	ErrDevice          error = StatusDevice          // a CUDA call failed
	ErrFaulted         error = StatusFaulted         // an earlier fault left the cache unusable
	ErrInternal        error = StatusInternal        // a bug in librkv
)

// String is the library's static name, e.g. "RKV_ERR_CAPACITY".
func (s Status) String() string { return capi.Rkv_status_name(int32(s)) }

// Error makes a Status usable as a sentinel error.
func (s Status) Error() string { return s.String() }

// Error is a failed librkv call: its status and the library's message.
type Error struct {
	Status  Status
	Message string
}

func (e *Error) Error() string { return e.Status.String() + ": " + e.Message }

// Unwrap returns the Status, which is the sentinel errors.Is compares with.
func (e *Error) Unwrap() error { return e.Status }

// check turns what a raw call returned into an error (nil when it succeeded).
// The raw layer copied status and message in the call itself.
func check(f *capi.Failure) error {
	if f == nil {
		return nil
	}
	return &Error{Status: Status(f.Status), Message: f.Message}
}

// invalid is an error found in Go before calling the library.
func invalid(message string) error {
	return &Error{Status: StatusInvalidArgument, Message: message}
}
