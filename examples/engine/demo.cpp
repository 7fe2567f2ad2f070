#include "demo.h"

#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <stdexcept>
#include <string>
#include <vector>

#include "answers.h"
#include "jsonl.h"
#include "kept_html.h"
#include "model.h"
#include "tokenizer.h"

#ifndef RKV_DEFAULT_DATA_DIR
#define RKV_DEFAULT_DATA_DIR "examples/engine/eval/data"
#endif

namespace engine {

namespace {

// The built-in question: SmolLM2-135M-Instruct answers it right with a Full
// cache (6 of 26 short arithmetic questions tried were; the answer and its
// length held with every OpenBLAS kernel set tried), in about 115 tokens,
// enough for a budget of 64 + 32 to compress twice.
const char *const kQuestion = "A rectangle is 4 cm long and 3 cm wide. What is its area? Think step by step.";
const char *const kAnswer = "12";

// The teacher-forced trace: the start of a real DeepSeek-R1-Distill chain of
// thought from the evaluation data (record 0: Qwen-14B, MATH problem 1591).
const int32_t kTraceTokens = 512;

const char *display_name(rkv_method method) {
    static const char *const names[7] = {"R-KV", "SnapKV", "H2O", "StreamingLLM", "KeyDiff", "Random", "Full cache"};
    return names[method];
}

int terminal_width() {
    winsize size{};
    if (isatty(STDOUT_FILENO) && ioctl(STDOUT_FILENO, TIOCGWINSZ, &size) == 0 && size.ws_col > 0)
        return std::clamp(int(size.ws_col), 60, 140);
    return 100;
}

// Display width of UTF-8 text: one column per character.
int columns(const std::string &s) {
    int n = 0;
    for (unsigned char c : s) n += (c & 0xc0) != 0x80;
    return n;
}

// The first `width` characters of s (never cutting a UTF-8 character).
size_t prefix_bytes(const std::string &s, int width) {
    size_t at = 0;
    for (int n = 0; at < s.size(); ++at) {
        if ((static_cast<unsigned char>(s[at]) & 0xc0) != 0x80 && n++ == width) break;
    }
    return at;
}

// Greedy word wrap to `width` columns; newlines in the text start new lines.
std::vector<std::string> wrap(const std::string &text, int width) {
    std::vector<std::string> lines;
    size_t start = 0;
    while (start <= text.size()) {
        size_t end = text.find('\n', start);
        if (end == std::string::npos) end = text.size();
        std::string paragraph = text.substr(start, end - start), line;
        size_t at = 0;
        while (at < paragraph.size()) {
            size_t next = paragraph.find(' ', at + 1);
            if (next == std::string::npos) next = paragraph.size();
            std::string word = paragraph.substr(at, next - at);
            if (!line.empty() && columns(line) + columns(word) > width) {
                lines.push_back(line);
                if (word[0] == ' ') word.erase(0, 1);
                line.clear();
            }
            while (columns(word) > width) {  // a word longer than a line
                const size_t cut = prefix_bytes(word, width);
                lines.push_back(word.substr(0, cut));
                word.erase(0, cut);
            }
            line += word;
            at = next;
        }
        lines.push_back(line);
        start = end + 1;
    }
    return lines;
}

void print_indented(const std::string &text, int width) {
    for (const std::string &line : wrap(text, width - 2)) std::printf("  %s\n", line.c_str());
}

void print_side_by_side(const std::string &left_title, const std::string &left, const std::string &right_title,
                        const std::string &right, int width) {
    const int column = (width - 5) / 2;
    const std::vector<std::string> a = wrap(left, column), b = wrap(right, column);
    auto row = [&](const std::string &x, const std::string &y) {
        std::printf("  %s%*s | %s\n", x.c_str(), column - columns(x), "", y.c_str());
    };
    row(left_title, right_title);
    row(std::string(size_t(column), '-'), std::string(size_t(column), '-'));
    for (size_t i = 0; i < std::max(a.size(), b.size()); ++i)
        row(i < a.size() ? a[i] : "", i < b.size() ? b[i] : "");
}

struct Answer {
    Generation generation;
    rkv_stats stats;
    std::string text;
};

Answer ask(Model &model, const Tokenizer &tokenizer, const CacheOptions &options, const std::vector<int32_t> &prompt,
           int32_t max_tokens, const std::string &kept_html) {
    std::printf("  %-14s ", (std::string(display_name(options.method)) + ":").c_str());
    std::fflush(stdout);
    rkv_cache *cache = create_cache(model, options);
    Answer a;
    try {
        a.generation = generate(model, tokenizer, cache, 0, prompt, max_tokens);
        a.stats = cache_stats(cache);
        a.text = tokenizer.decode(a.generation.tokens);
        if (!kept_html.empty()) {
            std::vector<int32_t> sequence = prompt;  // what the cache saw: the last token was never appended
            sequence.insert(sequence.end(), a.generation.tokens.begin(), a.generation.tokens.end());
            if (!a.generation.tokens.empty()) sequence.pop_back();
            const KeptCounts counts = kept_counts(cache, 0, int32_t(sequence.size()), options.max_prompt_len);
            write_kept_html(kept_html, std::string("Tokens kept by ") + display_name(options.method),
                            describe_cache(options), tokenizer.decode_each(sequence), counts);
        }
    } catch (...) {
        rkv_cache_destroy(cache);
        throw;
    }
    rkv_cache_destroy(cache);
    const uint64_t rounds = a.stats.compressions / uint64_t(model.config().n_layers);
    std::printf("%zu tokens", a.generation.tokens.size());
    if (options.method != RKV_METHOD_FULL)
        std::printf(", %llu compression%s", (unsigned long long)rounds, rounds == 1 ? "" : "s");
    std::printf("\n");
    return a;
}

// Next-token agreement with Full over the start of a reasoning trace, both
// caches reading the same tokens (teacher forcing). Scored on the tokens
// after the compressed cache's first compression.
struct Agreement {
    int64_t scored = 0, agree = 0;
};

Agreement teacher_forced_agreement(Model &model, const std::vector<int32_t> &tokens, const CacheOptions &options) {
    const int32_t n = int32_t(tokens.size()), vocab = model.config().vocab_size, piece = 64;
    CacheOptions full_options = options;
    full_options.method = RKV_METHOD_FULL;
    full_options.max_len = n;
    rkv_cache *full = create_cache(model, full_options);
    rkv_cache *compressed = create_cache(model, options);
    std::vector<float> full_logits(size_t(piece) * vocab);        // [piece, vocab]
    std::vector<float> compressed_logits(size_t(piece) * vocab);  // [piece, vocab]
    Agreement a;
    try {
        for (int32_t p0 = 0; p0 < n; p0 += piece) {
            const int32_t rows = std::min(piece, n - p0);
            model.prefill(full, 0, tokens.data() + p0, rows, full_logits.data(), false, false);
            model.prefill(compressed, 0, tokens.data() + p0, rows, compressed_logits.data(), false, false);
            for (int32_t i = 0; i < rows; ++i) {
                if (p0 + i < options.budget + options.buffer || p0 + i + 1 >= n) continue;
                ++a.scored;
                a.agree += argmax(&full_logits[size_t(i) * vocab], vocab) ==
                           argmax(&compressed_logits[size_t(i) * vocab], vocab);
            }
        }
    } catch (...) {
        rkv_cache_destroy(full);
        rkv_cache_destroy(compressed);
        throw;
    }
    rkv_cache_destroy(full);
    rkv_cache_destroy(compressed);
    return a;
}

// Whether an answer states the built-in question's answer (a number anywhere in it).
std::string answer_cell(const std::string &text) {
    for (const std::string &number : all_numbers(text))
        if (same_answer(number, kAnswer)) return "yes (correct)";
    return "no (wrong)";
}

}  // namespace

const char *demo_question() { return kQuestion; }

int run_demo(Model &model, const Tokenizer &tokenizer, const DemoOptions &o) {
    const Config &c = model.config();
    const bool builtin = o.question.empty();
    const std::string question = builtin ? kQuestion : o.question;
    const std::vector<int32_t> prompt = tokenizer.encode(o.raw ? question : chat_prompt(question));
    const int width = terminal_width();
    CacheOptions compressed = o.cache, full = o.cache;
    compressed.max_len = full.max_len = int32_t(prompt.size()) + o.max_tokens;
    if (compressed.guards & RKV_GUARD_PROMPT) compressed.max_prompt_len = full.max_prompt_len = int32_t(prompt.size());
    full.method = RKV_METHOD_FULL;
    const char *name = display_name(compressed.method);

    std::printf("librkv %s demo: %s (%d layers, %d KV heads of %d) on the CPU\n", rkv_version_string(),
                o.model_path.c_str(), c.n_layers, c.n_kv_heads, c.head_dim);
    std::printf("\nQuestion: %s", question.c_str());
    if (builtin) std::printf("  (answer: %s)", kAnswer);
    std::printf("\n");
    if (builtin) std::printf("          %s\n", "(built-in; `./rkv demo \"your question\"` asks another)");
    std::printf("Asked twice, greedy, at most %d new tokens (the prompt, in the chat template, is %zu tokens):\n",
                o.max_tokens, prompt.size());
    std::printf("  %-14s %s\n", "Full cache:", "keeps every token");
    const std::string settings = describe_cache(compressed);  // "rkv: budget ..."
    std::printf("  %-14s keeps %d tokens per head, compressing each time %d more have arrived\n"
                "  %-14s (%s)\n",
                (std::string(name) + ":").c_str(), compressed.budget, compressed.buffer, "",
                settings.substr(settings.find(": ") + 2).c_str());
    std::printf("\nGenerating (about a minute on 2 cores)\n");
    const Answer f = ask(model, tokenizer, full, prompt, o.max_tokens, "");
    const Answer r = ask(model, tokenizer, compressed, prompt, o.max_tokens, o.kept_html);

    // Both answers: the part they share once, then side by side from where they part.
    const std::vector<int32_t> &ft = f.generation.tokens, &rt = r.generation.tokens;
    size_t same = 0;
    while (same < ft.size() && same < rt.size() && ft[same] == rt[same]) ++same;
    const std::string shared = tokenizer.decode(std::vector<int32_t>(ft.begin(), ft.begin() + long(same)));
    if (same == ft.size() && same == rt.size()) {
        std::printf("\nThe two answers are identical (%zu tokens):\n", same);
        print_indented(shared, width);
    } else {
        if (same > 0) {
            std::printf("\nBoth answers begin with the same %zu tokens:\n", same);
            print_indented(shared.substr(0, shared.find_last_not_of(" \n") + 1) + "...", width);
            std::printf("\nThen they part (from token %zu on):\n", same + 1);
        } else {
            std::printf("\nThe answers differ from their first token:\n");
        }
        const std::string lead = same > 0 ? "..." : "";
        print_side_by_side("Full cache", lead + tokenizer.decode(std::vector<int32_t>(ft.begin() + long(same), ft.end())),
                           name, lead + tokenizer.decode(std::vector<int32_t>(rt.begin() + long(same), rt.end())),
                           width);
    }

    // What each held, and what the compressed answer cost in quality.
    const uint64_t layers = uint64_t(c.n_layers);
    const uint64_t rounds = r.stats.compressions / layers;
    const uint64_t seen = r.stats.tokens_appended / layers;
    auto row = [](const char *label, const std::string &a, const std::string &b) {
        std::printf("%-22s %-18s %s\n", label, a.c_str(), b.c_str());
    };
    std::printf("\n");
    row("", "Full cache", name);
    if (builtin) row((std::string("states ") + kAnswer + "?").c_str(), answer_cell(f.text), answer_cell(r.text));
    row("tokens generated", std::to_string(ft.size()), std::to_string(rt.size()));
    row("K/V tokens per head", std::to_string(f.stats.tokens_held / layers), std::to_string(r.stats.tokens_held / layers));
    char less[96];
    std::snprintf(less, sizeof less, " (%.1fx less than Full would hold for its %llu tokens)",
                  double(r.stats.bytes_kv_full) / double(std::max<uint64_t>(r.stats.bytes_kv_held, 1)),
                  (unsigned long long)seen);
    row("K/V memory held", format_bytes(f.stats.bytes_kv_held), format_bytes(r.stats.bytes_kv_held) + less);
    row("reserved at create", format_bytes(f.stats.bytes_allocated),
        format_bytes(r.stats.bytes_allocated) + " (fixed, however long the answer)");
    row("compressions", "none",
        std::to_string(rounds) + " (each one compresses all " + std::to_string(c.n_layers) + " layers)");

    const std::string trace_path = std::string(RKV_DEFAULT_DATA_DIR) + "/r1_distill_math_traces.jsonl";
    std::vector<Record> traces;
    try {
        traces = read_jsonl(trace_path);
    } catch (const std::exception &) {
        std::printf("\n(next-token agreement skipped: %s is missing)\n", trace_path.c_str());
    }
    if (!traces.empty()) {
        std::vector<int32_t> tokens = tokenizer.encode(traces[0].at("prompt") + traces[0].at("cot"));
        if (int32_t(tokens.size()) > kTraceTokens) tokens.resize(size_t(kTraceTokens));
        std::printf("\nNext-token agreement with Full on %zu tokens of a DeepSeek-R1-Distill reasoning trace:\n"
                    "both caches read the same text (teacher forcing); how often does the compressed one\n"
                    "predict the same next token as Full? Scored from the first compression (token %d) on,\n"
                    "at the same budget:\n",
                    tokens.size(), compressed.budget + compressed.buffer);
        // The simplest policy beside it, for scale: the first tokens and the most recent.
        std::vector<rkv_method> methods = {compressed.method};
        if (compressed.method != RKV_METHOD_STREAMINGLLM) methods.push_back(RKV_METHOD_STREAMINGLLM);
        for (rkv_method method : methods) {
            CacheOptions options = compressed;
            options.method = method;
            const Agreement a = teacher_forced_agreement(model, tokens, options);
            std::printf("  %-14s %5.1f%% of %lld tokens%s\n", (std::string(display_name(method)) + ":").c_str(),
                        100.0 * double(a.agree) / double(std::max<int64_t>(a.scored, 1)), (long long)a.scored,
                        method == compressed.method ? "" : "  (keeps the first tokens and the most recent)");
        }
        std::printf("  `./rkv eval` measures this on more traces, every method and budget.\n");
    }

    std::printf("\nSpeed: at a few hundred tokens a compressed cache does not run faster on the CPU (the\n"
                "weights, not the K/V, dominate each step, and compressing costs time); its speed gains\n"
                "come with long contexts, where attention over a full cache dominates. The README's GPU\n"
                "section has those numbers.\n");
    if (!o.kept_html.empty()) std::printf("\nkept-html: wrote %s (what %s kept of its answer)\n", o.kept_html.c_str(), name);
    return 0;
}

}  // namespace engine
