// Tensor maps (TMA descriptors) of one layer's K and V rows, which the
// tensor-core attention kernel's copies of 16-bit rows read
// (kernels/attend_mma.cuh; made by make_attend_row_maps, kernels/launch.h).
#pragma once

#include <cuda.h>

namespace rkv::kernels {

struct AttendRowMaps {
    CUtensorMap keys;    // [rows, head_dim] of the layer's K (rows: seqs x kv_heads x capacity)
    CUtensorMap values;  // the same for V
};

}  // namespace rkv::kernels
