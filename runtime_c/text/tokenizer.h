/* tokenizer.h: text <-> token ids for the tokenizer families of GGUF models.
 *
 *   SPM  (tokenizer.ggml.model = "llama"): SentencePiece vocabularies. The text gets a "▁"
 *        space prefix (add_space_prefix), spaces become "▁", then either
 *          - merge mode (llama.cpp's SPM algorithm, exact for BPE-trained SentencePiece models
 *            such as LLaMA's): repeatedly join the adjacent pair whose joined text is the
 *            best-scored token (ties: leftmost), or
 *          - viterbi mode (sentencepiece's unigram algorithm): the segmentation with the best
 *            total score, with sentencepiece 0.2's float arithmetic (scores re-based when they
 *            pass +-1e5), so even near-ties on long inputs come out the same.
 *        Pieces that are no token fall back to byte tokens <0xNN> (or <unk>, consecutive
 *        unknown characters collapsing into one <unk> like sentencepiece).
 *   BPE  (tokenizer.ggml.model = "gpt2"): byte-level BPE. The text is cut into words by a
 *        hand-written scanner equivalent to the pre-tokenizer regex (LLaMA-3/Falcon3, GPT-2,
 *        Qwen2, Qwen3.5, StarCoder) or by a chain of splits (deepseek-llm, deepseek-coder,
 *        falcon), each word's bytes are merged by merge rank (ties: leftmost). With
 *        ignore_merges (LLaMA-3) a word that is itself a token is emitted directly.
 *   BPE_UTF8 ("gemma4"): spaces become "▁", the text is cut into newline runs and the rest,
 *        and BPE merges start from the UTF-8 characters; text left without a token becomes
 *        <0xNN> byte tokens.
 *   WPM  ("bert"): WordPiece as llama.cpp does it: optional NFD-first-code-point + mark
 *        stripping and lowercasing, words cut at whitespace, punctuation, ASCII symbols and
 *        CJK ideographs; each word ("▁" + word) is the longest token at each position, or
 *        one <unk> when some position has none.
 *
 * Special tokens (control, user-defined, unknown with a text) are cut out of the input as
 * whole strings before that, longest first, like llama.cpp: control/unknown tokens only when
 * the caller passes parse_special = 1, user-defined tokens always. SPM, as in llama.cpp: the
 * text after a special token gets the "▁" prefix again (so decode(encode(s)) can gain a
 * space after each special token; without specials it is exact).
 *
 * Invalid UTF-8 never crashes anything: each invalid byte is a one-byte "character" of no
 * Unicode class, which ends up as its byte token, so decode(encode(s)) == s for any bytes.
 * (sentencepiece replaces invalid bytes by U+FFFD before encoding; llama.cpp reads a lead
 * byte's length blindly. Valid UTF-8 is tokenised identically by all three.)
 *
 * The vocabulary comes from a blob built by bitnet_aot.tokenizer_pack.pack_tokenizer (format
 * documented there; magic "BTOK", version 1). tokenizer_init keeps pointers into the blob and
 * builds two hash tables (token text -> id, merge pair -> rank) with one malloc.
 * The Unicode class tables live in the generated unicode_tables.c.
 *
 * Thread safety: after init a Tokenizer is read-only; encode/decode may run concurrently.
 * tokenizer_encode mallocs scratch memory proportional to the input length and frees it
 * before returning (about 40 bytes per input byte).
 */
#ifndef BITNET_TOKENIZER_H
#define BITNET_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

/* ------------------------------------------------------------------------------------- */
/* Constants                                                                               */
/* ------------------------------------------------------------------------------------- */

enum {
    TOKENIZER_SPM = 1,          /* SentencePiece ("llama") */
    TOKENIZER_BPE = 2,          /* byte-level BPE ("gpt2") */
    TOKENIZER_WPM = 3,          /* WordPiece ("bert"): greedy longest match inside words */
    TOKENIZER_BPE_UTF8 = 4,     /* BPE over UTF-8 characters, spaces as "▁", <0xNN> byte
                                   fallback, the text cut only at newline runs ("gemma4") */
};

enum {
    TOKENIZER_PRE_NONE = 0,
    TOKENIZER_PRE_LLAMA3 = 1,   /* LLaMA-3 regex; also Falcon3 (llama.cpp maps it the same) */
    TOKENIZER_PRE_GPT2 = 2,
    TOKENIZER_PRE_QWEN2 = 3,    /* the LLaMA-3 regex with single digits (\p{N}, not \p{N}{1,3}) */
    TOKENIZER_PRE_STARCODER = 4,/* every digit its own word, then the GPT-2 regex (starcoder,
                                   refact, smollm, command-r: HF Digits(individual) + ByteLevel) */
    /* Chains of splits, each applied to every piece the previous ones left (isolating the
     * matches, keeping the text between them as pieces too), as llama.cpp and HF's
     * Sequence of Split(..., "isolated") pre-tokenizers do: */
    TOKENIZER_PRE_DEEPSEEK_LLM = 5,   /* [\r\n] | \s?<Latin/Greek/Cyrillic/... letters>+ |
                                         \s?<ASCII and full-width punctuation>+ | \s+$ |
                                         <CJK and Hangul>+ | \p{N}+ */
    TOKENIZER_PRE_DEEPSEEK_CODER = 6, /* [\r\n] | \s?\p{L}+ | \s?\p{P}+ | <CJK and Hangul>+ | \p{N} */
    TOKENIZER_PRE_FALCON = 7,         /* [\p{P}$+<=>^~|`]+ | the GPT-2 regex | [0-9]{3} */
    TOKENIZER_PRE_QWEN35 = 8,         /* Qwen2's regex with marks counted as letters:
                                         [^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+ and ?[^\s\p{L}\p{M}\p{N}]+ */
};

/* The packed blob's header (written by compiler/tokenizer_pack.py, which reads these
 * enums from this file, so the byte offsets are stated once): u32/i32 fields, little
 * endian, at these offsets; then the sections, each 4-byte aligned. */
enum {
    TOKB_MAGIC = 0,          /* "BTOK" */
    TOKB_VERSION = 4,        /* 1 */
    TOKB_HEADER_BYTES = 8,   /* TOKB_HEADER_SIZE */
    TOKB_TOTAL = 12,         /* bytes of the whole blob */
    TOKB_MODEL = 16,         /* TOKENIZER_SPM / TOKENIZER_BPE */
    TOKB_PRE = 20,           /* TOKENIZER_PRE_* */
    TOKB_FLAGS = 24,         /* TOKB_FLAG_* */
    TOKB_BOS = 28, TOKB_EOS = 32, TOKB_EOT = 36, TOKB_UNK = 40, TOKB_PAD = 44,   /* i32, -1 = none */
    TOKB_N_TOKENS = 48, TOKB_N_MERGES = 52, TOKB_N_SPECIAL = 56, TOKB_N_EOG = 60,
    TOKB_O_TEXT_OFFS = 64, TOKB_O_PIECE_OFFS = 68, TOKB_O_TYPES = 72, TOKB_O_SCORES = 76,
    TOKB_O_MERGES = 80, TOKB_O_SPECIAL = 84, TOKB_O_EOG = 88, TOKB_O_BYTE_TOKENS = 92,
    TOKB_O_TEXT_POOL = 96, TOKB_N_TEXT_POOL = 100, TOKB_O_PIECE_POOL = 104, TOKB_N_PIECE_POOL = 108,
    TOKB_O_CHAT = 112, TOKB_N_CHAT = 116,
    /* 120..127 reserved (zero) */
    TOKB_CHECKSUM = 128,     /* CRC-32 of bytes [TOKB_HEADER_SIZE, total) */
    TOKB_HEADER_SIZE = 132,
};

enum {
    TOKB_FLAG_ADD_BOS = 1, TOKB_FLAG_ADD_EOS = 2, TOKB_FLAG_ADD_SPACE_PREFIX = 4,
    TOKB_FLAG_IGNORE_MERGES = 8,
    TOKB_FLAG_SPM_VITERBI = 16,   /* unigram: best-score segmentation instead of merging */
    TOKB_FLAG_LOWERCASE = 32,     /* WPM: lowercase the text (BERT's uncased normalizer) */
    TOKB_FLAG_STRIP_ACCENTS = 64, /* WPM: decompose (NFD) and drop combining marks */
};

/* Token types, as in GGUF tokenizer.ggml.token_type. */
enum {
    TOKEN_NORMAL = 1, TOKEN_UNKNOWN = 2, TOKEN_CONTROL = 3,
    TOKEN_USER_DEFINED = 4, TOKEN_UNUSED = 5, TOKEN_BYTE = 6,
};

/* Error codes of tokenizer_init / tokenizer_encode (all negative). */
enum {
    TOKENIZER_OK = 0,
    TOKENIZER_E_NOMEM = -1000,      /* malloc failed */
    TOKENIZER_E_MAGIC = -1001,      /* not a tokenizer blob, or a different version */
    TOKENIZER_E_CORRUPT = -1002,    /* offsets, sizes or ids out of range */
    TOKENIZER_E_CHECKSUM = -1003,   /* CRC-32 mismatch */
    TOKENIZER_E_ARG = -1004,        /* NULL pointer or input longer than 256 MiB */
};

/* Decode flags. */
enum {
    TOKENIZER_DECODE_SPECIAL = 1,     /* print control/unknown tokens as their text
                                         (otherwise they print as nothing) */
    TOKENIZER_DECODE_STRIP_SPACE = 2, /* SPM with add_space_prefix: drop the leading space of
                                         the first printed piece (the prefix the encoder
                                         added). Use it to get decode(encode(s)) == s. */
    TOKENIZER_DECODE_RAW = 4,         /* stream only: pass invalid UTF-8 bytes through instead
                                         of replacing them with U+FFFD */
};

/* ------------------------------------------------------------------------------------- */
/* The tokenizer                                                                           */
/* ------------------------------------------------------------------------------------- */

typedef struct {
    /* from the blob: pointers into it, nothing copied */
    const unsigned char *blob;      /* the (4-byte aligned) blob */
    size_t blob_len;
    int model;                      /* TOKENIZER_SPM, _BPE, _WPM or _BPE_UTF8 */
    int pre;                        /* TOKENIZER_PRE_* (BPE only) */
    int n_vocab;                    /* V */
    int bos_id, eos_id, eot_id, unk_id, pad_id;   /* -1 when the model has none */
    int add_bos, add_eos;           /* the model's default: prepend BOS / append EOS */
    int add_space_prefix;           /* SPM: prepend "▁" to text after start/special tokens */
    int ignore_merges;              /* BPE: a word that is a token is emitted directly */
    int spm_viterbi;                /* SPM: unigram (best score) instead of merging */
    const uint32_t *text_offs;      /* (V+1) token text = text_pool[text_offs[i]..[i+1]] */
    const unsigned char *text_pool;
    const uint32_t *piece_offs;     /* (V+1) printed bytes = piece_pool[piece_offs[i]..[i+1]] */
    const unsigned char *piece_pool;
    const uint8_t *types;           /* (V) TOKEN_* in the low 3 bits, 0x80 = never matched */
    const float *scores;            /* (V) SPM scores, NULL for BPE */
    const uint32_t *merges;         /* (n_merges, 3) left id, right id, merged id; rank = row */
    int n_merges;
    const uint32_t *special_ids;    /* (n_special) matched as whole strings, longest first */
    int n_special;
    const uint32_t *eog_ids;        /* (n_eog) end-of-generation tokens */
    int n_eog;
    const int32_t *byte_tokens;     /* (256) token of each raw byte, -1 = none */
    const char *chat_template;      /* tokenizer.chat_template (not NUL-terminated), or NULL */
    size_t chat_template_len;
    float min_score;                /* SPM viterbi: unknown score = min_score - 10 */
    int max_token_chars;            /* SPM viterbi: longest matchable token in characters */
    int max_piece_len;              /* longest printed piece in bytes */
    int max_token_bytes;            /* WPM: longest matchable token text in bytes */
    int lowercase, strip_accents;   /* WPM normalizer (TOKB_FLAG_LOWERCASE / _STRIP_ACCENTS) */

    /* built by tokenizer_init, freed by tokenizer_free */
    int32_t *vocab_hash;            /* (vocab_mask+1) token ids keyed by match text, -1 empty */
    uint32_t vocab_mask;
    int32_t *merge_hash;            /* (merge_mask+1) merge ranks keyed by (left, right), -1 empty */
    uint32_t merge_mask;
    uint64_t *prefix_bits;          /* SPM viterbi: bit set for every token prefix's hash (a
                                       clear bit means no token starts this way: stop early) */
    uint32_t prefix_mask;
    unsigned char *blob_copy;       /* aligned copy, only when the given blob was misaligned */
} Tokenizer;

/* Reads the blob. Returns TOKENIZER_OK or a negative TOKENIZER_E_* code. The blob must stay
 * alive (and unchanged) until tokenizer_free. */
int tokenizer_init(Tokenizer *t, const unsigned char *blob, size_t blob_len);
void tokenizer_free(Tokenizer *t);
const char *tokenizer_error_string(int code);

/* Text (len bytes, any bytes) -> ids. add_bos: prepend the BOS token (pass t->add_bos for the
 * model's default). parse_special: match control tokens such as <|eot_id|> in the text.
 * Returns the number of ids. If max_ids is too small, returns -(number needed) and out_ids
 * holds the first max_ids of them (call with max_ids = 0 to count). Other errors: a
 * TOKENIZER_E_* code (<= -1000). The model's add_eos is applied when add_bos is 1 and
 * t->add_eos is set (llama.cpp's "add_special"). */
int tokenizer_encode(const Tokenizer *t, const char *text, size_t len, int add_bos,
                     int parse_special, int *out_ids, int max_ids);

/* One token: the bytes it prints as (may be part of a UTF-8 character; control tokens give
 * their text; unused tokens nothing), and its text as stored in the vocabulary ("Ġthe",
 * "▁the", "<0x0A>"). NULL for an invalid id. Not NUL-terminated: the length goes to *len. */
const char *tokenizer_piece(const Tokenizer *t, int id, size_t *len);
const char *tokenizer_token_text(const Tokenizer *t, int id, size_t *len);
int tokenizer_token_type(const Tokenizer *t, int id);      /* TOKEN_*, 0 for an invalid id */
int tokenizer_is_eog(const Tokenizer *t, int id);          /* ends generation (eos, eot, ...) */
int tokenizer_find_token(const Tokenizer *t, const char *text, size_t len); /* exact text, -1 */

/* ids -> text. Writes at most cap-1 bytes and a NUL (when cap > 0), like snprintf, and
 * returns the full length. Invalid ids are skipped. flags: TOKENIZER_DECODE_SPECIAL,
 * TOKENIZER_DECODE_STRIP_SPACE. Bytes are copied as they are (no UTF-8 repair, and no
 * clean-up of spaces before punctuation like llama.cpp's clean_spaces for GPT-2 vocabs). */
size_t tokenizer_decode(const Tokenizer *t, const int *ids, int n_ids, int flags,
                        char *out, size_t cap);

/* ------------------------------------------------------------------------------------- */
/* Streaming detokenizer: feed generated tokens one by one, get only complete characters.  */
/* ------------------------------------------------------------------------------------- */
/* A UTF-8 character split across tokens is held back until its last byte arrives.
 * Invalid bytes come out as U+FFFD (one per maximal ill-formed subsequence, the same as
 * Python's bytes.decode("utf-8", "replace")), or raw with TOKENIZER_DECODE_RAW. */

typedef struct {
    const Tokenizer *tok;
    int flags;                  /* TOKENIZER_DECODE_* */
    int at_start;               /* no piece printed yet (for TOKENIZER_DECODE_STRIP_SPACE) */
    unsigned char pending[4];   /* incomplete UTF-8 sequence carried to the next token */
    int n_pending;
} TokenizerStream;

void tokenizer_stream_init(TokenizerStream *s, const Tokenizer *t, int flags);
/* Bytes `out` must hold for one push or flush call. */
size_t tokenizer_stream_bound(const Tokenizer *t);
/* Adds token `id`; writes the newly completed text to out (not NUL-terminated) and returns
 * its length. */
size_t tokenizer_stream_push(TokenizerStream *s, int id, char *out);
/* End of stream: writes what is still pending (as U+FFFD, or raw), returns its length. */
size_t tokenizer_stream_flush(TokenizerStream *s, char *out);

/* Unicode class flags of a code point (from unicode_tables.c): 1 letter, 2 number,
 * 4 White_Space, 8 mark, 16 punctuation, 32 symbol, 64 separator, 128 other. */
unsigned tokenizer_unicode_flags(uint32_t cp);

#endif /* BITNET_TOKENIZER_H */
