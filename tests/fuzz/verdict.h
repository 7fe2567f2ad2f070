// The statuses a call may return according to the header: a set, because the
// header names the status of each kind of mistake but not which one wins when
// a call makes several, and in a few places leaves a choice (marked where made).
#pragma once

#include <cstdint>
#include <string>

#include "rkv/rkv.h"

namespace fuzz {

class Verdict {
 public:
    // An error the call must return (any one of those added).
    void error(rkv_status status) { errors_ |= bit(status); }
    // A status the call may return instead of what it must (a choice the
    // documents leave open). Tolerating RKV_OK makes every error optional.
    void tolerate(rkv_status status) { tolerated_ |= bit(status); }

    bool allows(rkv_status status) const { return (allowed() & bit(status)) != 0; }
    bool expects_error() const { return !allows(RKV_OK); }
    // Some error is possible (must or may): a snapshot is due before the call.
    bool allows_error() const { return (allowed() & ~bit(RKV_OK)) != 0; }
    bool has_errors() const { return errors_ != 0; }
    void merge(const Verdict &other) {
        errors_ |= other.errors_;
        tolerated_ |= other.tolerated_;
    }

    std::string describe() const {
        std::string out;
        for (int s : {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 20, 30, 31, 99})
            if (allows(rkv_status(s))) out += (out.empty() ? "" : " or ") + std::string(rkv_status_name(rkv_status(s)));
        return out;
    }

 private:
    // A call with no error to report must succeed.
    uint32_t allowed() const { return (errors_ ? errors_ : bit(RKV_OK)) | tolerated_; }
    static uint32_t bit(rkv_status status) {
        const int s = int(status);
        if (s >= 0 && s <= 9) return 1u << s;
        if (s == 20) return 1u << 10;
        if (s == 30) return 1u << 11;
        if (s == 31) return 1u << 12;
        if (s == 99) return 1u << 13;
        return 1u << 14;  // not a status the header lists
    }
    uint32_t errors_ = 0, tolerated_ = 0;
};

}  // namespace fuzz
