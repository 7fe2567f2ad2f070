/* Creates a cache through an installed librkv and checks the header it was
 * compiled against matches the library it loaded. */
#include <rkv/rkv.h>
#include <stdio.h>

int main(void) {
    rkv_cache_params p;
    rkv_cache *cache = NULL;
    if (rkv_params_default(&p, sizeof p) != RKV_OK) return 1;
    p.max_seqs = 1, p.num_layers = 1, p.num_kv_heads = 1, p.num_q_heads = 1, p.head_dim = 8;
    if (rkv_cache_create(&p, &cache) != RKV_OK) {
        fprintf(stderr, "%s\n", rkv_error_message());
        return 1;
    }
    rkv_cache_destroy(cache);
    if (rkv_version_number() != RKV_VERSION_NUMBER) {
        fprintf(stderr, "header %d, library %u\n", RKV_VERSION_NUMBER, rkv_version_number());
        return 1;
    }
    printf("librkv %s found and working\n", rkv_version_string());
    return 0;
}
