/* Minimal reader for the NumPy .npy files of the golden vectors: version 1/2
 * headers, little-endian float32 ('<f4') and int64 ('<i8'), C order. */
#ifndef RKV_TEST_NPY_H
#define RKV_TEST_NPY_H

#include <stddef.h>
#include <stdint.h>

typedef struct npy_array {
    char dtype[8];     /* "<f4" or "<i8" */
    int ndim;
    int64_t shape[8];
    int64_t count;     /* product of shape */
    void *data;        /* count elements; free with npy_free */
} npy_array;

/* Returns 0 on success; on failure a message in `error` (size error_len). */
int npy_load(const char *path, npy_array *out, char *error, size_t error_len);
void npy_free(npy_array *array);

#endif
