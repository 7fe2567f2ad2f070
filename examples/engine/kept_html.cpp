#include "kept_html.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <stdexcept>

namespace engine {

KeptCounts kept_counts(const rkv_cache *cache, int32_t seq, int32_t positions, int32_t protected_prompt) {
    rkv_cache_params p;
    rkv_params_default(&p, sizeof p);
    rkv_cache_get_params(cache, &p);
    KeptCounts counts;
    counts.kept.assign(size_t(positions), 0);
    counts.heads = p.num_layers * p.num_kv_heads;
    std::vector<int32_t> held;  // [physical length] positions one head holds
    for (int32_t layer = 0; layer < p.num_layers; ++layer) {
        int32_t physical = 0;
        rkv_seq_length(cache, seq, layer, nullptr, &physical);
        held.resize(size_t(physical));
        for (int32_t head = 0; head < p.num_kv_heads; ++head) {
            int32_t count = 0;
            const rkv_status status =
                rkv_seq_positions(cache, seq, layer, head, held.data(), physical, &count);
            if (status != RKV_OK)
                throw std::runtime_error(std::string("rkv_seq_positions: ") + rkv_error_message());
            for (int32_t i = 0; i < count; ++i)
                if (held[size_t(i)] >= 0 && held[size_t(i)] < positions) ++counts.kept[size_t(held[size_t(i)])];
        }
    }
    // A compression leaves budget (+ the protected prompt) tokens per head;
    // every token appended since is still held by every head.
    rkv_stats stats;
    std::memset(&stats, 0, sizeof stats);
    stats.struct_size = sizeof stats;
    rkv_cache_stats(cache, seq, &stats);
    int64_t logical = 0;
    int32_t physical = 0;
    rkv_seq_length(cache, seq, 0, &logical, &physical);
    if (stats.compressions == 0 || p.method == RKV_METHOD_FULL)
        counts.uncompressed_from = p.method == RKV_METHOD_FULL ? positions : 0;
    else
        counts.uncompressed_from =
            int32_t(logical - std::max<int64_t>(0, int64_t(physical) - p.budget - protected_prompt));
    return counts;
}

namespace {

// Bytes a UTF-8 sequence starting with `lead` has (0: not a lead byte).
int utf8_length(unsigned char lead) {
    if (lead < 0x80) return 1;
    if (lead >= 0xc2 && lead <= 0xdf) return 2;
    if (lead >= 0xe0 && lead <= 0xef) return 3;
    if (lead >= 0xf0 && lead <= 0xf4) return 4;
    return 0;
}

bool is_continuation(unsigned char c) { return (c & 0xc0) == 0x80; }

// Whether `s` ends inside a character whose remaining bytes may come next.
bool ends_mid_character(const std::string &s) {
    size_t continuation = 0;
    while (continuation < s.size() && continuation < 3 &&
           is_continuation(static_cast<unsigned char>(s[s.size() - 1 - continuation])))
        ++continuation;
    if (continuation == s.size()) return false;  // no lead byte: invalid, nothing can complete it
    const int need = utf8_length(static_cast<unsigned char>(s[s.size() - 1 - continuation]));
    return need > 1 && int(continuation) + 1 < need;
}

// `s` with every byte that is not part of a well-formed character replaced by U+FFFD.
std::string valid_utf8(const std::string &s) {
    std::string out;
    for (size_t i = 0; i < s.size();) {
        const int n = utf8_length(static_cast<unsigned char>(s[i]));
        bool ok = n > 0 && i + size_t(n) <= s.size();
        for (int k = 1; ok && k < n; ++k) ok = is_continuation(static_cast<unsigned char>(s[i + size_t(k)]));
        if (ok) {
            out.append(s, i, size_t(n));
            i += size_t(n);
        } else {
            out += "\xef\xbf\xbd";
            ++i;
        }
    }
    return out;
}

// A JSON string literal that is also safe inside <script> (no "</").
std::string json_string(const std::string &s) {
    std::string out = "\"";
    for (size_t i = 0; i < s.size(); ++i) {
        const unsigned char c = static_cast<unsigned char>(s[i]);
        if (c == '"' || c == '\\') {
            out += '\\';
            out += char(c);
        } else if (c == '/' && i > 0 && s[i - 1] == '<') {
            out += "\\/";
        } else if (c < 0x20) {
            char escaped[8];
            std::snprintf(escaped, sizeof escaped, "\\u%04x", c);
            out += escaped;
        } else {
            out += char(c);
        }
    }
    return out + "\"";
}

std::string html_escape(const std::string &s) {
    std::string out;
    for (char c : s) {
        if (c == '<') out += "&lt;";
        else if (c == '>') out += "&gt;";
        else if (c == '&') out += "&amp;";
        else out += c;
    }
    return out;
}

const char *const kPageStart = R"(<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>%TITLE%</title>
<style>
 body { font: 15px/1.9 ui-monospace, monospace; max-width: 72em; margin: 2em auto; color: #222; }
 h1 { font-size: 1.3em; }
 p.note { font-family: system-ui, sans-serif; line-height: 1.5; max-width: 60em; }
 #trace { white-space: pre-wrap; word-break: break-word; }
 .tok { border-radius: 3px; box-shadow: inset -1px 0 #fff; }  /* a hairline between tokens */
 .gone { color: #9a9a9a; }
 .tok.tail { box-shadow: inset -1px 0 #fff, inset 0 -2px 0 #3b6fc4; }
 #legend { font-family: system-ui, sans-serif; font-size: 13px; line-height: 2.2; }
 #legend span { padding: 2px .6em; margin-right: .3em; border-radius: 3px; white-space: nowrap; }
</style></head>
<body>
<h1>%TITLE%</h1>
<p class="note">%SUBTITLE%</p>
<p class="note">Each token's background shows how many of the %HEADS% (layer, KV head) pairs still
hold it. librkv evicts per head, so a token can live on in a few heads after most have dropped
it; the yellow end of the scale marks those. Grey text: evicted by every head. Blue: %TAIL%
Hover over a token for its position and counts. A character the tokenizer split over several
tokens is shown whole, coloured by the token held most.</p>
<div id="legend"></div>
<div id="trace"></div>
<script id="data" type="application/json">
)";

// Colours: a few bins from "one head" (yellow, clearly visible) to "every
// head" (deep red); text turns white on the dark ones.
const char *const kPageEnd = R"(
</script>
<script>
const data = JSON.parse(document.getElementById('data').textContent);
const H = data.heads;
const limits = [...new Set([1, Math.ceil(0.05 * H), Math.ceil(0.25 * H), Math.ceil(0.5 * H), H - 1, H])]
  .filter(n => n >= 1 && n <= H).sort((a, b) => a - b);
const palette = ['#ffe45c', '#ffc23d', '#ff9a3c', '#f2613a', '#d22b3a', '#8e1230'];
const colours = palette.slice(palette.length - limits.length);
const TAIL = '#b9d3ff';
const bin = n => limits.findIndex(limit => n <= limit);
const style = (span, n, tail) => {
  if (tail) { span.style.backgroundColor = TAIL; span.classList.add('tail'); return; }
  if (n === 0) { span.classList.add('gone'); return; }
  const b = bin(n);
  span.style.backgroundColor = colours[b];
  if (b >= colours.length - 2) span.style.color = '#fff';
};
const trace = document.getElementById('trace');
data.spans.forEach(([text, first, counts]) => {
  const span = document.createElement('span');
  const kept = Math.max(...counts);
  const tail = first >= data.uncompressed_from;
  span.className = 'tok';
  span.dataset.kept = kept;
  span.dataset.tail = tail ? 1 : 0;
  const where = counts.length > 1 ? `positions ${first}-${first + counts.length - 1} (one character)`
                                  : `position ${first}`;
  span.title = `${where}: held by ${counts.join(' and ')} of ${H} (layer, KV head) pairs` +
               (tail ? ' (not compressed yet)' : '');
  style(span, kept, tail);
  span.textContent = text;
  trace.appendChild(span);
});
const legend = document.getElementById('legend');
const swatch = (label, n, tail) => {
  const span = document.createElement('span');
  span.textContent = label;
  style(span, n, tail);
  legend.appendChild(span);
};
legend.append('held by: ');
swatch('no head (evicted)', 0, false);
limits.forEach((limit, i) => {
  const low = i === 0 ? 1 : limits[i - 1] + 1;
  swatch(limit === H ? `all ${H}` : low === limit ? `${low}` : `${low}-${limit}`, limit, false);
});
swatch('not compressed yet', H, true);
</script>
</body></html>
)";

std::string replace_all(std::string s, const std::string &from, const std::string &to) {
    for (size_t at = s.find(from); at != std::string::npos; at = s.find(from, at + to.size()))
        s.replace(at, from.size(), to);
    return s;
}

}  // namespace

std::vector<KeptSpan> kept_spans(const std::vector<std::string> &token_texts) {
    std::vector<KeptSpan> spans;
    std::string bytes;  // the open span's bytes
    KeptSpan open;
    for (size_t p = 0; p < token_texts.size(); ++p) {
        if (open.tokens == 0) open.first = int32_t(p);
        bytes += token_texts[p];
        ++open.tokens;
        // A character has at most 4 bytes: a span never needs more than 4 tokens.
        if (!ends_mid_character(bytes) || open.tokens == 4 || p + 1 == token_texts.size()) {
            open.text = valid_utf8(bytes);
            spans.push_back(open);
            open = KeptSpan();
            bytes.clear();
        }
    }
    return spans;
}

KeptPage write_kept_html(const std::string &path, const std::string &title, const std::string &subtitle,
                         const std::vector<std::string> &token_texts, const KeptCounts &counts) {
    std::ofstream out(path);
    if (!out) throw std::runtime_error("cannot write " + path);
    const int32_t n = int32_t(token_texts.size());
    const std::string tail =
        counts.uncompressed_from >= n
            ? "none here (no token arrived after the last compression)."
        : counts.uncompressed_from == 0
            ? "every token: the cache has not compressed yet."
            : "tokens " + std::to_string(counts.uncompressed_from) + " to " + std::to_string(n - 1) +
                  ", appended after the last compression; every head holds them until the next compression "
                  "scores them.";
    std::string start = replace_all(kPageStart, "%TITLE%", html_escape(title));
    start = replace_all(start, "%SUBTITLE%", html_escape(subtitle));
    start = replace_all(start, "%HEADS%", std::to_string(counts.heads));
    out << replace_all(start, "%TAIL%", html_escape(tail));
    out << "{\"heads\": " << counts.heads << ", \"uncompressed_from\": " << counts.uncompressed_from
        << ", \"spans\": [";
    KeptPage page;
    page.tokens = n;
    for (const KeptSpan &span : kept_spans(token_texts)) {
        int32_t most = 0;
        out << (page.spans ? ",\n" : "\n") << "[" << json_string(span.text) << ", " << span.first << ", [";
        for (int32_t t = 0; t < span.tokens; ++t) {
            const size_t p = size_t(span.first + t);
            const int32_t kept = p < counts.kept.size() ? counts.kept[p] : 0;
            most = std::max(most, kept);
            out << (t ? ", " : "") << kept;
        }
        out << "]]";
        ++page.spans;
        page.held += most > 0;
        page.uncompressed += span.first >= counts.uncompressed_from;
    }
    out << "]}";
    out << kPageEnd;
    if (!out) throw std::runtime_error("cannot write " + path);
    return page;
}

}  // namespace engine
