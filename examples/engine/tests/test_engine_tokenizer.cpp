// The tokenizer against Hugging Face's (known_outputs.h, recorded by
// make_known_outputs.py): token ids of fixed strings, decoding back to the
// same bytes, the chat template, and the GGUF metadata it was read from.
#include <vector>

#include "known_outputs.h"
#include "test_util.h"
#include "tokenizer.h"

static std::string ids_text(const std::vector<int32_t> &ids) {
    std::string s;
    for (int32_t id : ids) s += std::to_string(id) + " ";
    return s;
}

int main() {
    auto file = open_model_or_skip();
    engine::Tokenizer tokenizer(*file);

    EXPECT(tokenizer.vocab_size() == 49152, "vocab %d", tokenizer.vocab_size());
    EXPECT(tokenizer.eos_id == 2 && tokenizer.bos_id == 1, "eos %d bos %d", tokenizer.eos_id, tokenizer.bos_id);
    EXPECT(tokenizer.is_control(0) && tokenizer.is_control(2) && !tokenizer.is_control(504), "control tokens");

    for (const KnownTokens &known : kKnownTokens) {
        const std::vector<int32_t> ids = tokenizer.encode(known.text);
        EXPECT(ids == known.ids, "'%s'\n  got  %s\n  want %s", known.text, ids_text(ids).c_str(),
               ids_text(known.ids).c_str());
        EXPECT(tokenizer.decode(ids) == known.text, "decode of '%s' gave '%s'", known.text,
               tokenizer.decode(ids).c_str());
    }
    EXPECT(tokenizer.encode(engine::chat_prompt(kPromptUser)) == kPromptIds, "chat prompt ids");

    // Pre-tokenizer pieces (as Hugging Face's pre_tokenize_str gives them):
    // digits alone and split first, so the spaces before them end a segment
    // and stay together; a space joins the next word; of several spaces
    // before a word, the last one goes with the word.
    std::vector<std::string> pieces = engine::pretokenize("x  42 it's");
    std::vector<std::string> want = {"x", "  ", "4", "2", " it", "'s"};
    EXPECT(pieces == want, "pieces of 'x  42 it's' (%zu)", pieces.size());
    pieces = engine::pretokenize("a   b");
    want = {"a", "  ", " b"};
    EXPECT(pieces == want, "pieces of 'a   b' (%zu)", pieces.size());
    return finish();
}
