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
#define RKV_EXPERIMENTAL_API
#include <stdlib.h>
#include <string.h>
#include "rkv/rkv.h"
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
%typemap(in, numinputs=0) rkv_cache **cache (rkv_cache *created = NULL) { $1 = &created; }
%typemap(argout) rkv_cache **cache {
    $result = rkv_py_append_output($result,
                                   SWIG_NewPointerObj(created$argnum, $*1_descriptor, 0));
    if (!$result) SWIG_fail;
}

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
#endif /* SWIGPYTHON */

/* ===========================================================================
 * Both
 * ======================================================================== */

/* Rule 3: constructors that set struct_size; params start from the defaults. */
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

/* The experimental section too (inspect_scores: for tests and plots). */
#define RKV_EXPERIMENTAL_API
%include "rkv/rkv.h"
