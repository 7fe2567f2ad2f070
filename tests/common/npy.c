#include "npy.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int parse_shape(const char *header, npy_array *out) {
    const char *shape = strstr(header, "'shape':");
    if (!shape) return -1;
    shape = strchr(shape, '(');
    if (!shape) return -1;
    ++shape;
    out->ndim = 0;
    out->count = 1;
    while (*shape && *shape != ')') {
        while (*shape == ' ' || *shape == ',') ++shape;
        if (*shape == ')') break;
        char *end;
        long long dim = strtoll(shape, &end, 10);
        if (end == shape || out->ndim == 8) return -1;
        out->shape[out->ndim++] = dim;
        out->count *= dim;
        shape = end;
    }
    return 0;
}

int npy_load(const char *path, npy_array *out, char *error, size_t error_len) {
    memset(out, 0, sizeof *out);
    FILE *file = fopen(path, "rb");
    if (!file) {
        snprintf(error, error_len, "cannot open %s", path);
        return -1;
    }
    unsigned char magic[8];
    if (fread(magic, 1, 8, file) != 8 || memcmp(magic, "\x93NUMPY", 6) != 0) {
        snprintf(error, error_len, "%s is not a .npy file", path);
        fclose(file);
        return -1;
    }
    size_t header_len;
    if (magic[6] == 1) {
        unsigned char len[2];
        if (fread(len, 1, 2, file) != 2) goto truncated;
        header_len = (size_t)len[0] | ((size_t)len[1] << 8);
    } else {
        unsigned char len[4];
        if (fread(len, 1, 4, file) != 4) goto truncated;
        header_len = (size_t)len[0] | ((size_t)len[1] << 8) | ((size_t)len[2] << 16) |
                     ((size_t)len[3] << 24);
    }
    char *header = calloc(header_len + 1, 1);
    if (!header || fread(header, 1, header_len, file) != header_len) {
        free(header);
        goto truncated;
    }
    const char *descr = strstr(header, "'descr': '");
    if (!descr || strstr(header, "'fortran_order': True") || parse_shape(header, out) != 0) {
        snprintf(error, error_len, "%s: unsupported header %s", path, header);
        free(header);
        fclose(file);
        return -1;
    }
    descr += strlen("'descr': '");
    snprintf(out->dtype, sizeof out->dtype, "%.3s", descr);
    free(header);
    size_t element = strcmp(out->dtype, "<f4") == 0 ? 4 : strcmp(out->dtype, "<i8") == 0 ? 8 : 0;
    if (element == 0) {
        snprintf(error, error_len, "%s: dtype %s is not <f4 or <i8", path, out->dtype);
        fclose(file);
        return -1;
    }
    out->data = malloc((size_t)out->count * element + 1);
    if (!out->data || fread(out->data, element, (size_t)out->count, file) != (size_t)out->count) {
        npy_free(out);
        goto truncated;
    }
    fclose(file);
    return 0;
truncated:
    snprintf(error, error_len, "%s is truncated", path);
    fclose(file);
    return -1;
}

void npy_free(npy_array *array) {
    free(array->data);
    array->data = NULL;
}
