#include "kept_html.h"

#include <fstream>
#include <stdexcept>

#include "tokenizer.h"

namespace engine {

std::vector<int32_t> kept_counts(const rkv_cache *cache, int32_t seq, int32_t positions) {
    rkv_cache_params p;
    rkv_params_default(&p, sizeof p);
    rkv_cache_get_params(cache, &p);
    std::vector<int32_t> kept(size_t(positions), 0);
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
                if (held[size_t(i)] >= 0 && held[size_t(i)] < positions) ++kept[size_t(held[size_t(i)])];
        }
    }
    return kept;
}

namespace {

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
 #trace { white-space: pre-wrap; word-break: break-word; }
 .tok { border-radius: 3px; }
 .legend span { padding: 0 .6em; }
</style></head>
<body>
<h1>%TITLE%</h1>
<p>%SUBTITLE%</p>
<p class="legend">kept by: <span id="legend"></span></p>
<div id="trace"></div>
<script id="data" type="application/json">
)";

// Colour: white (evicted everywhere) to deep red (held by every head).
const char *const kPageEnd = R"(
</script>
<script>
const data = JSON.parse(document.getElementById('data').textContent);
const colour = n => n === 0 ? '' : `rgba(214, 39, 40, ${(0.12 + 0.88 * n / data.heads).toFixed(3)})`;
const trace = document.getElementById('trace');
data.tokens.forEach(([text, kept], position) => {
  const span = document.createElement('span');
  span.className = 'tok';
  span.dataset.kept = kept;
  span.title = `position ${position}: held by ${kept} of ${data.heads} (layer, KV head) pairs`;
  span.style.backgroundColor = colour(kept);
  span.textContent = text;
  trace.appendChild(span);
});
const legend = document.getElementById('legend');
[0, 0.25, 0.5, 0.75, 1].forEach(f => {
  const span = document.createElement('span');
  const n = Math.round(f * data.heads);
  span.textContent = `${n}`;
  span.style.backgroundColor = colour(n);
  legend.appendChild(span);
});
</script>
</body></html>
)";

std::string replace_all(std::string s, const std::string &from, const std::string &to) {
    for (size_t at = s.find(from); at != std::string::npos; at = s.find(from, at + to.size()))
        s.replace(at, from.size(), to);
    return s;
}

}  // namespace

int32_t write_kept_html(const std::string &path, const std::string &title, const std::string &subtitle,
                        const Tokenizer &tokenizer, const std::vector<int32_t> &tokens,
                        const std::vector<int32_t> &kept, int32_t heads) {
    std::ofstream out(path);
    if (!out) throw std::runtime_error("cannot write " + path);
    out << replace_all(replace_all(kPageStart, "%TITLE%", html_escape(title)), "%SUBTITLE%", html_escape(subtitle));
    out << "{\"heads\": " << heads << ", \"tokens\": [";
    int32_t coloured = 0;
    for (size_t p = 0; p < tokens.size(); ++p) {
        const int32_t n = p < kept.size() ? kept[p] : 0;
        coloured += n > 0;
        out << (p ? ",\n" : "\n") << "[" << json_string(tokenizer.decode(tokens[p])) << ", " << n << "]";
    }
    out << "]}";
    out << kPageEnd;
    if (!out) throw std::runtime_error("cannot write " + path);
    return coloured;
}

}  // namespace engine
