// Grading free-form math answers: the final answer of a generation and of a
// GSM8K reference, and whether two answers are the same number.
#pragma once

#include <string>
#include <vector>

namespace engine {

// The answer a text states, normalised ("1,234.50" -> "1234.5", "$18" -> "18"):
// the number after the last "####", else the content of the last \boxed{...},
// else "" (strict: the model did not state an answer in either form).
std::string extract_answer(const std::string &text);
// Lenient fallback: the last number anywhere in the text ("" if none).
std::string last_number(const std::string &text);
// Every number the text states, in order, normalised as above.
std::vector<std::string> all_numbers(const std::string &text);
// Equal as numbers when both parse as numbers, else equal as strings; "" never matches.
bool same_answer(const std::string &a, const std::string &b);

}  // namespace engine
