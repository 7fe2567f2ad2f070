/*
 * SWIG interface of librkv for Python: the raw module `rkv.capi`.
 *
 * It wraps the public header as it is (no hand-written declarations), with
 * three rules that make it safe to call from the Pythonic layer (rkv/cache.py):
 *   1. Every function returning rkv_status raises on anything but RKV_OK: an
 *      exception of rkv.errors matching the status, carrying the status and
 *      the library's message. This is a typemap on the return type, so no
 *      status-returning function can be left out.
 *   2. Data pointers (tensor data, seq_ids and the other host arrays, view
 *      pointers, CUDA streams) cross as integer addresses. The caller keeps the
 *      object that owns the memory alive across the call; the Pythonic layer
 *      does. This is what lets numpy arrays, torch tensors, CUDA memory and
 *      DLPack capsules share one path.
 *   3. Output parameters become return values.
 * The GIL is released around the calls that do real work (see %exception).
 */
%module(package="rkv") capi

%{
#define RKV_EXPERIMENTAL_API
#include <stdlib.h>
#include <string.h>
#include "rkv/rkv.h"

/* Raise the exception rkv.errors maps `status` to. The thread-local message is
 * copied into a Python string first: any later librkv call on this thread
 * would overwrite it. The GIL is held again here, on the thread that failed. */
static void rkv_py_raise(rkv_status status) {
    PyObject *message = PyUnicode_DecodeUTF8(rkv_last_error_message(),
                                             (Py_ssize_t)strlen(rkv_last_error_message()),
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
                     rkv_last_error_message());
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
%}

%include <stdint.i>
%include <typemaps.i>

/* Rule 1: statuses become exceptions. On success the function returns None, or
 * its outputs (rule 3 appends them). */
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
%define RKV_ADDRESS(TYPE)
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
RKV_ADDRESS(void *)
RKV_ADDRESS(const int32_t *)
RKV_ADDRESS(const int64_t *)
RKV_ADDRESS(int32_t *positions)
RKV_ADDRESS(int32_t *out)
RKV_ADDRESS(float *out)

/* Rule 3: outputs. */
%typemap(in, numinputs=0) rkv_cache **cache (rkv_cache *created = NULL) { $1 = &created; }
%typemap(argout) rkv_cache **cache {
    $result = SWIG_Python_AppendOutput($result,
                                       SWIG_NewPointerObj(created$argnum, $*1_descriptor, 0));
}
%apply uint64_t *OUTPUT { uint64_t *bytes };
%apply double *OUTPUT { double *lower, double *upper, double *value };
%apply int32_t *OUTPUT { int32_t *due, int32_t *physical, int32_t *count };
%apply int64_t *OUTPUT { int64_t *logical };

/* Structs the caller fills carry their own size: the constructors set it, so
 * Python code never computes sizeof. params start from the library defaults. */
%extend rkv_cache_params {
    rkv_cache_params() {
        rkv_cache_params *p = (rkv_cache_params *)calloc(1, sizeof *p);
        if (p) rkv_cache_params_default(p, sizeof *p);
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
RKV_SIZED(rkv_kv_view)
RKV_SIZED(rkv_layer_view)
RKV_SIZED(rkv_stats)

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
RKV_RELEASE_GIL(rkv_append)
RKV_RELEASE_GIL(rkv_compress)
RKV_RELEASE_GIL(rkv_attend)
RKV_RELEASE_GIL(rkv_kept_positions)
RKV_RELEASE_GIL(rkv_inspect_scores)

/* The experimental section too (inspect_scores: for tests and plots). */
#define RKV_EXPERIMENTAL_API
%include "rkv/rkv.h"
