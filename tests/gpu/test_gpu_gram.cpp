/* The tensor-core key-Gram kernels, white box: gram_fused_kernel (mma.sync)
 * and gram_wgmma_kernel (wgmma, on compute capability 9.0) called through their
 * launchers on hand-made scratch, against a float64 reference of the same
 * definition: for every row r and column tile t, the latest column c of t with
 * S[r, c] = (k_r . k_c) inv_r inv_c > tau (the diagonal counts as 0), S there,
 * the row sums of S (slot 0), S[r, 0].
 * The fused kernel (symmetric) keeps a row's latest hit over all tiles from r's
 * own on and writes it to the slot of r's own tile, -1 to the slots after it
 * (the redundancy kernel takes the latest over the slots); the column
 * direction (slots of tiles before r's) is per tile. The wgmma kernel walks
 * each row tile's columns from the last tile down and stops once every row
 * has a hit: it writes a row's latest hit over all columns into slot 0, and
 * S[r, 0] where the reference quirk reads it (rows without a hit).
 *
 * gram_int8_kernel (head_dim 128, compute capability 9.0) must give the wgmma
 * kernel's answers: its int8 filter only skips column tiles where no exact S
 * can pass tau. Its int8 keys are made here as the importance kernel makes
 * them (round(127 k inv)). Each configuration runs with the reference's
 * slot-0 quirk and without it: with it every row tile of the int8 kernel
 * walks (S[r, 0] is exact), without it only those whose int8 pairs found a
 * candidate, and the others' answers come from its row-sum phase.
 *
 * The inputs make every part of the kernels matter: random keys with planted
 * near-duplicates in earlier and later tiles (S ~ 0.99), others planted at
 * S within 0.01 of tau (where int8 products differ from the exact ones by
 * more than the distance to tau: a filter that compared them with tau itself
 * misses hits there), two jobs of different
 * layers, sequences and lengths (700 and 333: partial last tiles), NaN in the
 * slots past the held length (must never be read), tau 0.5, 0.2 and -0.25 (a
 * negative tau makes the diagonal and the padding count, unless masked; at
 * 0.2 normal keys pass the threshold often enough at head_dim 64 (5% of pairs)
 * and 128 (1%) for the wgmma walk to stop after a tile or a few, and rarely at
 * 256: its early stop is tested where it happens and where it does not),
 * f16 and bf16, head_dim 64, 128, 256. Every (row, slot) the redundancy kernel
 * reads must be written: the partials start as a sentinel.
 *
 * On a mismatch the first few are printed with their coordinates and whether
 * they sit on a diagonal tile, in the row direction (t > r's tile) or the
 * column direction (t < r's tile), so a fragment-layout error shows its pattern
 * in one run. */
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <vector>

extern "C" {
#include "gpu_util.h"
}
#include "kernels/launch.h"

namespace {

namespace k = rkv::kernels;

constexpr int kLayers = 2, kSeqs = 2, kHeads = 2, kCap = 700, kTiles = (kCap + 127) / 128, kJobs = 2;
constexpr float kValueTolerance = 1e-5f;
constexpr int32_t kSentinel = 0x7f7f7f7f;  // the bytes the partials start as

struct JobSpec {
    int32_t seq, layer, held;
};
constexpr JobSpec kJobSpecs[kJobs] = {{1, 1, 700}, {0, 0, 333}};

// key := |key| (c u + sqrt(1 - c^2) z) with u = other / |other| and z the
// part of key orthogonal to u, normalised: cos(key, other) = c.
void plant_similarity(float *key, const float *other, int d, float c, uint64_t *rng) {
    double uu = 0.0, kk = 0.0;
    for (int e = 0; e < d; ++e) {
        uu += double(other[e]) * other[e];
        kk += double(key[e]) * key[e];
    }
    const double u_norm = std::sqrt(uu), k_norm = std::sqrt(kk);
    std::vector<double> z(d);
    double zu = 0.0;
    for (int e = 0; e < d; ++e) {
        z[e] = test_rng_normal(rng);
        zu += z[e] * other[e] / u_norm;
    }
    double zz = 0.0;
    for (int e = 0; e < d; ++e) {
        z[e] -= zu * other[e] / u_norm;
        zz += z[e] * z[e];
    }
    const double s = std::sqrt(std::max(0.0, 1.0 - double(c) * c)) / std::sqrt(zz);
    for (int e = 0; e < d; ++e) key[e] = float(k_norm * (double(c) * other[e] / u_norm + s * z[e]));
}

// The reference outputs of one (job, head).
struct Reference {
    std::vector<int32_t> latest;  // [tiles][n]
    std::vector<double> value;    // [tiles][n]
    std::vector<double> row_sum;  // [n]
    std::vector<double> first;    // [n] S[r, 0]
    std::vector<uint8_t> close;   // [n] some S[r, c] lies within 1e-5 of tau: not compared
};

Reference reference(const std::vector<float> &keys, const std::vector<float> &inv, int32_t n, int d, float tau) {
    Reference out;
    out.latest.assign(size_t(kTiles) * n, -1);
    out.value.assign(size_t(kTiles) * n, 0.0);
    out.row_sum.assign(n, 0.0);
    out.first.assign(n, 0.0);
    out.close.assign(n, 0);
    for (int32_t r = 0; r < n; ++r)
        for (int32_t c = 0; c < n; ++c) {
            double s = 0.0;
            if (c != r) {
                double dot = 0.0;
                for (int e = 0; e < d; ++e) dot += double(keys[size_t(r) * d + e]) * keys[size_t(c) * d + e];
                s = dot * inv[r] * inv[c];
            }
            out.row_sum[r] += s;
            if (c == 0) out.first[r] = s;
            if (std::fabs(s - tau) < 1e-5) out.close[r] = 1;
            if (s > tau) {
                out.latest[size_t(c / 128) * n + r] = c;
                out.value[size_t(c / 128) * n + r] = s;
            }
        }
    return out;
}

// What slot t of row r must hold (the value only where latest >= 0: the
// redundancy kernel reads no other).
struct Expected {
    int32_t latest;
    double value;
};

// Tile t's own answer.
Expected per_tile(const Reference &ref, int32_t n, int32_t r, int32_t t) {
    return {ref.latest[size_t(t) * n + r], ref.value[size_t(t) * n + r]};
}

// Row r's latest hit over column tiles `first` .. tiles - 1: the last tile with one.
Expected latest_from(const Reference &ref, int32_t n, int32_t tiles, int32_t r, int32_t first) {
    for (int32_t u = tiles - 1; u >= first; --u)
        if (ref.latest[size_t(u) * n + r] >= 0) return per_tile(ref, n, r, u);
    return {-1, 0.0};
}

// The fused kernel's slot t of row r: the row direction merged into the slot
// of r's own tile, -1 after it; the column direction per tile.
Expected rows_merged(const Reference &ref, int32_t n, int32_t tiles, int32_t r, int32_t t) {
    const int32_t own = r / 128;
    if (t < own) return per_tile(ref, n, r, t);
    if (t > own) return {-1, 0.0};
    return latest_from(ref, n, tiles, r, own);
}

// The wgmma kernel's slot 0 of row r: the latest hit over every column.
Expected overall(const Reference &ref, int32_t n, int32_t tiles, int32_t r) { return latest_from(ref, n, tiles, r, 0); }

struct Outcome {
    int compared = 0, mismatches = 0, skipped = 0;
    int by_kind[4] = {0, 0, 0, 0};  // fused: diagonal, row direction, column direction; wgmma: walk
};

const char *kind_name(int kind) {
    static const char *const names[] = {"diagonal tile", "row direction", "column direction",
                                        "the row's walk over every column tile"};
    return names[kind];
}

// A mismatch of row r in slot t; walk: the wgmma kernel's answer (slot 0, over
// every column), else the fused kernel's slot t, by its direction.
void report(Outcome *o, const char *what, bool walk, int job, int head, int32_t r, int32_t t, const char *field,
            double got, double expected) {
    const int kind = walk ? 3 : t == r / 128 ? 0 : t > r / 128 ? 1 : 2;
    o->by_kind[kind]++;
    if (o->mismatches++ < 12)
        print_message("MISMATCH %s: job %d head %d row %d (row tile %d) slot %d (%s): %s %.7g, reference %.7g\n", what,
                      job, head, r, r / 128, t, kind_name(kind), field, got, expected);
}

// One (dtype, head_dim, tau): both kernels against the reference. Returns the
// mismatches (every configuration runs, so a failure shows which ones fail).
int run_config(rkv_dtype dtype, int d, float tau, bool quirk, bool wgmma, uint64_t seed) {
    int total_mismatches = 0;
    char what[96];
    std::snprintf(what, sizeof what, "%s d=%d tau=%g%s", dtype == RKV_DTYPE_F16 ? "f16" : "bf16", d, tau,
                  quirk ? "" : " no-quirk");
    const size_t slots = size_t(kLayers) * kSeqs * kHeads * kCap;
    // Keys: normal, planted near-duplicates, NaN past each held length.
    std::vector<float> host(slots * d, NAN);
    std::vector<std::vector<float>> head_keys(kJobs * kHeads);
    uint64_t rng = seed;
    for (int jj = 0; jj < kJobs; ++jj)
        for (int h = 0; h < kHeads; ++h) {
            const JobSpec &job = kJobSpecs[jj];
            std::vector<float> &keys = head_keys[jj * kHeads + h];
            keys.resize(size_t(job.held) * d);
            for (float &x : keys) x = test_rng_normal(&rng);
            for (int32_t r = 0; r < job.held; ++r) {
                const float draw = test_rng_uniform(&rng);
                if (draw > 0.2f) continue;
                const int32_t other = int32_t(test_rng_uniform(&rng) * float(job.held)) % job.held;
                if (other == r) continue;
                if (draw <= 0.1f) {  // a near-duplicate
                    for (int e = 0; e < d; ++e)
                        keys[size_t(r) * d + e] = keys[size_t(other) * d + e] + 0.05f * test_rng_normal(&rng);
                } else if (tau > -1.0f && tau < 1.0f) {  // S = c with c within 0.01 of tau
                    plant_similarity(&keys[size_t(r) * d], &keys[size_t(other) * d], d,
                                     tau + 0.02f * (test_rng_uniform(&rng) - 0.5f), &rng);
                }
            }
            for (float &x : keys) x = round_through(dtype, x);  // the values the kernels see
            const size_t slot0 = ((size_t(job.layer) * kSeqs + job.seq) * kHeads + h) * kCap;
            std::copy(keys.begin(), keys.end(), host.begin() + slot0 * d);
        }
    std::vector<uint16_t> stored(slots * d);
    convert_from_f32(host.data(), host.size(), dtype, stored.data());

    // Scratch as the importance kernel leaves it: inverse norms, W partials per tile.
    const size_t heads = size_t(kJobs) * kHeads;
    std::vector<float> inv_norm(heads * kCap, 0.0f), partial_w(heads * kTiles * d, 0.0f);
    std::vector<int8_t> keys8(heads * kTiles * 128 * 128, 0);  // round(127 k / (|k| + 1e-8)), SW128 rows
    std::vector<Reference> refs;
    for (int jj = 0; jj < kJobs; ++jj)
        for (int h = 0; h < kHeads; ++h) {
            const int32_t n = kJobSpecs[jj].held;
            const std::vector<float> &keys = head_keys[jj * kHeads + h];
            std::vector<float> inv(n);
            const size_t row = (size_t(jj) * kHeads + h) * kCap;
            for (int32_t r = 0; r < n; ++r) {
                double squares = 0.0;
                for (int e = 0; e < d; ++e) squares += double(keys[size_t(r) * d + e]) * keys[size_t(r) * d + e];
                inv[r] = 1.0f / (float(std::sqrt(squares)) + 1e-8f);
                inv_norm[row + r] = inv[r];
            }
            for (int32_t r = 0; r < n; ++r)
                for (int e = 0; e < d; ++e)
                    partial_w[((size_t(jj) * kHeads + h) * kTiles + r / 128) * d + e] += keys[size_t(r) * d + e] * inv[r];
            refs.push_back(reference(keys, inv, n, d, tau));
            // [tiles * 128][128] per head, 16-byte chunk c of row r at c XOR r % 8, zeros past n.
            for (int32_t r = 0; r < n && d == 128; ++r)
                for (int e = 0; e < d; ++e) {
                    const float scaled = keys[size_t(r) * d + e] * inv[r] * 127.0f;
                    const size_t at = ((size_t(jj) * kHeads + h) * kTiles * 128 + size_t(r)) * 128 +
                                      size_t((((e / 16) ^ (r & 7)) * 16) + e % 16);
                    keys8[at] = int8_t(std::lrint(std::min(127.0f, std::max(-127.0f, scaled))));
                }
        }

    int32_t lengths[kLayers * kSeqs] = {0};
    for (const JobSpec &job : kJobSpecs) lengths[job.layer * kSeqs + job.seq] = job.held;
    void *d_keys = gpu_upload(stored.data(), stored.size() * 2);
    int32_t *d_lengths = static_cast<int32_t *>(gpu_upload(lengths, sizeof lengths));
    float *d_inv = static_cast<float *>(gpu_upload(inv_norm.data(), inv_norm.size() * 4));
    float *d_w = static_cast<float *>(gpu_upload(partial_w.data(), partial_w.size() * 4));
    const size_t partials = heads * kTiles * kCap;
    float *d_sum = static_cast<float *>(gpu_alloc(partials * 4));
    int32_t *d_latest = static_cast<int32_t *>(gpu_alloc(partials * 4));
    float *d_value = static_cast<float *>(gpu_alloc(partials * 4));
    float *d_first = static_cast<float *>(gpu_alloc(heads * kCap * 4));
    int8_t *d_keys8 = static_cast<int8_t *>(gpu_upload(keys8.data(), keys8.size()));
    // the int8 kernel's answers and counts, which the importance kernel zeroes before it
    unsigned long long *d_answers = static_cast<unsigned long long *>(gpu_alloc(heads * kCap * 8));
    unsigned *d_done = static_cast<unsigned *>(gpu_alloc(heads * 4));

    k::CompressParams p{};
    p.cache.keys = d_keys;
    p.cache.lengths = d_lengths;
    p.cache.max_seqs = kSeqs;
    p.cache.kv_heads = kHeads;
    p.cache.q_heads = kHeads * 4;
    p.cache.capacity = kCap;
    p.cache.head_dim = d;
    p.cache.window = 8;
    p.cache.dtype = dtype;
    p.layer_slots = int64_t(kSeqs) * kHeads * kCap;
    p.scratch.inv_norm = d_inv;
    p.scratch.partial_w = d_w;
    p.scratch.partial_sum = d_sum;
    p.scratch.partial_latest = d_latest;
    p.scratch.partial_value = d_value;
    p.scratch.first_column = d_first;
    p.scratch.keys_int8 = d_keys8;
    p.scratch.int8_answers = d_answers;
    p.scratch.int8_done = d_done;
    p.scratch.tiles = kTiles;
    p.scratch.rows = 32;
    p.threshold = tau;
    p.slot0_quirk = quirk;
    p.gram_fused = 1;
    p.num_jobs = kJobs;
    for (int jj = 0; jj < kJobs; ++jj) p.jobs[jj] = k::Job{kJobSpecs[jj].seq, kJobSpecs[jj].layer, kJobSpecs[jj].held, 0, 0};
    CUDA_OK(k::configure_gram_kernels(dtype, d));
    CUDA_OK(k::configure_gram_wgmma_kernels(dtype, d));
    CUDA_OK(k::configure_gram_int8_kernels(dtype, d));

    // kernel 0: mma.sync (fused), 1: wgmma, 2: wgmma with the int8 filter (head_dim 128).
    // The int8 kernel must also give the wgmma kernel's bits wherever the
    // redundancy kernel reads (RKV_MATMUL_AUTO picks either by measured time).
    std::vector<float> wgmma_sum, wgmma_value, wgmma_first;
    std::vector<int32_t> wgmma_latest;
    for (int kernel = 0; kernel < (wgmma ? (d == 128 ? 3 : 2) : 1); ++kernel) {
        char name[128];
        std::snprintf(name, sizeof name, "%s %s", kernel == 2 ? "wgmma int8" : kernel ? "wgmma" : "mma.sync", what);
        CUDA_OK(cudaMemset(d_sum, 0x7f, partials * 4));
        CUDA_OK(cudaMemset(d_latest, 0x7f, partials * 4));
        CUDA_OK(cudaMemset(d_value, 0x7f, partials * 4));
        CUDA_OK(cudaMemset(d_first, 0x7f, heads * kCap * 4));
        CUDA_OK(cudaMemset(d_answers, 0, heads * kCap * 8));
        CUDA_OK(cudaMemset(d_done, 0, heads * 4));
        CUDA_OK(kernel == 2 ? k::launch_gram_int8(p, kCap, nullptr)
                : kernel    ? k::launch_gram_wgmma(p, kCap, nullptr)
                            : k::launch_gram_fused(p, kCap, nullptr));
        CUDA_OK(cudaDeviceSynchronize());
        std::vector<float> sum(partials), value(partials), first(heads * kCap);
        std::vector<int32_t> latest(partials);
        gpu_download(sum.data(), d_sum, partials * 4);
        gpu_download(latest.data(), d_latest, partials * 4);
        gpu_download(value.data(), d_value, partials * 4);
        gpu_download(first.data(), d_first, heads * kCap * 4);
        Outcome o;
        int differ = 0;  // int8: entries the redundancy kernel reads that differ from the wgmma kernel's
        if (kernel == 1) {
            wgmma_sum = sum;
            wgmma_value = value;
            wgmma_first = first;
            wgmma_latest = latest;
        }
        for (int jj = 0; jj < kJobs; ++jj)
            for (int h = 0; h < kHeads; ++h) {
                const Reference &ref = refs[jj * kHeads + h];
                const int32_t n = kJobSpecs[jj].held, tiles = (n + 127) / 128;
                const size_t row = (size_t(jj) * kHeads + h) * kCap;
                for (int32_t r = 0; r < n; ++r) {
                    if (kernel == 2) {
                        const size_t at = row * kTiles + r;  // slot 0
                        const auto same = [](float a, float b) { return std::memcmp(&a, &b, 4) == 0; };
                        const bool read_first = quirk && wgmma_latest[at] < 0;
                        if (latest[at] != wgmma_latest[at] || !same(sum[at], wgmma_sum[at]) ||
                            (latest[at] >= 0 && !same(value[at], wgmma_value[at])) ||
                            (read_first && !same(first[row + r], wgmma_first[row + r])))
                            if (differ++ < 4)
                                print_message("DIFFERS %s: job %d head %d row %d: latest %d / %d, value %.9g / %.9g, "
                                              "sum %.9g / %.9g, S[r, 0] %.9g / %.9g (int8 / wgmma)\n",
                                              name, jj, h, r, latest[at], wgmma_latest[at], value[at], wgmma_value[at],
                                              sum[at], wgmma_sum[at], first[row + r], wgmma_first[row + r]);
                    }
                    const double s = sum[row * kTiles + r];
                    if (std::fabs(s - ref.row_sum[r]) > 1e-3 * std::max(1.0, std::fabs(ref.row_sum[r])))
                        report(&o, name, kernel, jj, h, r, r / 128, "row sum", s, ref.row_sum[r]);
                    const bool first_read = quirk && (kernel == 0 || overall(ref, n, tiles, r).latest < 0);
                    if (first_read && std::fabs(first[row + r] - ref.first[r]) > kValueTolerance)
                        report(&o, name, kernel, jj, h, r, 0, "S[r, 0]", first[row + r], ref.first[r]);
                    if (ref.close[r]) {
                        o.skipped++;
                        continue;
                    }
                    for (int32_t t = 0; t < (kernel ? 1 : tiles); ++t) {
                        const size_t at = row * kTiles + size_t(t) * kCap + r;
                        const Expected want = kernel ? overall(ref, n, tiles, r) : rows_merged(ref, n, tiles, r, t);
                        o.compared++;
                        if (latest[at] == kSentinel)
                            report(&o, name, kernel, jj, h, r, t, "never written: latest", latest[at], want.latest);
                        else if (latest[at] != want.latest)
                            report(&o, name, kernel, jj, h, r, t, "latest", latest[at], want.latest);
                        else if (want.latest >= 0 && std::fabs(value[at] - want.value) > kValueTolerance)
                            report(&o, name, kernel, jj, h, r, t, "value", value[at], want.value);
                    }
                }
            }
        if (kernel == 2)
            print_message("%-32s %6d (row, slot) pairs: %d mismatches, %d rows within 1e-5 of tau not compared; "
                          "%d rows differ from the wgmma kernel's bits\n",
                          name, o.compared, o.mismatches, o.skipped, differ);
        else if (kernel)
            print_message("%-32s %6d (row, slot) pairs: %d mismatches, %d rows within 1e-5 of tau not compared\n",
                          name, o.compared, o.mismatches, o.skipped);
        else
            print_message("%-32s %6d (row, slot) pairs: %d mismatches (diagonal %d, row direction %d, column "
                          "direction %d), %d rows within 1e-5 of tau not compared\n",
                          name, o.compared, o.mismatches, o.by_kind[0], o.by_kind[1], o.by_kind[2], o.skipped);
        total_mismatches += o.mismatches + differ;
    }
    gpu_free(d_keys);
    gpu_free(d_lengths);
    gpu_free(d_inv);
    gpu_free(d_w);
    gpu_free(d_sum);
    gpu_free(d_latest);
    gpu_free(d_value);
    gpu_free(d_first);
    gpu_free(d_keys8);
    gpu_free(d_answers);
    gpu_free(d_done);
    return total_mismatches;
}

bool device_has_wgmma() {
    int major = 0, minor = 0;
    CUDA_OK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, 0));
    CUDA_OK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, 0));
    return k::gram_wgmma_supported(RKV_DTYPE_BF16, 128, 32, major, minor);
}

void test_gram_kernels_against_reference(void **state) {
    (void)state;
    const bool wgmma = device_has_wgmma();
    if (!wgmma) print_message("this GPU is not compute capability 9.0: the wgmma kernel is not tested\n");
    const int dims_full[] = {64, 128, 256}, dims_small[] = {128};
    const int *dims = gpu_small() ? dims_small : dims_full;
    const int num_dims = gpu_small() ? 1 : 3;
    uint64_t seed = 5;
    int mismatches = 0;
    for (rkv_dtype dtype : {RKV_DTYPE_BF16, RKV_DTYPE_F16})
        for (int di = 0; di < num_dims; ++di)
            for (float tau : {0.5f, 0.2f, -0.25f})
                for (bool quirk : {true, false}) {
                    if (gpu_small() && (dtype == RKV_DTYPE_F16 || tau < 0)) continue;
                    mismatches += run_config(dtype, dims[di], tau, quirk, wgmma, seed++);
                }
    if (mismatches) fail_msg("%d mismatches against the float64 reference (MISMATCH lines above)", mismatches);
}

}  // namespace

int main(void) {
    GPU_SKIP_WITHOUT_DEVICE();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gram_kernels_against_reference),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
