// Replays fuzzer inputs without libFuzzer (any compiler): every file named,
// and every file in the folders named, as one program each.
//   rkv_fuzz_replay [--print] PATH...
// --print shows each program call by call with its statuses. Exits 1 if any
// program broke a promise (each is reported with its file and call).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include <csignal>
#include <unistd.h>

#include "failure.h"
#include "program.h"

#if defined(__SANITIZE_ADDRESS__)
#define RKV_REPLAY_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define RKV_REPLAY_SANITIZED 1
#endif
#endif
#ifdef RKV_REPLAY_SANITIZED
#include <sanitizer/common_interface_defs.h>
#endif

namespace {

// The input running now, named if the process dies on it (a sanitizer report
// or a crash names no file of its own).
char g_current[4096];

void name_the_input() {
    static const char prefix[] = "rkv_fuzz_replay: died on input ";
    if (!g_current[0]) return;
    (void)!write(2, prefix, sizeof prefix - 1);
    (void)!write(2, g_current, std::strlen(g_current));
    (void)!write(2, "\n", 1);
}

#ifndef RKV_REPLAY_SANITIZED
void on_fatal_signal(int signal) {
    name_the_input();
    std::signal(signal, SIG_DFL);
    std::raise(signal);
}
#endif

std::vector<std::string> input_files(const std::vector<std::string> &paths) {
    std::vector<std::string> files;
    for (const std::string &path : paths) {
        if (std::filesystem::is_directory(path)) {
            std::vector<std::string> found;
            for (const auto &entry : std::filesystem::directory_iterator(path))
                if (entry.is_regular_file() && entry.path().filename().string()[0] != '.')
                    found.push_back(entry.path().string());
            std::sort(found.begin(), found.end());
            files.insert(files.end(), found.begin(), found.end());
        } else if (std::filesystem::is_regular_file(path)) {
            files.push_back(path);
        } else {
            std::fprintf(stderr, "rkv_fuzz_replay: %s: no such file or folder\n", path.c_str());
            std::exit(2);
        }
    }
    return files;
}

}  // namespace

int main(int argc, char **argv) {
    bool print = false;
    std::vector<std::string> paths;
    for (int i = 1; i < argc; ++i) {
        if (std::strcmp(argv[i], "--print") == 0) print = true;
        else paths.push_back(argv[i]);
    }
    if (paths.empty()) {
        std::fprintf(stderr, "usage: rkv_fuzz_replay [--print] FILE_OR_FOLDER...\n");
        return 2;
    }
#ifdef RKV_REPLAY_SANITIZED
    __sanitizer_set_death_callback(name_the_input);
#else
    for (int signal : {SIGSEGV, SIGBUS, SIGABRT, SIGFPE, SIGILL}) std::signal(signal, on_fatal_signal);
#endif
    const std::vector<std::string> files = input_files(paths);
    const auto start = std::chrono::steady_clock::now();
    int failed = 0;
    long calls = 0;
    for (const std::string &file : files) {
        std::ifstream stream(file, std::ios::binary);
        const std::vector<uint8_t> data((std::istreambuf_iterator<char>(stream)), std::istreambuf_iterator<char>());
        if (print) std::printf("%s (%zu bytes)\n", file.c_str(), data.size());
        std::snprintf(g_current, sizeof g_current, "%s", file.c_str());
        fuzz::RunOptions options;
        options.trace = print;
        fuzz::Program program(data.data(), data.size(), options);
        try {
            program.run();
        } catch (const fuzz::Failure &failure) {
            ++failed;
            std::printf("FAILED %s at call %d (%s):\n  %s\n", file.c_str(), program.calls(),
                        program.current_call().c_str(), failure.what());
        }
        calls += program.calls();
        std::fflush(stdout);
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::printf("rkv_fuzz_replay: %zu programs, %ld calls, %d failed, %.2f s\n", files.size(), calls, failed, seconds);
    return failed ? 1 : 0;
}
