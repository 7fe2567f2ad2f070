// C shim over the static library's test hook: rkv::testing_mark_faulted has C++
// linkage, so C tests reach it through this extern "C" function. It puts a cache
// in the state a device fault leaves it in (every later call: RKV_ERR_FAULTED).
#include "rkv/rkv.h"

namespace rkv {
void testing_mark_faulted(rkv_cache *cache, const char *why);
}  // namespace rkv

extern "C" void test_mark_faulted(rkv_cache *cache, const char *why) {
    rkv::testing_mark_faulted(cache, why);
}
