// The kept-tokens page without a model: spans never split a UTF-8 character
// (a byte-level tokenizer may), invalid bytes become U+FFFD so the page's JSON
// stays valid, and kept_counts on a real librkv cache: every held token is
// counted once per head, and the uncompressed tail (tokens appended since the
// last compression) starts where the cache's lengths say.
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "kept_html.h"
#include "test_util.h"

using namespace engine;

namespace {

bool same_spans(const std::vector<KeptSpan> &got, const std::vector<KeptSpan> &want) {
    if (got.size() != want.size()) return false;
    for (size_t i = 0; i < got.size(); ++i)
        if (got[i].text != want[i].text || got[i].first != want[i].first || got[i].tokens != want[i].tokens)
            return false;
    return true;
}

void check_spans() {
    // "日" = e6 97 a5 split over two tokens; ASCII around it.
    EXPECT(same_spans(kept_spans({"a", "\xe6\x97", "\xa5", "b"}), {{"a", 0, 1}, {"\xe6\x97\xa5", 1, 2}, {"b", 3, 1}}),
           "a character split over two tokens is one span");
    // An emoji (f0 9f 98 80) over three tokens, the last also starting a word.
    EXPECT(same_spans(kept_spans({"\xf0\x9f", "\x98", "\x80!", " ok"}), {{"\xf0\x9f\x98\x80!", 0, 3}, {" ok", 3, 1}}),
           "a 4-byte character over three tokens");
    // Two characters each split, back to back: "éé" = c3 a9 c3 a9 as c3 | a9 c3 | a9.
    EXPECT(same_spans(kept_spans({"\xc3", "\xa9\xc3", "\xa9"}), {{"\xc3\xa9\xc3\xa9", 0, 3}}),
           "chained splits stay one span");
    const std::string fffd = "\xef\xbf\xbd";
    EXPECT(same_spans(kept_spans({"\xff", "x"}), {{fffd, 0, 1}, {"x", 1, 1}}), "an invalid byte becomes U+FFFD");
    EXPECT(same_spans(kept_spans({"\x80" "abc"}), {{fffd + "abc", 0, 1}}), "a stray continuation byte");
    EXPECT(same_spans(kept_spans({"x", "\xe6\x97"}), {{"x", 0, 1}, {fffd + fffd, 1, 1}}),
           "a character cut off at the end");
    EXPECT(kept_spans({}).empty(), "no tokens, no spans");
}

void check_page() {
    KeptCounts counts;
    counts.heads = 6;
    counts.kept = {0, 1, 6, 3, 6, 6};
    counts.uncompressed_from = 5;
    const std::string path = "test_engine_kept_page.html";
    const KeptPage page =
        write_kept_html(path, "T <&>", "S", {"<a>", "\xe6\x97", "\xa5", "\"q\"", "</script>", "\n"}, counts);
    EXPECT(page.tokens == 6 && page.spans == 5 && page.held == 4 && page.uncompressed == 1,
           "page: %d tokens, %d spans, %d held, %d uncompressed", page.tokens, page.spans, page.held,
           page.uncompressed);
    std::ifstream in(path);
    const std::string html((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    EXPECT(html.find("<title>T &lt;&amp;&gt;</title>") != std::string::npos, "title escaped");
    EXPECT(html.find("[\"\xe6\x97\xa5\", 1, [1, 6]]") != std::string::npos, "the split character: one span, two counts");
    EXPECT(html.find("[\"\\\"q\\\"\", 3, [3]]") != std::string::npos, "quotes escaped");
    EXPECT(html.find("[\"<\\/script>\", 4, [6]]") != std::string::npos, "</script> cannot end the data early");
    EXPECT(html.find("[\"\\u000a\", 5, [6]]") != std::string::npos, "control characters escaped");
    EXPECT(html.find("\"uncompressed_from\": 5") != std::string::npos, "the tail is in the data");
    EXPECT(html.find("tokens 5 to 5, appended after the last compression") != std::string::npos,
           "the tail is explained");
    std::remove(path.c_str());
}

// A small CPU cache: 2 layers x 2 KV heads, budget 8 + buffer 4, fed one
// token at a time until it has compressed a few times.
void check_counts() {
    rkv_cache_params p;
    rkv_params_default(&p, sizeof p);
    p.max_seqs = 1, p.num_layers = 2, p.num_kv_heads = 2, p.num_q_heads = 2, p.head_dim = 8;
    p.budget = 8, p.buffer = 4, p.window = 2;
    rkv_cache *cache = nullptr;
    if (rkv_cache_create(&p, &cache) != RKV_OK) {
        EXPECT(false, "rkv_cache_create: %s", rkv_error_message());
        return;
    }
    std::vector<float> k(16), v(16), q(16);  // [heads, dim] one token
    const int32_t seq = 0, tokens = 23;
    uint32_t state = 7;
    for (int32_t t = 0; t < tokens; ++t)
        for (int32_t layer = 0; layer < 2; ++layer) {
            for (size_t i = 0; i < 16; ++i) {
                state = state * 1664525u + 1013904223u;
                k[i] = float(state >> 8) / 16777216.0f - 0.5f;
                v[i] = q[i] = k[(i + 3) % 16];
            }
            rkv_append_args a;
            std::memset(&a, 0, sizeof a);
            a.struct_size = sizeof a;
            a.layer = layer, a.num_seqs = 1, a.seq_ids = &seq;
            a.k = {k.data(), RKV_DTYPE_F32, 2, 8, 16, 0, 8, int64_t(k.size())};
            a.v = {v.data(), RKV_DTYPE_F32, 2, 8, 16, 0, 8, int64_t(v.size())};
            a.q = {q.data(), RKV_DTYPE_F32, 2, 8, 16, 0, 8, int64_t(q.size())};
            EXPECT(rkv_append(cache, &a, nullptr) == RKV_OK, "append: %s", rkv_error_message());
        }
    // Full at 12 held: compressed to 8 when tokens 12, 16 and 20 arrive; 20, 21, 22 came after.
    const KeptCounts counts = kept_counts(cache, 0, tokens, 0);
    int64_t total = 0;
    for (int32_t n : counts.kept) total += n;
    int64_t logical = 0;
    int32_t physical = 0;
    rkv_seq_length(cache, 0, 0, &logical, &physical);
    EXPECT(counts.heads == 4 && physical == 11 && total == 4 * 11, "heads %d, physical %d, counted %lld",
           counts.heads, physical, (long long)total);
    EXPECT(counts.uncompressed_from == 20, "uncompressed from %d, expected 20", counts.uncompressed_from);
    for (int32_t t = counts.uncompressed_from; t < tokens; ++t)
        EXPECT(counts.kept[size_t(t)] == 4, "tail token %d held by %d of 4", t, counts.kept[size_t(t)]);
    rkv_cache_destroy(cache);
}

}  // namespace

int main() {
    check_spans();
    check_page();
    check_counts();
    return finish();
}
