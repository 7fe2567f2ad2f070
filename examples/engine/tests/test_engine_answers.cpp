// The evaluation's answer grading: "####" and \boxed{} extraction, number
// normalisation, the lenient last-number fallback, and every GSM8K reference
// answer in the data set yields a number.
#include <exception>
#include <string>
#include <vector>

#include "answers.h"
#include "jsonl.h"
#include "test_util.h"

using engine::extract_answer;
using engine::last_number;
using engine::same_answer;

int main() {
    EXPECT(extract_answer("so 9 * 2 = 18.\n#### 18") == "18", "####");
    EXPECT(extract_answer("#### 1,234.50 dollars") == "1234.5", "commas and decimals: %s",
           extract_answer("#### 1,234.50 dollars").c_str());
    EXPECT(extract_answer("#### $-7") == "-7", "sign: %s", extract_answer("#### $-7").c_str());
    EXPECT(extract_answer("first \\boxed{3} then \\boxed{\\frac{1}{2}}") == "1", "last box, first number");
    EXPECT(extract_answer("The answer is \\boxed{42}.") == "42", "boxed");
    EXPECT(extract_answer("\\boxed{x+y}") == "x+y", "boxed non-number kept as text");
    EXPECT(extract_answer("The answer is 42.").empty(), "no stated answer");
    EXPECT(last_number("about 3 apples, so 1,200 in total.") == "1200", "last number: %s",
           last_number("about 3 apples, so 1,200 in total.").c_str());
    const std::vector<std::string> numbers = engine::all_numbers("4 cm * 3 cm = 12 cm^2, or 1,200.50 mm^2; -7.");
    EXPECT((numbers == std::vector<std::string>{"4", "3", "12", "2", "1200.5", "2", "-7"}), "all_numbers: %zu",
           numbers.size());
    EXPECT(engine::all_numbers("no digits").empty(), "all_numbers of a text without numbers");
    EXPECT(same_answer("18", "18.0") && !same_answer("18", "19") && !same_answer("", ""), "same_answer");

    // Every reference answer of the repository's GSM8K file parses.
    try {
        const auto records = engine::read_jsonl(std::string(RKV_DEFAULT_DATA_DIR) + "/gsm8k_test.jsonl");
        int missing = 0;
        for (const auto &r : records) missing += extract_answer(r.at("answer")).empty();
        EXPECT(records.size() == 1319 && missing == 0, "%zu records, %d without an answer", records.size(), missing);
        EXPECT(records[0].at("question").find("Janet\xe2\x80\x99s ducks") == 0, "JSON \\u escapes decode to UTF-8");
    } catch (const std::exception &e) {
        EXPECT(false, "%s (the data ships in the repository: is the checkout complete?)", e.what());
    }
    return finish();
}
