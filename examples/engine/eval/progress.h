// Progress of a long job on stderr: percent done, what it is doing, time
// spent and an estimate of the time left (from the rate so far). On a
// terminal one line is rewritten every second; otherwise (CI logs) a line is
// printed every 20 seconds and at the end.
#pragma once

#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>

namespace engine {

class Progress {
  public:
    Progress(std::string label, int64_t total)
        : label_(std::move(label)), total_(total), tty_(isatty(STDERR_FILENO)), start_(clock::now()),
          last_(start_) {}

    // `done` of the total units are finished; `doing` says where the job is.
    void update(int64_t done, const std::string &doing) {
        const auto now = clock::now();
        const bool finished = done >= total_;
        if (!finished && seconds(last_, now) < (tty_ ? 1.0 : 20.0)) return;
        last_ = now;
        const double elapsed = seconds(start_, now);
        std::string left = "";
        if (finished) left = "done";
        else if (done > 0) left = "about " + duration(elapsed * double(total_ - done) / double(done)) + " left";
        std::fprintf(stderr, "%s%s %3.0f%% | %s | %s elapsed%s%s%s", tty_ ? "\r\033[K" : "", label_.c_str(),
                     100.0 * double(done) / double(total_), doing.c_str(), duration(elapsed).c_str(),
                     left.empty() ? "" : ", ", left.c_str(), tty_ && !finished ? "" : "\n");
        std::fflush(stderr);
    }

    double elapsed() const { return seconds(start_, clock::now()); }

    // "45 s", "3 min 05 s", "1 h 02 min"
    static std::string duration(double s) {
        char text[32];
        const long total = long(s + 0.5);
        if (total < 60) std::snprintf(text, sizeof text, "%ld s", total);
        else if (total < 3600) std::snprintf(text, sizeof text, "%ld min %02ld s", total / 60, total % 60);
        else std::snprintf(text, sizeof text, "%ld h %02ld min", total / 3600, (total % 3600) / 60);
        return text;
    }

  private:
    using clock = std::chrono::steady_clock;
    static double seconds(clock::time_point a, clock::time_point b) {
        return std::chrono::duration<double>(b - a).count();
    }
    std::string label_;
    int64_t total_;
    bool tty_;
    clock::time_point start_, last_;
};

}  // namespace engine
