/*
 * The SWIG interface of librkv, shared by the Python and Go bindings: the raw
 * layer of each (Python's module `rkv.capi`, Go's package `rkv/capi`) is
 * generated from the public header as it is, with no hand-written declaration
 * of a librkv function or struct. What differs between the languages is in
 * their sections below; the rest is common.
 *
 * Rules, in both languages:
 *   1. A failed call cannot go unnoticed: every function returning rkv_status
 *      raises (Python: the exception of rkv.errors matching the status) or
 *      returns a failure (Go: *capi.Failure, nil on RKV_OK), carrying the
 *      status and the library's thread-local message, copied in the same call.
 *      These are typemaps on the return type: no function can be left out.
 *   2. Memory crosses as the language allows (see each section): Python passes
 *      integer addresses, Go passes its pointers only as arguments of the call
 *      that reads them.
 *   3. Structs the caller fills carry their own size: the constructors set
 *      struct_size (params start from the library defaults), so no caller
 *      computes sizeof.
 *
 * Python builds its module from this file at build time, with any SWIG 4
 * (4.1 and 4.5 are tested). Go's generated files are committed: after editing
 * this file or the header, run bindings/go/swig.sh (any edit of this file
 * renames Go's generated symbols, which are keyed on its hash).
 */
%module(package="rkv") capi

%{
#include <stdlib.h>
#include <string.h>
#include "rkv/rkv.h"
#include "rkv/rkv_experimental.h"
%}

%include <stdint.i>

/* ===========================================================================
 * Python
 * ======================================================================== */
#ifdef SWIGPYTHON
/*   Rule 2: data pointers (tensor data, seq_ids and the other host arrays,
 *   view pointers, CUDA streams) cross as integer addresses. The caller keeps
 *   the object that owns the memory alive across the call; the Pythonic layer
 *   does. This is what lets numpy arrays, torch tensors, CUDA memory and
 *   DLPack capsules share one path.
 *   Output parameters become return values. The GIL is released around the
 *   calls that do real work (see %exception). */

%{
/* Raise the exception rkv.errors maps `status` to. The thread-local message is
 * copied into a Python string first: any later librkv call on this thread
 * would overwrite it. The GIL is held again here, on the thread that failed. */
static void rkv_py_raise(rkv_status status) {
    PyObject *message = PyUnicode_DecodeUTF8(rkv_error_message(),
                                             (Py_ssize_t)strlen(rkv_error_message()),
                                             "replace");
    PyObject *errors = message ? PyImport_ImportModule("rkv.errors") : NULL;
    PyObject *exc = errors ? PyObject_CallMethod(errors, "from_status", "iO", (int)status, message)
                           : NULL;
    if (exc) {
        PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
    } else {
        /* rkv.errors unusable (e.g. interpreter shutdown): still fail loudly. */
        PyErr_Clear();
        PyErr_Format(PyExc_RuntimeError, "%s: %s", rkv_status_name(status),
                     rkv_error_message());
    }
    Py_XDECREF(exc);
    Py_XDECREF(errors);
    Py_XDECREF(message);
}

/* An integer address (or None) as a pointer. */
static int rkv_py_address(PyObject *obj, void **out) {
    if (obj == Py_None) {
        *out = NULL;
        return 0;
    }
    if (!PyLong_Check(obj)) {
        PyErr_SetString(PyExc_TypeError, "expected an integer address or None");
        return -1;
    }
    *out = PyLong_AsVoidPtr(obj);
    return PyErr_Occurred() ? -1 : 0;
}

/* Add an output to what the function returns: the first output replaces the
 * None a successful status leaves, a second makes a list. SWIG's own
 * SWIG_AppendOutput changed in 4.3 (a None result of a non-void function is
 * kept, the outputs follow it in a list), so the outputs are appended here,
 * the same way whatever SWIG version built the module. Steals `obj`. */
static PyObject *rkv_py_append_output(PyObject *result, PyObject *obj) {
    if (!obj) {
        Py_XDECREF(result);
        return NULL;
    }
    if (!result || result == Py_None) {
        Py_XDECREF(result);
        return obj;
    }
    if (!PyList_Check(result)) {
        PyObject *list = PyList_New(1);
        if (!list) {
            Py_DECREF(obj);
            Py_DECREF(result);
            return NULL;
        }
        PyList_SET_ITEM(list, 0, result);
        result = list;
    }
    int failed = PyList_Append(result, obj);
    Py_DECREF(obj);
    if (failed) {
        Py_DECREF(result);
        return NULL;
    }
    return result;
}
%}

/* Rule 1: statuses become exceptions. On success the function returns None, or
 * its outputs (appended below). */
%typemap(out) rkv_status {
    if ($1 != RKV_OK) {
        rkv_py_raise($1);
        SWIG_fail;
    }
    $result = SWIG_Py_Void();
}
/* rkv_status_name takes a status: let it take any int. */
%typemap(in) rkv_status status {
    long value = PyLong_AsLong($input);
    if (value == -1 && PyErr_Occurred()) SWIG_fail;
    $1 = (rkv_status)value;
}

/* Rule 2: pointers as integer addresses. Struct members and arguments alike. */
%define RKV_PY_ADDRESS(TYPE)
%typemap(in) TYPE {
    void *address;
    if (rkv_py_address($input, &address) != 0) SWIG_fail;
    $1 = ($1_ltype)address;
}
%typemap(typecheck, precedence=SWIG_TYPECHECK_POINTER) TYPE {
    $1 = ($input == Py_None || PyLong_Check($input)) ? 1 : 0;
}
%typemap(out) TYPE { $result = PyLong_FromVoidPtr((void *)$1); }
%typemap(memberin) TYPE { $1 = $input; }
%enddef
RKV_PY_ADDRESS(void *)
RKV_PY_ADDRESS(const int32_t *)
RKV_PY_ADDRESS(const int64_t *)
RKV_PY_ADDRESS(int32_t *positions)
RKV_PY_ADDRESS(int32_t *out)
RKV_PY_ADDRESS(float *out)
RKV_PY_ADDRESS(float *k_scale)
RKV_PY_ADDRESS(float *v_scale)

/* Outputs: hidden from Python's arguments, returned instead. */
%define RKV_PY_OUTPUT(TYPE, NAME, TO_PYTHON)
%typemap(in, numinputs=0) TYPE *NAME (TYPE temp = 0) { $1 = &temp; }
%typemap(argout) TYPE *NAME {
    $result = rkv_py_append_output($result, TO_PYTHON(temp$argnum));
    if (!$result) SWIG_fail;
}
%enddef
RKV_PY_OUTPUT(uint64_t, bytes, PyLong_FromUnsignedLongLong)
RKV_PY_OUTPUT(double, lower, PyFloat_FromDouble)
RKV_PY_OUTPUT(double, upper, PyFloat_FromDouble)
RKV_PY_OUTPUT(double, value, PyFloat_FromDouble)
RKV_PY_OUTPUT(int32_t, due, PyLong_FromLong)
RKV_PY_OUTPUT(int32_t, physical, PyLong_FromLong)
RKV_PY_OUTPUT(int32_t, count, PyLong_FromLong)
RKV_PY_OUTPUT(int64_t, logical, PyLong_FromLongLong)
RKV_PY_OUTPUT(int32_t, tokens, PyLong_FromLong)
RKV_PY_OUTPUT(int32_t, budget, PyLong_FromLong)
/* Handles a create returns (rkv_cache_create, rkv_batch_create). */
%define RKV_PY_HANDLE_OUTPUT(TYPE, NAME)
%typemap(in, numinputs=0) TYPE **NAME (TYPE *created = NULL) { $1 = &created; }
%typemap(argout) TYPE **NAME {
    $result = rkv_py_append_output($result,
                                   SWIG_NewPointerObj(created$argnum, $*1_descriptor, 0));
    if (!$result) SWIG_fail;
}
%enddef
RKV_PY_HANDLE_OUTPUT(rkv_cache, cache)
RKV_PY_HANDLE_OUTPUT(rkv_batch, batch)

/* The GIL is released around calls that may run long (compression, attention,
 * allocation, a device-wide sync in destroy) so other Python threads run
 * meanwhile. Short host-only queries keep it: releasing costs more than they do. */
%define RKV_RELEASE_GIL(FUNCTION)
%exception FUNCTION {
    Py_BEGIN_ALLOW_THREADS
    $action
    Py_END_ALLOW_THREADS
}
%enddef
RKV_RELEASE_GIL(rkv_cache_create)
RKV_RELEASE_GIL(rkv_cache_destroy)
RKV_RELEASE_GIL(rkv_seq_reset)
RKV_RELEASE_GIL(rkv_seq_copy)
RKV_RELEASE_GIL(rkv_batch_create)
RKV_RELEASE_GIL(rkv_batch_destroy)
RKV_RELEASE_GIL(rkv_append)
RKV_RELEASE_GIL(rkv_compress)
RKV_RELEASE_GIL(rkv_attend)
RKV_RELEASE_GIL(rkv_seq_positions)
RKV_RELEASE_GIL(rkv_seq_scores)
RKV_RELEASE_GIL(rkv_cache_sync_lengths)
#endif /* SWIGPYTHON */

/* ===========================================================================
 * Go (swig -go -cgo -intgosize 64; bindings/go/swig.sh runs it)
 * ======================================================================== */
#ifdef SWIGGO
/*   Rule 1: a goroutine may run on another OS thread by its next cgo call,
 *   and the message is thread-local, so the C side of every status-returning
 *   wrapper copies status and message into a Failure before it returns (the
 *   Go side frees the copy). rkv_error_message is not wrapped: read in
 *   a separate call it would be another thread's message.
 *   Rule 2 (cgo's pointer rules): Go memory may be passed to C as an argument
 *   of the call that uses it, but never stored in C memory. So
 *     - pointer parameters take Go pointers (*int32, *float64, unsafe.Pointer):
 *       outputs, and the arrays the library writes;
 *     - pointer members the caller sets (tensor data, the append arrays) and
 *       streams are addresses (uintptr): device memory or C memory;
 *     - host slices for rkv_append and rkv_attend go through rkv_go_append and
 *       rkv_go_attend, which take them as parameters and patch them into a
 *       copy of the struct for the one call, and the ids of rkv_batch_set
 *       through rkv_go_batch_set (its seq_ids shares the name of the
 *       address members);
 *     - pointers the library hands back (views) read as unsafe.Pointer and
 *       *int32, into the cache's own memory.
 *   Integers keep their width (int32_t is int32, not Go's int), and enums are
 *   int32 values, so nothing here depends on how a SWIG version names them. */

%insert(cgo_comment_typedefs) %{
#cgo pkg-config: librkv
%}
%go_import("strings")

/* Integers of the exact width. */
%typemap(gotype) int32_t, const int32_t & "int32"
%typemap(gotype) uint32_t, const uint32_t & "uint32"
%typemap(gotype) int64_t, const int64_t & "int64"
%typemap(gotype) uint64_t, const uint64_t & "uint64"
%typemap(gotype) size_t, const size_t & "uint64"
%typemap(gotype) int32_t *, const int32_t * "*int32"
%typemap(gotype) int64_t *, const int64_t * "*int64"
%typemap(gotype) uint64_t * "*uint64"
%typemap(gotype) void *, const void * "unsafe.Pointer"
%typemap(gotype) enum SWIGTYPE "int32"
%typemap(out) enum SWIGTYPE %{ $result = (int32_t)$1; %}

/* Rule 2: addresses. */
%typemap(gotype) void *stream, void *data, const int32_t *seq_ids, const int32_t *num_tokens,
                 const int64_t *token_offsets "uintptr"

/* The handles a create returns. */
%typemap(gotype) rkv_cache **cache "*uintptr"
%typemap(gotype) rkv_batch **batch "*uintptr"

/* Strings the library returns are static: copied into Go memory without a
 * malloc on the C side (SWIG's default copies twice, through C memory). */
%typemap(out) const char * %{
    $result.p = (char *)$1;
    $result.n = $1 ? (intgo)strlen($1) : 0;
%}
%typemap(goout) const char * %{ $result = strings.Clone($1) %}

/* Rule 1. */
%ignore rkv_error_message;
%{
struct rkv_go_failure;
static void rkv_go_failure_free(struct rkv_go_failure *failure);
%}
%immutable rkv_go_failure::status;
%immutable rkv_go_failure::message;
%nodefaultctor rkv_go_failure;
%extend rkv_go_failure {
    ~rkv_go_failure() { rkv_go_failure_free($self); }
}
%inline %{
/* What a call that did not return RKV_OK left: its status and a copy of the
 * message the library set on the thread that made the call. */
typedef struct rkv_go_failure {
    int32_t status;
    const char *message;
} rkv_go_failure;
%}
%{
/* When malloc fails on the failure path: a status and message in static
 * storage, which rkv_go_failure_free does not free. */
static const char rkv_go_no_message[] = "librkv: no memory left to copy the error message";
static rkv_go_failure rkv_go_no_memory = {RKV_ERR_OUT_OF_MEMORY, rkv_go_no_message};

/* NULL for RKV_OK; otherwise a failure the Go side frees. */
static rkv_go_failure *rkv_go_failure_new(rkv_status status) {
    rkv_go_failure *failure;
    if (status == RKV_OK) return NULL;
    failure = (rkv_go_failure *)malloc(sizeof *failure);
    if (!failure) return &rkv_go_no_memory;
    failure->status = (int32_t)status;
    failure->message = strdup(rkv_error_message());
    if (!failure->message) failure->message = rkv_go_no_message;
    return failure;
}

static void rkv_go_failure_free(struct rkv_go_failure *failure) {
    if (failure->message != rkv_go_no_message) free((char *)failure->message);
    if (failure != &rkv_go_no_memory) free(failure);
}
%}
/* The C side returns the failure's address as an integer (0 for RKV_OK). */
%typemap(gotype) rkv_status "*Failure"
%typemap(imtype) rkv_status "uintptr"
%typemap(out) rkv_status %{ $result = (uintptr_t)rkv_go_failure_new($1); %}
%typemap(goout) rkv_status %{ $result = takeFailure($1) %}
/* rkv_status_name takes a status as the number it is. */
%typemap(gotype) rkv_status status "int32"
%typemap(imtype) rkv_status status "int32"
%typemap(in) rkv_status status %{ $1 = (rkv_status)$input; %}

%insert(go_wrapper) %{
// Failure is a librkv call that did not return RKV_OK: its status and the
// message the library left, copied by the same cgo call.
type Failure struct {
	Status  int32
	Message string
}

// takeFailure copies a failure into Go memory and frees the C copy.
func takeFailure(p uintptr) *Failure {
	if p == 0 {
		return nil
	}
	c := SwigcptrRkv_go_failure(p)
	defer DeleteRkv_go_failure(c)
	return &Failure{Status: c.GetStatus(), Message: c.GetMessage()}
}
%}

/* Rule 2: host memory from Go for the two calls that read it through structs. */
%inline %{
/* rkv_append with Go host memory. Each host_* pointer that is not NULL
 * replaces the matching pointer of *args for this call only (args itself is
 * not written); NULL keeps args' own (device memory, or none). */
static rkv_status rkv_go_append(rkv_cache *cache, const rkv_append_args *args,
                                const int32_t *host_seq_ids, const int32_t *host_num_tokens,
                                const int64_t *host_token_offsets, const void *host_k,
                                const void *host_v, const void *host_q, void *stream) {
    rkv_append_args call;
    if (!args) return rkv_append(cache, args, stream); /* the library reports it */
    call = *args;
    if (host_seq_ids) call.seq_ids = host_seq_ids;
    if (host_num_tokens) call.num_tokens = host_num_tokens;
    if (host_token_offsets) call.token_offsets = host_token_offsets;
    if (host_k) call.k.data = (void *)host_k;
    if (host_v) call.v.data = (void *)host_v;
    if (host_q) call.q.data = (void *)host_q;
    return rkv_append(cache, &call, stream);
}

/* rkv_attend with Go host memory, as rkv_go_append: host_seq_ids, host_q and
 * host_out, when not NULL, replace args->seq_ids, args->q.data and
 * args->out.data for this call. */
static rkv_status rkv_go_attend(rkv_cache *cache, const rkv_attend_args *args,
                                const int32_t *host_seq_ids, const void *host_q, void *host_out,
                                void *stream) {
    rkv_attend_args call;
    if (!args) return rkv_attend(cache, args, stream); /* the library reports it */
    call = *args;
    if (host_seq_ids) call.seq_ids = host_seq_ids;
    if (host_q) call.q.data = (void *)host_q;
    if (host_out) call.out.data = host_out;
    return rkv_attend(cache, &call, stream);
}

/* rkv_batch_set with the ids in Go memory (a parameter, never stored). */
static rkv_status rkv_go_batch_set(rkv_batch *batch, const int32_t *host_seq_ids, int32_t num_ids,
                                   void *stream) {
    return rkv_batch_set(batch, host_seq_ids, num_ids, stream);
}
%}
#endif /* SWIGGO */

/* ===========================================================================
 * Both
 * ======================================================================== */

/* Rule 3: constructors that set struct_size; params start from the defaults. */
%extend rkv_cache_params {
    rkv_cache_params() {
        rkv_cache_params *p = (rkv_cache_params *)calloc(1, sizeof *p);
        if (p) rkv_params_default(p, sizeof *p);
        return p;
    }
}
%define RKV_SIZED(TYPE)
%extend TYPE {
    TYPE() {
        TYPE *s = (TYPE *)calloc(1, sizeof *s);
        if (s) s->struct_size = sizeof *s;
        return s;
    }
}
%enddef
RKV_SIZED(rkv_append_args)
RKV_SIZED(rkv_attend_args)
RKV_SIZED(rkv_seq_view)
RKV_SIZED(rkv_layer_view)
RKV_SIZED(rkv_stats)

/* The stable header, then the experimental one (SWIG does not follow the
 * #include between them). The languages expose the experimental functions
 * under an explicit experimental name only (Python: rkv.experimental). */
%include "rkv/rkv.h"
%include "rkv/rkv_experimental.h"
