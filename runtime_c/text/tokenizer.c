/* tokenizer.c: text <-> token ids (SentencePiece and byte-level BPE). See tokenizer.h.
 *
 * Reading order: the blob -> Unicode and UTF-8 -> special tokens -> SPM -> BPE -> encode
 * -> decode and the streaming detokenizer.
 */
#include "tokenizer.h"

#include <stdlib.h>
#include <string.h>

/* Generated into the build directory by bitnet_aot.tokenizer_pack.unicode_tables_c(). */
extern const uint32_t tokenizer_unicode_n_ranges;
extern const uint32_t tokenizer_unicode_ranges[];
extern const uint8_t tokenizer_unicode_latin1[256];
/* Sorted (code point, mapped code point) pairs: the simple lowercase mapping, and the first
 * code point of the canonical decomposition (NFD) of every character that has one. */
extern const uint32_t tokenizer_unicode_n_lower;
extern const uint32_t tokenizer_unicode_lower[];
extern const uint32_t tokenizer_unicode_n_nfd;
extern const uint32_t tokenizer_unicode_nfd[];

#define HEADER_SIZE ((uint32_t)TOKB_HEADER_SIZE)
#define TYPE_MASK 0x07u
#define TYPE_NOMATCH 0x80u
#define MAX_INPUT ((size_t)1 << 28)     /* longest text tokenizer_encode accepts (256 MiB:
                                           at most 4 ids per byte, so counts fit an int) */

/* Unicode class flags (same bits as unicode_tables.c). */
#define U_LETTER 1u
#define U_NUMBER 2u
#define U_SPACE 4u
#define U_MARK 8u
#define U_PUNCT 16u
#define U_SYMBOL 32u
#define U_OTHER 128u

static const unsigned char SPACE_MARK[3] = {0xE2, 0x96, 0x81};   /* "▁" U+2581 */

/* ===================================================================================== */
/* The blob                                                                               */
/* ===================================================================================== */

static uint32_t rd32(const unsigned char *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

static int32_t rd32s(const unsigned char *p) {
    uint32_t u = rd32(p);
    int32_t v;
    memcpy(&v, &u, 4);
    return v;
}

static uint32_t crc32_of(const unsigned char *p, size_t n) {
    uint32_t table[256];
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        table[i] = c;
    }
    uint32_t crc = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) crc = table[(crc ^ p[i]) & 0xFF] ^ (crc >> 8);
    return crc ^ 0xFFFFFFFFu;
}

/* Does the section [off, off + count * elem) lie inside the blob after the header? */
static int section_ok(uint32_t off, uint64_t count, uint32_t elem, uint32_t total) {
    if (count == 0) return 1;
    if (off < HEADER_SIZE || off % 4 != 0) return 0;
    return (uint64_t)off + count * elem <= total;
}

/* FNV-1a over bytes; the hash tables use it for token text. */
static uint32_t fnv_step(uint32_t h, unsigned char b) { return (h ^ b) * 0x01000193u; }
#define FNV_INIT 0x811C9DC5u

static uint32_t fnv(const unsigned char *s, size_t n) {
    uint32_t h = FNV_INIT;
    for (size_t i = 0; i < n; i++) h = fnv_step(h, s[i]);
    return h;
}

static uint32_t mix(uint32_t h) {
    h ^= h >> 16;
    h *= 0x7FEB352Du;
    h ^= h >> 15;
    return h;
}

static uint32_t pair_hash(uint32_t a, uint32_t b) {
    return mix(a * 0x9E3779B1u ^ (b + 0x85EBCA77u) * 0xC2B2AE3Du);
}

static uint32_t table_size(uint32_t n) {   /* power of two >= 2n, at least 16 */
    uint32_t s = 16;
    while (s < 2 * n) s *= 2;
    return s;
}

/* The bytes a token is looked up by: SPM, WPM and BPE_UTF8 its text ("▁the"), byte-level BPE
 * the raw bytes it stands for (its printed piece). */
static const unsigned char *match_key(const Tokenizer *t, int id, size_t *len) {
    if (t->model != TOKENIZER_BPE) {
        *len = t->text_offs[id + 1] - t->text_offs[id];
        return t->text_pool + t->text_offs[id];
    }
    *len = t->piece_offs[id + 1] - t->piece_offs[id];
    return t->piece_pool + t->piece_offs[id];
}

/* Token whose match key is s[0..n) (hash h = fnv(s, n)), or -1. */
static int vocab_lookup_h(const Tokenizer *t, const unsigned char *s, size_t n, uint32_t h) {
    uint32_t slot = mix(h) & t->vocab_mask;
    for (;;) {
        int32_t id = t->vocab_hash[slot];
        if (id < 0) return -1;
        size_t kl;
        const unsigned char *k = match_key(t, id, &kl);
        if (kl == n && memcmp(k, s, n) == 0) return id;
        slot = (slot + 1) & t->vocab_mask;
    }
}

static int vocab_lookup(const Tokenizer *t, const unsigned char *s, size_t n) {
    return vocab_lookup_h(t, s, n, fnv(s, n));
}

/* Rank of the merge (a, b), or -1. */
static int merge_lookup(const Tokenizer *t, int a, int b) {
    if (t->n_merges == 0) return -1;
    uint32_t slot = pair_hash((uint32_t)a, (uint32_t)b) & t->merge_mask;
    for (;;) {
        int32_t r = t->merge_hash[slot];
        if (r < 0) return -1;
        const uint32_t *m = t->merges + 3 * (size_t)r;
        if (m[0] == (uint32_t)a && m[1] == (uint32_t)b) return r;
        slot = (slot + 1) & t->merge_mask;
    }
}

const char *tokenizer_error_string(int code) {
    switch (code) {
    case TOKENIZER_OK: return "ok";
    case TOKENIZER_E_NOMEM: return "out of memory";
    case TOKENIZER_E_MAGIC: return "not a tokenizer blob of version 1 (magic BTOK)";
    case TOKENIZER_E_CORRUPT: return "corrupt tokenizer blob (offsets, sizes or ids out of range)";
    case TOKENIZER_E_CHECKSUM: return "tokenizer blob checksum mismatch";
    case TOKENIZER_E_ARG: return "invalid argument (NULL pointer or input longer than 256 MiB)";
    default: return "unknown tokenizer error";
    }
}

int tokenizer_init(Tokenizer *t, const unsigned char *blob, size_t blob_len) {
    if (!t) return TOKENIZER_E_ARG;
    memset(t, 0, sizeof *t);
    if (!blob) return TOKENIZER_E_ARG;
    const uint32_t one = 1;
    unsigned char first;
    memcpy(&first, &one, 1);
    if (first != 1) return TOKENIZER_E_MAGIC;           /* the blob is little-endian */
    if (blob_len < HEADER_SIZE || memcmp(blob, "BTOK", 4) != 0) return TOKENIZER_E_MAGIC;
    if (rd32(blob + TOKB_VERSION) != 1 || rd32(blob + TOKB_HEADER_BYTES) != HEADER_SIZE) return TOKENIZER_E_MAGIC;
    uint32_t total = rd32(blob + TOKB_TOTAL);
    if (total < HEADER_SIZE || total > blob_len || total % 4 != 0) return TOKENIZER_E_CORRUPT;
    if (crc32_of(blob + HEADER_SIZE, total - HEADER_SIZE) != rd32(blob + TOKB_CHECKSUM)) return TOKENIZER_E_CHECKSUM;
    if ((uintptr_t)blob % 4 != 0) {          /* arrays are read in place: need alignment */
        t->blob_copy = malloc(total);
        if (!t->blob_copy) return TOKENIZER_E_NOMEM;
        memcpy(t->blob_copy, blob, total);
        blob = t->blob_copy;
    }
    const unsigned char *h = blob;
    t->blob = blob;
    t->blob_len = total;
    t->model = (int)rd32(h + TOKB_MODEL);
    t->pre = (int)rd32(h + TOKB_PRE);
    uint32_t flags = rd32(h + TOKB_FLAGS);
    t->add_bos = (flags & TOKB_FLAG_ADD_BOS) != 0;
    t->add_eos = (flags & TOKB_FLAG_ADD_EOS) != 0;
    t->add_space_prefix = (flags & TOKB_FLAG_ADD_SPACE_PREFIX) != 0;
    t->ignore_merges = (flags & TOKB_FLAG_IGNORE_MERGES) != 0;
    t->spm_viterbi = (flags & TOKB_FLAG_SPM_VITERBI) != 0;
    t->lowercase = (flags & TOKB_FLAG_LOWERCASE) != 0;
    t->strip_accents = (flags & TOKB_FLAG_STRIP_ACCENTS) != 0;
    t->bos_id = rd32s(h + TOKB_BOS);
    t->eos_id = rd32s(h + TOKB_EOS);
    t->eot_id = rd32s(h + TOKB_EOT);
    t->unk_id = rd32s(h + TOKB_UNK);
    t->pad_id = rd32s(h + TOKB_PAD);
    uint32_t V = rd32(h + TOKB_N_TOKENS), M = rd32(h + TOKB_N_MERGES), S = rd32(h + TOKB_N_SPECIAL), G = rd32(h + TOKB_N_EOG);
    uint32_t o_text = rd32(h + TOKB_O_TEXT_OFFS), o_piece = rd32(h + TOKB_O_PIECE_OFFS), o_types = rd32(h + TOKB_O_TYPES);
    uint32_t o_scores = rd32(h + TOKB_O_SCORES), o_merges = rd32(h + TOKB_O_MERGES), o_special = rd32(h + TOKB_O_SPECIAL);
    uint32_t o_eog = rd32(h + TOKB_O_EOG), o_bytes = rd32(h + TOKB_O_BYTE_TOKENS);
    uint32_t o_tpool = rd32(h + TOKB_O_TEXT_POOL), n_tpool = rd32(h + TOKB_N_TEXT_POOL);
    uint32_t o_ppool = rd32(h + TOKB_O_PIECE_POOL), n_ppool = rd32(h + TOKB_N_PIECE_POOL);
    uint32_t o_chat = rd32(h + TOKB_O_CHAT), n_chat = rd32(h + TOKB_N_CHAT);

    int bad = 0;
    bad |= (t->model < TOKENIZER_SPM || t->model > TOKENIZER_BPE_UTF8);
    bad |= (t->model == TOKENIZER_BPE && (t->pre < TOKENIZER_PRE_LLAMA3 || t->pre > TOKENIZER_PRE_QWEN35));
    bad |= (t->model != TOKENIZER_BPE && t->pre != TOKENIZER_PRE_NONE);
    bad |= (V == 0 || V >= (1u << 30) || M >= (1u << 24));
    bad |= !section_ok(o_text, (uint64_t)V + 1, 4, total) || !section_ok(o_piece, (uint64_t)V + 1, 4, total);
    bad |= !section_ok(o_types, V, 1, total) || !section_ok(o_merges, 3ull * M, 4, total);
    bad |= !section_ok(o_special, S, 4, total) || !section_ok(o_eog, G, 4, total);
    bad |= !section_ok(o_bytes, 256, 4, total);
    bad |= (o_scores != 0 && !section_ok(o_scores, V, 4, total));
    bad |= (t->model == TOKENIZER_SPM && o_scores == 0);
    bad |= (n_tpool && (o_tpool < HEADER_SIZE || (uint64_t)o_tpool + n_tpool > total));
    bad |= (n_ppool && (o_ppool < HEADER_SIZE || (uint64_t)o_ppool + n_ppool > total));
    bad |= (n_chat && (o_chat < HEADER_SIZE || (uint64_t)o_chat + n_chat > total));
    if (bad) return TOKENIZER_E_CORRUPT;

    t->n_vocab = (int)V;
    t->text_offs = (const uint32_t *)(const void *)(blob + o_text);
    t->piece_offs = (const uint32_t *)(const void *)(blob + o_piece);
    t->types = blob + o_types;
    t->scores = o_scores ? (const float *)(const void *)(blob + o_scores) : NULL;
    t->merges = (const uint32_t *)(const void *)(blob + o_merges);
    t->n_merges = (int)M;
    t->special_ids = (const uint32_t *)(const void *)(blob + o_special);
    t->n_special = (int)S;
    t->eog_ids = (const uint32_t *)(const void *)(blob + o_eog);
    t->n_eog = (int)G;
    t->byte_tokens = (const int32_t *)(const void *)(blob + o_bytes);
    t->text_pool = blob + o_tpool;
    t->piece_pool = blob + o_ppool;
    t->chat_template = n_chat ? (const char *)(blob + o_chat) : NULL;
    t->chat_template_len = n_chat;

    /* every id and offset in range */
    int32_t ids[5] = {t->bos_id, t->eos_id, t->eot_id, t->unk_id, t->pad_id};
    for (int i = 0; i < 5; i++) bad |= (ids[i] < -1 || ids[i] >= (int32_t)V);
    bad |= (t->text_offs[0] != 0 || t->text_offs[V] != n_tpool);
    bad |= (t->piece_offs[0] != 0 || t->piece_offs[V] != n_ppool);
    for (uint32_t i = 0; i < V && !bad; i++) {
        bad |= t->text_offs[i] > t->text_offs[i + 1] || t->piece_offs[i] > t->piece_offs[i + 1];
        uint32_t ty = t->types[i] & TYPE_MASK;
        bad |= (ty < 1 || ty > 6);
    }
    for (uint32_t i = 0; i < 3 * M && !bad; i++) bad |= t->merges[i] >= V;
    for (uint32_t i = 0; i < S && !bad; i++) bad |= t->special_ids[i] >= V;
    for (uint32_t i = 0; i < G && !bad; i++) bad |= t->eog_ids[i] >= V;
    for (int i = 0; i < 256 && !bad; i++) bad |= t->byte_tokens[i] < -1 || t->byte_tokens[i] >= (int32_t)V;
    if (bad) { tokenizer_free(t); return TOKENIZER_E_CORRUPT; }

    /* derived numbers */
    t->min_score = 0.0f;
    int have_score = 0;
    for (uint32_t i = 0; i < V; i++) {
        uint32_t pl = t->piece_offs[i + 1] - t->piece_offs[i];
        if ((int)pl > t->max_piece_len) t->max_piece_len = (int)pl;
        uint32_t tl = t->text_offs[i + 1] - t->text_offs[i];
        if (!(t->types[i] & TYPE_NOMATCH) && (int)tl > t->max_token_bytes) t->max_token_bytes = (int)tl;
        uint32_t ty = t->types[i] & TYPE_MASK;
        if (t->scores && ty == TOKEN_NORMAL) {
            float s = t->scores[i];
            if (!have_score || s < t->min_score) t->min_score = s;
            have_score = 1;
        }
        if (t->model == TOKENIZER_SPM && (ty == TOKEN_NORMAL || ty == TOKEN_USER_DEFINED)) {
            const unsigned char *s = t->text_pool + t->text_offs[i];
            size_t n = t->text_offs[i + 1] - t->text_offs[i];
            int chars = 0;
            for (size_t k = 0; k < n; k++) chars += (s[k] & 0xC0) != 0x80;
            if (chars > t->max_token_chars) t->max_token_chars = chars;
        }
    }

    /* hash tables: one allocation */
    uint32_t n_match = 0;
    for (uint32_t i = 0; i < V; i++) n_match += !(t->types[i] & TYPE_NOMATCH);
    uint32_t vs = table_size(n_match), ms = M ? table_size(M) : 0;
    int32_t *mem = malloc(((size_t)vs + ms) * sizeof(int32_t));
    if (!mem) { tokenizer_free(t); return TOKENIZER_E_NOMEM; }
    memset(mem, 0xFF, ((size_t)vs + ms) * sizeof(int32_t));   /* all -1 */
    t->vocab_hash = mem;
    t->vocab_mask = vs - 1;
    t->merge_hash = ms ? mem + vs : NULL;
    t->merge_mask = ms ? ms - 1 : 0;
    for (uint32_t i = 0; i < V; i++) {
        if (t->types[i] & TYPE_NOMATCH) continue;
        size_t n;
        const unsigned char *k = match_key(t, (int)i, &n);
        uint32_t slot = mix(fnv(k, n)) & t->vocab_mask;
        for (;;) {                        /* a later duplicate replaces the earlier one */
            int32_t id = t->vocab_hash[slot];
            if (id < 0) { t->vocab_hash[slot] = (int32_t)i; break; }
            size_t kl;
            const unsigned char *kk = match_key(t, id, &kl);
            if (kl == n && memcmp(kk, k, n) == 0) { t->vocab_hash[slot] = (int32_t)i; break; }
            slot = (slot + 1) & t->vocab_mask;
        }
    }
    for (uint32_t r = 0; r < M; r++) {
        const uint32_t *m = t->merges + 3 * (size_t)r;
        uint32_t slot = pair_hash(m[0], m[1]) & t->merge_mask;
        for (;;) {                        /* the first (lowest rank) duplicate wins */
            int32_t e = t->merge_hash[slot];
            if (e < 0) { t->merge_hash[slot] = (int32_t)r; break; }
            const uint32_t *o = t->merges + 3 * (size_t)e;
            if (o[0] == m[0] && o[1] == m[1]) break;
            slot = (slot + 1) & t->merge_mask;
        }
    }
    /* SPM viterbi: a bitmap of the hashes of all token prefixes (at character boundaries) */
    if (t->model == TOKENIZER_SPM && t->spm_viterbi) {
        uint64_t n_prefix = 0;
        for (uint32_t i = 0; i < V; i++) n_prefix += t->text_offs[i + 1] - t->text_offs[i];
        uint64_t bits = 1u << 12;
        while (bits < 16 * n_prefix && bits < (1u << 30)) bits *= 2;
        t->prefix_bits = calloc((size_t)(bits / 64), sizeof(uint64_t));
        if (!t->prefix_bits) { tokenizer_free(t); return TOKENIZER_E_NOMEM; }
        t->prefix_mask = (uint32_t)(bits - 1);
        for (uint32_t i = 0; i < V; i++) {
            unsigned ty = t->types[i] & TYPE_MASK;
            if ((t->types[i] & TYPE_NOMATCH) || (ty != TOKEN_NORMAL && ty != TOKEN_USER_DEFINED)) continue;
            const unsigned char *k = t->text_pool + t->text_offs[i];
            size_t n = t->text_offs[i + 1] - t->text_offs[i];
            uint32_t hh = FNV_INIT;
            for (size_t j = 0; j < n; j++) {
                hh = fnv_step(hh, k[j]);
                if (j + 1 == n || (k[j + 1] & 0xC0) != 0x80) {      /* a character ends here */
                    uint32_t bit = mix(hh) & t->prefix_mask;
                    t->prefix_bits[bit / 64] |= (uint64_t)1 << (bit % 64);
                }
            }
        }
    }
    return TOKENIZER_OK;
}

void tokenizer_free(Tokenizer *t) {
    if (!t) return;
    free(t->prefix_bits);
    free(t->vocab_hash);
    free(t->blob_copy);
    memset(t, 0, sizeof *t);
}

/* ===================================================================================== */
/* Unicode classes and UTF-8                                                              */
/* ===================================================================================== */

unsigned tokenizer_unicode_flags(uint32_t cp) {
    if (cp < 256) return tokenizer_unicode_latin1[cp];
    if (cp > 0x10FFFF) return 0;
    /* last range whose first code point is <= cp */
    uint32_t lo = 0, hi = tokenizer_unicode_n_ranges;     /* answer in [lo, hi) */
    while (hi - lo > 1) {
        uint32_t mid = lo + (hi - lo) / 2;
        if ((tokenizer_unicode_ranges[mid] >> 8) <= cp) lo = mid; else hi = mid;
    }
    return tokenizer_unicode_ranges[lo] & 0xFF;
}

/* Classifies the UTF-8 sequence at s[0] (n >= 1 bytes available):
 *   returns k > 0 : a well-formed character of k bytes (*len = k)
 *   returns 0     : a well-formed prefix cut by the end of the buffer (*len = its length)
 *   returns -1    : ill-formed; *len = length of the maximal subpart to replace (>= 1) */
static int utf8_check(const unsigned char *s, size_t n, int *len) {
    unsigned b = s[0];
    int need;
    unsigned lo = 0x80, hi = 0xBF;
    if (b < 0x80) { *len = 1; return 1; }
    if (b >= 0xC2 && b <= 0xDF) need = 2;
    else if (b == 0xE0) { need = 3; lo = 0xA0; }
    else if (b == 0xED) { need = 3; hi = 0x9F; }
    else if (b >= 0xE1 && b <= 0xEF) need = 3;
    else if (b == 0xF0) { need = 4; lo = 0x90; }
    else if (b == 0xF4) { need = 4; hi = 0x8F; }
    else if (b >= 0xF1 && b <= 0xF3) need = 4;
    else { *len = 1; return -1; }
    for (int i = 1; i < need; i++) {
        if ((size_t)i >= n) { *len = i; return 0; }
        unsigned c = s[i];
        unsigned l = i == 1 ? lo : 0x80, h = i == 1 ? hi : 0xBF;
        if (c < l || c > h) { *len = i; return -1; }
    }
    *len = need;
    return need;
}

#define CP_INVALID 0xFFFFFFFFu

/* One character of the input: where it starts, its code point and Unicode class flags.
 * An invalid byte is a character of its own with cp = CP_INVALID and no flags. */
typedef struct {
    uint32_t off;       /* byte offset in the fragment */
    uint32_t cp;
    uint32_t flags;     /* U_* bits */
} Char;

static uint32_t decode_cp(const unsigned char *s, int k) {
    switch (k) {
    case 1: return s[0];
    case 2: return ((uint32_t)(s[0] & 0x1F) << 6) | (s[1] & 0x3F);
    case 3: return ((uint32_t)(s[0] & 0x0F) << 12) | ((uint32_t)(s[1] & 0x3F) << 6) | (s[2] & 0x3F);
    default: return ((uint32_t)(s[0] & 0x07) << 18) | ((uint32_t)(s[1] & 0x3F) << 12) |
                    ((uint32_t)(s[2] & 0x3F) << 6) | (s[3] & 0x3F);
    }
}

/* Length of the character at s[0]: a well-formed UTF-8 sequence, or 1 invalid byte. */
static int char_len(const unsigned char *s, size_t n) {
    int len;
    return utf8_check(s, n, &len) > 0 ? len : 1;
}

/* Splits s[0..n) into characters; returns how many (chars must hold n entries). */
static int split_chars(const unsigned char *s, size_t n, Char *chars) {
    int nc = 0;
    size_t i = 0;
    while (i < n) {
        int len;
        Char *c = &chars[nc++];
        c->off = (uint32_t)i;
        if (utf8_check(s + i, n - i, &len) > 0) {
            c->cp = decode_cp(s + i, len);
            c->flags = tokenizer_unicode_flags(c->cp);
        } else {
            len = 1;
            c->cp = CP_INVALID;
            c->flags = 0;
        }
        i += (size_t)len;
    }
    return nc;
}

/* ===================================================================================== */
/* Output and scratch memory                                                              */
/* ===================================================================================== */

typedef struct {
    int *out;           /* (max) caller's buffer */
    int max;
    int count;          /* ids produced so far (may exceed max: then we only count) */
    int last_unk;       /* the previous id was an <unk> standing for unknown bytes */
} Emit;

static void emit(Emit *e, int id) {
    if (e->count < e->max) e->out[e->count] = id;
    e->count++;
    e->last_unk = 0;
}

/* Bytes no token covers: their byte tokens, else one <unk> per run (sentencepiece's rule). */
static void emit_bytes(const Tokenizer *t, Emit *e, const unsigned char *s, size_t n) {
    for (size_t i = 0; i < n; i++) {
        int id = t->byte_tokens[s[i]];
        if (id >= 0) {
            emit(e, id);
        } else if (t->unk_id >= 0 && !e->last_unk) {
            emit(e, t->unk_id);
            e->last_unk = 1;
        }
    }
}

/* A priority queue entry: a candidate merge of symbols left and right. Higher score first,
 * then the leftmost. BPE uses score = -rank. */
typedef struct {
    float score;
    int32_t left, right;
    int32_t size;       /* SPM: byte length of the merged text; BPE: the merge rank */
    int32_t id;         /* the merged token */
} Cand;

typedef struct {
    Cand *a;
    int n;
} Heap;

static int cand_before(const Cand *x, const Cand *y) {
    return x->score > y->score || (x->score == y->score && x->left < y->left);
}

static void heap_push(Heap *h, Cand c) {
    int i = h->n++;
    while (i > 0) {
        int p = (i - 1) / 2;
        if (!cand_before(&c, &h->a[p])) break;
        h->a[i] = h->a[p];
        i = p;
    }
    h->a[i] = c;
}

static Cand heap_pop(Heap *h) {
    Cand top = h->a[0];
    Cand last = h->a[--h->n];
    int i = 0;
    for (;;) {
        int l = 2 * i + 1, r = l + 1, best = i;
        const Cand *bc = &last;
        if (l < h->n && cand_before(&h->a[l], bc)) { best = l; bc = &h->a[l]; }
        if (r < h->n && cand_before(&h->a[r], bc)) { best = r; }
        if (best == i) break;
        h->a[i] = h->a[best];
        i = best;
    }
    if (h->n > 0) h->a[i] = last;
    return top;
}

/* ===================================================================================== */
/* Special tokens: cut the input into raw-text fragments and whole special tokens         */
/* ===================================================================================== */

typedef struct {
    int32_t start, len;     /* raw text: text[start..start+len) */
    int32_t id;             /* >= 0: a special token, -1: raw text */
} Frag;

typedef struct {
    Frag *a;
    int n, cap;
} FragList;

static int frag_add(FragList *l, int32_t start, int32_t len, int32_t id) {
    if (l->n == l->cap) {
        int cap = l->cap ? 2 * l->cap : 16;
        Frag *a = realloc(l->a, (size_t)cap * sizeof(Frag));
        if (!a) return 0;
        l->a = a;
        l->cap = cap;
    }
    l->a[l->n].start = start;
    l->a[l->n].len = len;
    l->a[l->n].id = id;
    l->n++;
    return 1;
}

/* llama.cpp's order: for each special token, longest first, split every raw fragment at its
 * leftmost non-overlapping occurrences. Returns 0 when out of memory. */
static int partition(const Tokenizer *t, const unsigned char *text, size_t len, int parse_special,
                     FragList *cur, FragList *next) {
    cur->n = 0;
    if (len > 0 && !frag_add(cur, 0, (int32_t)len, -1)) return 0;
    for (int s = 0; s < t->n_special; s++) {
        int id = (int)t->special_ids[s];
        unsigned ty = t->types[id] & TYPE_MASK;
        if (!parse_special && ty != TOKEN_USER_DEFINED) continue;
        const unsigned char *tok = t->text_pool + t->text_offs[id];
        size_t tl = t->text_offs[id + 1] - t->text_offs[id];
        if (tl == 0 || tl > len) continue;
        next->n = 0;
        int found = 0;
        for (int f = 0; f < cur->n; f++) {
            Frag fr = cur->a[f];
            if (fr.id >= 0 || (size_t)fr.len < tl) {
                if (!frag_add(next, fr.start, fr.len, fr.id)) return 0;
                continue;
            }
            size_t cut = (size_t)fr.start;       /* raw text not yet emitted starts here */
            size_t pos = cut, end = (size_t)fr.start + (size_t)fr.len;   /* search position */
            while (pos + tl <= end) {
                const unsigned char *hit = memchr(text + pos, tok[0], end - tl + 1 - pos);
                if (!hit) break;
                size_t at = (size_t)(hit - text);
                if (memcmp(hit, tok, tl) != 0) { pos = at + 1; continue; }
                if (at > cut && !frag_add(next, (int32_t)cut, (int32_t)(at - cut), -1)) return 0;
                if (!frag_add(next, 0, 0, id)) return 0;
                pos = cut = at + tl;
                found = 1;
            }
            if (cut < end && !frag_add(next, (int32_t)cut, (int32_t)(end - cut), -1)) return 0;
        }
        if (found) { FragList tmp = *cur; *cur = *next; *next = tmp; }
    }
    return 1;
}

/* ===================================================================================== */
/* SentencePiece (SPM)                                                                    */
/* ===================================================================================== */

/* A node of the merge tree: a leaf character or the merge of two nodes. */
typedef struct {
    int32_t start, len;     /* bytes of the fragment buffer */
    int32_t id;             /* token, -1 if the text is no token (single characters only) */
    int32_t left, right;    /* children, -1 for a leaf */
} SpmNode;

/* A symbol of the current segmentation (doubly linked list). */
typedef struct {
    int32_t prev, next;
    int32_t node;           /* its merge-tree node, -1 once merged into the left neighbour */
} SpmSym;

typedef struct {
    SpmNode *nodes;         /* (2 * n_chars) */
    SpmSym *syms;           /* (n_chars) */
    Cand *heap;             /* (3 * n_chars) */
    int32_t *stack;         /* (2 * n_chars) for walking merge trees */
    float *best;            /* (n_bytes + 1) viterbi: best score ending at a byte position */
    int32_t *from;          /* (n_bytes + 1) viterbi: where that best piece starts, -1 unset */
    int32_t *best_id;       /* (n_bytes + 1) viterbi: that piece's token (-1 = unknown) */
} SpmScratch;

static int spm_mergeable(const Tokenizer *t, int id) {
    unsigned ty = t->types[id] & TYPE_MASK;
    return ty == TOKEN_NORMAL || ty == TOKEN_USER_DEFINED || ty == TOKEN_UNUSED;
}

static void spm_try_pair(const Tokenizer *t, const unsigned char *buf, SpmScratch *w, Heap *h,
                         int left, int right) {
    if (left < 0 || right < 0) return;
    const SpmNode *a = &w->nodes[w->syms[left].node], *b = &w->nodes[w->syms[right].node];
    int32_t size = a->len + b->len;
    int id = vocab_lookup(t, buf + a->start, (size_t)size);
    if (id < 0 || !spm_mergeable(t, id)) return;
    Cand c = {t->scores[id], left, right, size, id};
    heap_push(h, c);
}

/* Emits a final symbol: its token, or (unused tokens) its parts, or bytes. */
static void spm_emit_node(const Tokenizer *t, const unsigned char *buf, SpmScratch *w, Emit *e,
                          int root) {
    int sp = 0;
    w->stack[sp++] = root;
    while (sp > 0) {
        const SpmNode *nd = &w->nodes[w->stack[--sp]];
        int leaf = nd->left < 0;
        if (nd->id >= 0 && (leaf || (t->types[nd->id] & TYPE_MASK) != TOKEN_UNUSED)) {
            emit(e, nd->id);
        } else if (!leaf) {
            w->stack[sp++] = nd->right;
            w->stack[sp++] = nd->left;
        } else {
            emit_bytes(t, e, buf + nd->start, (size_t)nd->len);
        }
    }
}

/* llama.cpp's SPM: merge the adjacent pair forming the best-scored token until none is left. */
static void spm_merge(const Tokenizer *t, const unsigned char *buf, size_t n, SpmScratch *w, Emit *e) {
    int nc = 0;
    for (size_t i = 0; i < n;) {
        int len = char_len(buf + i, n - i);
        SpmNode *nd = &w->nodes[nc];
        nd->start = (int32_t)i;
        nd->len = len;
        nd->id = vocab_lookup(t, buf + i, (size_t)len);
        nd->left = nd->right = -1;
        w->syms[nc].prev = nc - 1;
        w->syms[nc].next = -1;
        if (nc > 0) w->syms[nc - 1].next = nc;
        w->syms[nc].node = nc;
        nc++;
        i += (size_t)len;
    }
    if (nc == 0) return;
    int n_nodes = nc;
    Heap h = {w->heap, 0};
    for (int i = 1; i < nc; i++) spm_try_pair(t, buf, w, &h, i - 1, i);
    while (h.n > 0) {
        Cand c = heap_pop(&h);
        SpmSym *l = &w->syms[c.left], *r = &w->syms[c.right];
        if (l->node < 0 || r->node < 0 || l->next != c.right) continue;
        if (w->nodes[l->node].len + w->nodes[r->node].len != c.size) continue;
        SpmNode *nd = &w->nodes[n_nodes];
        nd->start = w->nodes[l->node].start;
        nd->len = c.size;
        nd->id = c.id;
        nd->left = l->node;
        nd->right = r->node;
        l->node = n_nodes++;
        r->node = -1;
        l->next = r->next;
        if (r->next >= 0) w->syms[r->next].prev = c.left;
        spm_try_pair(t, buf, w, &h, l->prev, c.left);
        spm_try_pair(t, buf, w, &h, c.left, l->next);
    }
    for (int i = 0; i >= 0; i = w->syms[i].next) spm_emit_node(t, buf, w, e, w->syms[i].node);
}

/* sentencepiece's unigram: the segmentation with the best total score (Viterbi), computed
 * the way sentencepiece 0.2 (EncodeOptimized) does, so near-ties fall the same way: float
 * sums; when the running score passes +-100000 it is re-based to 0 (subtracted from every
 * position reached so far); the first candidate wins ties. A position where no one-character
 * token starts gets an unknown piece scored min_score - 10; user-defined tokens score
 * 0.1 * (bytes - 1). */
static void spm_viterbi(const Tokenizer *t, const unsigned char *buf, size_t n, SpmScratch *w, Emit *e) {
    const float unk_score = t->min_score - 10.0f;
    const float reset = 100000.0f;
    size_t frontier = 0;                  /* furthest position any candidate reached */
    for (size_t i = 0; i <= n; i++) w->from[i] = -1;
    w->best[0] = 0.0f;
    for (size_t s = 0; s < n;) {
        float here = w->best[s];
        if (here < -reset || here > reset) {
            for (size_t i = s; i <= frontier; i++)
                if (i == s || w->from[i] >= 0) w->best[i] -= here;
            here = 0.0f;
        }
        int first_len = char_len(buf + s, n - s);
        int single = 0;
        uint32_t hsh = FNV_INIT;
        size_t end = s;
        for (int k = 1; k <= t->max_token_chars && end < n; k++) {
            int cl = char_len(buf + end, n - end);
            for (int b = 0; b < cl; b++) hsh = fnv_step(hsh, buf[end + (size_t)b]);
            end += (size_t)cl;
            uint32_t bit = mix(hsh) & t->prefix_mask;
            if (!(t->prefix_bits[bit / 64] >> (bit % 64) & 1)) break;   /* no token goes on */
            int id = vocab_lookup_h(t, buf + s, end - s, hsh);
            if (id < 0) continue;
            unsigned ty = t->types[id] & TYPE_MASK;
            if (ty != TOKEN_NORMAL && ty != TOKEN_USER_DEFINED) continue;
            if (end > frontier) frontier = end;
            float sc = ty == TOKEN_USER_DEFINED ? (float)(0.1 * (double)(end - s - 1)) : t->scores[id];
            float cand = sc + here;
            if (w->from[end] < 0 || cand > w->best[end]) {
                w->best[end] = cand;
                w->from[end] = (int32_t)s;
                w->best_id[end] = id;
            }
            if (k == 1) single = 1;
        }
        if (!single) {
            size_t e1 = s + (size_t)first_len;
            if (e1 > frontier) frontier = e1;
            float cand = unk_score + here;
            if (w->from[e1] < 0 || cand > w->best[e1]) {
                w->best[e1] = cand;
                w->from[e1] = (int32_t)s;
                w->best_id[e1] = -1;
            }
        }
        s += (size_t)first_len;
    }
    /* backtrack: piece ends, collected right to left into stack, then emitted in order */
    int np = 0;
    for (size_t end = n; end > 0; end = (size_t)w->from[end]) w->stack[np++] = (int32_t)end;
    for (int i = np - 1; i >= 0; i--) {
        size_t end = (size_t)w->stack[i], start = (size_t)w->from[end];
        int id = w->best_id[end];
        if (id >= 0) emit(e, id);
        else emit_bytes(t, e, buf + start, end - start);
    }
}

/* ===================================================================================== */
/* BPE pre-tokenizers                                                                     */
/* ===================================================================================== */

static int is_l(const Char *c) { return (c->flags & U_LETTER) != 0; }
static int is_n(const Char *c) { return (c->flags & U_NUMBER) != 0; }
static int is_s(const Char *c) { return (c->flags & U_SPACE) != 0; }
static int is_p(const Char *c) { return (c->flags & U_PUNCT) != 0; }
static int is_lm(const Char *c) { return (c->flags & (U_LETTER | U_MARK)) != 0; }
static int is_other(const Char *c) { return (c->flags & (U_LETTER | U_NUMBER | U_SPACE)) == 0; }
static int is_other_m(const Char *c) { return (c->flags & (U_LETTER | U_NUMBER | U_SPACE | U_MARK)) == 0; }
static int is_crlf(const Char *c) { return c->cp == '\r' || c->cp == '\n'; }

/* Case-folded ASCII letter for the (?i:'s|'t|...) contractions (U+017F LONG S folds to s). */
static uint32_t fold(uint32_t cp) {
    if (cp >= 'A' && cp <= 'Z') return cp + 32;
    if (cp == 0x17F) return 's';
    return cp;
}

/* Whitespace at c[i]: \s*[\r\n]+ (llama3 only) | \s+(?!\S) | \s+  */
static int scan_space(const Char *c, int i, int n, int crlf_rule) {
    int k = i, last = -1;
    while (k < n && is_s(&c[k])) {
        if (is_crlf(&c[k])) last = k;
        k++;
    }
    if (crlf_rule && last >= 0) return last + 1;
    if (k - i > 1 && k < n) return k - 1;   /* leave the last space to the next word */
    return k;
}

/* One word of the LLaMA-3 regex starting at c[i]; returns its end (> i).
 * (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*
 * |\s*[\r\n]+|\s+(?!\S)|\s+   (max_digits 3; Qwen2's regex is the same with \p{N}: 1).
 * marks (Qwen3.5): letters are [\p{L}\p{M}] and the symbol run [^\s\p{L}\p{M}\p{N}]. */
static int scan_llama3(const Char *c, int i, int n, int max_digits, int marks) {
    int (*letter)(const Char *) = marks ? is_lm : is_l;
    int (*other)(const Char *) = marks ? is_other_m : is_other;
    if (c[i].cp == '\'' && i + 1 < n) {
        uint32_t a = fold(c[i + 1].cp);    /* Qwen2's tokenizer.json has the same (?i:...) */
        if (a == 's' || a == 't' || a == 'm' || a == 'd') return i + 2;
        if (i + 2 < n) {
            uint32_t b = fold(c[i + 2].cp);
            if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return i + 3;
        }
    }
    int j;
    if (letter(&c[i]) || (!is_crlf(&c[i]) && !is_n(&c[i]) && i + 1 < n && letter(&c[i + 1]))) {
        j = i + 1;
        while (j < n && letter(&c[j])) j++;
        return j;
    }
    if (is_n(&c[i])) {
        j = i + 1;
        while (j < n && j < i + max_digits && is_n(&c[j])) j++;
        return j;
    }
    j = (c[i].cp == ' ' && i + 1 < n && other(&c[i + 1])) ? i + 1 : i;
    if (other(&c[j])) {
        while (j < n && other(&c[j])) j++;
        while (j < n && is_crlf(&c[j])) j++;
        return j;
    }
    return scan_space(c, i, n, 1);
}

/* One word of the GPT-2 regex starting at c[i]; returns its end (> i).
 * 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+  */
static int scan_gpt2(const Char *c, int i, int n) {
    if (c[i].cp == '\'' && i + 1 < n) {
        uint32_t a = c[i + 1].cp;
        if (a == 's' || a == 't' || a == 'm' || a == 'd') return i + 2;
        if (i + 2 < n) {
            uint32_t b = c[i + 2].cp;
            if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return i + 3;
        }
    }
    int j = (c[i].cp == ' ' && i + 1 < n) ? i + 1 : i;
    int (*cls)(const Char *) = is_l(&c[j]) ? is_l : is_n(&c[j]) ? is_n : is_other(&c[j]) ? is_other : NULL;
    if (cls) {
        j++;
        while (j < n && cls(&c[j])) j++;
        return j;
    }
    return scan_space(c, i, n, 0);
}

/* ---- chains of splits (deepseek-llm, deepseek-coder, falcon) ------------------------- *
 * The words are kept as a boundary bitmap over the characters (bnd[i] = a word starts at
 * i; bnd[0] = bnd[n] = 1). Every stage looks at each current word on its own and adds
 * boundaries around the leftmost non-overlapping matches of its pattern in it (the text
 * between matches stays a word too): llama.cpp's regex splits, HF's Split(..., isolated).
 * The patterns are llama.cpp's; where they are std::regex ones with explicit character
 * ranges, a non-ASCII space never matches a range (llama.cpp hands std::wregex such
 * characters as U+000B), and \s is the White_Space property. */

/* Length of a match of the stage's pattern at c[i] (word end n), 0 = none. */
typedef int (*MatchFn)(const Char *c, int i, int n);

static void stage_isolate(const Char *c, int nc, uint8_t *bnd, MatchFn match) {
    for (int a = 0; a < nc;) {
        int b = a + 1;
        while (b < nc && !bnd[b]) b++;
        for (int i = a; i < b;) {
            int len = match(c, i, b);
            if (len > 0) { bnd[i] = 1; bnd[i + len] = 1; i += len; }
            else i++;
        }
        a = b;
    }
}

/* A stage that cuts every word completely into the words of a scanner (the GPT-2 regex). */
static void stage_scan_gpt2(const Char *c, int nc, uint8_t *bnd) {
    for (int a = 0; a < nc;) {
        int b = a + 1;
        while (b < nc && !bnd[b]) b++;
        for (int i = a; i < b;) { i = scan_gpt2(c, i, b); bnd[i] = 1; }
        a = b;
    }
}

/* \s+$ : the whitespace that ends a word. */
static void stage_trailing_space(const Char *c, int nc, uint8_t *bnd) {
    for (int a = 0; a < nc;) {
        int b = a + 1;
        while (b < nc && !bnd[b]) b++;
        int k = b;
        while (k > a && is_s(&c[k - 1])) k--;
        if (k < b) bnd[k] = 1;
        a = b;
    }
}

static int in_ranges(uint32_t cp, const uint32_t *r, int n_pairs) {
    int lo = 0, hi = n_pairs;          /* first pair whose last code point >= cp */
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (r[2 * mid + 1] < cp) lo = mid + 1; else hi = mid;
    }
    return lo < n_pairs && r[2 * lo] <= cp;
}

/* A character of an explicit-range class (a non-ASCII space is never one, see above). */
static int ranged(const Char *c, const uint32_t *r, int n_pairs) {
    if (c->cp >= 0x80 && (c->flags & U_SPACE)) return 0;
    return c->cp != CP_INVALID && in_ranges(c->cp, r, n_pairs);
}

/* deepseek-llm's letters (its tokenizer.json): Latin, Greek, Cyrillic, Armenian, Georgian,
 * Cherokee, Glagolitic, Coptic, Deseret, Osage, Old Hungarian, Warang Citi, Adlam, ... */
static const uint32_t DS_LETTERS[] = {
    0x41, 0x5A, 0x61, 0x7A, 0xB5, 0xB5, 0xC0, 0xD6, 0xD8, 0xF6, 0xF8, 0x1BA, 0x1BC, 0x1BF,
    0x1C4, 0x293, 0x295, 0x2AF, 0x370, 0x373, 0x376, 0x377, 0x37B, 0x37D, 0x37F, 0x37F,
    0x386, 0x386, 0x388, 0x38A, 0x38C, 0x38C, 0x38E, 0x3A1, 0x3A3, 0x3F5, 0x3F7, 0x481,
    0x48A, 0x52F, 0x531, 0x556, 0x10A0, 0x10C5, 0x13A0, 0x13F5, 0x13F8, 0x13FD, 0x1C90, 0x1CBA,
    0x1CBD, 0x1CBF, 0x1D00, 0x1D2B, 0x1D6B, 0x1D77, 0x1D79, 0x1D9A, 0x1E00, 0x1F15, 0x1F18, 0x1F1D,
    0x1F20, 0x1F45, 0x1F48, 0x1F4D, 0x1F50, 0x1F57, 0x1F59, 0x1F59, 0x1F5B, 0x1F5B, 0x1F5D, 0x1F5D,
    0x1F5F, 0x1F7D, 0x1F80, 0x1FB4, 0x1FB6, 0x1FBC, 0x1FBE, 0x1FBE, 0x1FC2, 0x1FC4, 0x1FC6, 0x1FCC,
    0x1FD0, 0x1FD3, 0x1FD6, 0x1FDB, 0x1FE0, 0x1FEC, 0x1FF2, 0x1FF4, 0x1FF6, 0x1FFC, 0x2102, 0x2102,
    0x2107, 0x2107, 0x210A, 0x2113, 0x2115, 0x2115, 0x2119, 0x211D, 0x2124, 0x2124, 0x2126, 0x2126,
    0x2128, 0x2128, 0x212A, 0x212D, 0x212F, 0x2134, 0x2139, 0x2139, 0x213C, 0x213F, 0x2145, 0x2149,
    0x214E, 0x214E, 0x2183, 0x2184, 0x2C00, 0x2C7B, 0x2C7E, 0x2CE4, 0x2CEB, 0x2CEE, 0x2CF2, 0x2CF3,
    0xA640, 0xA66D, 0xA680, 0xA69B, 0xA722, 0xA76F, 0xA771, 0xA787, 0xA78B, 0xA78E, 0xAB70, 0xABBF,
    0xFB00, 0xFB06, 0xFB13, 0xFB17, 0xFF21, 0xFF3A, 0xFF41, 0xFF5A, 0x10400, 0x1044F, 0x104B0, 0x104D3,
    0x104D8, 0x104FB, 0x10C80, 0x10CB2, 0x10CC0, 0x10CF2, 0x118A0, 0x118DF, 0x1E900, 0x1E943,
};
/* deepseek-llm's punctuation: ASCII !-/ :-~ (letters included), full-width ！-／ ：-～,
 * quotation marks U+2018-U+201F, U+3000-U+3002. */
static const uint32_t DS_PUNCT[] = {
    0x21, 0x2F, 0x3A, 0x7E, 0x2018, 0x201F, 0x3000, 0x3002, 0xFF01, 0xFF0F, 0xFF1A, 0xFF5E,
};
/* Both deepseek families: CJK U+4E00-U+9FA5, U+0800-U+4E00 and Hangul U+AC00-U+D7FF. */
static const uint32_t DS_CJK[] = {0x800, 0x9FA5, 0xAC00, 0xD7FF};

#define NPAIRS(a) ((int)(sizeof(a) / sizeof(a[0]) / 2))

static int m_crlf(const Char *c, int i, int n) { (void)n; return is_crlf(&c[i]); }

/* \s?X+ for a class X given as a predicate */
static int m_space_run(const Char *c, int i, int n, int (*x)(const Char *)) {
    int j = i;
    if (is_s(&c[j]) && j + 1 < n && x(&c[j + 1])) j++;
    if (!x(&c[j])) return 0;
    while (j < n && x(&c[j])) j++;
    return j - i;
}

static int x_ds_letter(const Char *c) { return ranged(c, DS_LETTERS, NPAIRS(DS_LETTERS)); }
static int x_ds_punct(const Char *c) { return ranged(c, DS_PUNCT, NPAIRS(DS_PUNCT)); }
static int m_ds_letters(const Char *c, int i, int n) { return m_space_run(c, i, n, x_ds_letter); }
static int m_ds_punct(const Char *c, int i, int n) { return m_space_run(c, i, n, x_ds_punct); }
static int m_letters(const Char *c, int i, int n) { return m_space_run(c, i, n, is_l); }
static int m_punct(const Char *c, int i, int n) { return m_space_run(c, i, n, is_p); }

static int m_cjk(const Char *c, int i, int n) {
    int j = i;
    while (j < n && ranged(&c[j], DS_CJK, NPAIRS(DS_CJK))) j++;
    return j - i;
}

static int m_digit(const Char *c, int i, int n) { (void)n; return is_n(&c[i]); }

static int m_digits(const Char *c, int i, int n) {
    int j = i;
    while (j < n && is_n(&c[j])) j++;
    return j - i;
}

/* falcon: [\p{P}\$\+<=>\^~\|`]+ */
static int x_falcon_punct(const Char *c) {
    uint32_t p = c->cp;
    return is_p(c) || p == '$' || p == '+' || p == '<' || p == '=' || p == '>' || p == '^' ||
           p == '~' || p == '|' || p == '`';
}

static int m_falcon_punct(const Char *c, int i, int n) {
    int j = i;
    while (j < n && x_falcon_punct(&c[j])) j++;
    return j - i;
}

/* [0-9][0-9][0-9] */
static int m_three_digits(const Char *c, int i, int n) {
    if (i + 3 > n) return 0;
    for (int k = 0; k < 3; k++)
        if (c[i + k].cp < '0' || c[i + k].cp > '9') return 0;
    return 3;
}

/* Sets bnd[0..nc] to the words of a chain pre-tokenizer. */
static void chain_split(int pre, const Char *c, int nc, uint8_t *bnd) {
    memset(bnd, 0, (size_t)nc + 1);
    bnd[0] = 1;
    bnd[nc] = 1;
    if (nc == 0) return;
    switch (pre) {
    case TOKENIZER_PRE_DEEPSEEK_LLM:
        stage_isolate(c, nc, bnd, m_crlf);
        stage_isolate(c, nc, bnd, m_ds_letters);
        stage_isolate(c, nc, bnd, m_ds_punct);
        stage_trailing_space(c, nc, bnd);
        stage_isolate(c, nc, bnd, m_cjk);
        stage_isolate(c, nc, bnd, m_digits);
        break;
    case TOKENIZER_PRE_DEEPSEEK_CODER:
        stage_isolate(c, nc, bnd, m_crlf);
        stage_isolate(c, nc, bnd, m_letters);
        stage_isolate(c, nc, bnd, m_punct);
        stage_isolate(c, nc, bnd, m_cjk);
        stage_isolate(c, nc, bnd, m_digit);
        break;
    default: /* TOKENIZER_PRE_FALCON */
        stage_isolate(c, nc, bnd, m_falcon_punct);
        stage_scan_gpt2(c, nc, bnd);
        stage_isolate(c, nc, bnd, m_three_digits);
        break;
    }
}

/* ===================================================================================== */
/* BPE                                                                                    */
/* ===================================================================================== */

typedef struct {
    int32_t prev, next;
    int32_t id;             /* current token of the symbol, -1 = text without a token */
    int32_t alive;
    int32_t start, len;     /* its bytes in the word */
} BpeSym;

typedef struct {
    Char *chars;            /* (fragment bytes) */
    BpeSym *syms;           /* (longest word bytes) */
    Cand *heap;             /* (3 * longest word bytes) */
    uint8_t *bnd;           /* (fragment bytes + 1) word boundaries of chain pre-tokenizers */
} BpeScratch;

static void bpe_try_pair(const Tokenizer *t, BpeSym *s, Heap *h, int left, int right) {
    if (left < 0 || right < 0 || s[left].id < 0 || s[right].id < 0) return;
    int rank = merge_lookup(t, s[left].id, s[right].id);
    if (rank < 0) return;
    Cand c = {-(float)rank, left, right, rank, (int32_t)t->merges[3 * (size_t)rank + 2]};
    heap_push(h, c);
}

/* One pre-tokenized word (raw bytes): merge its symbols by rank, lowest first, leftmost
 * first. Byte-level BPE starts from one symbol per byte; BPE_UTF8 from one per character
 * (the character's token, or none), and text left without a token becomes <0xNN> tokens. */
static void bpe_word(const Tokenizer *t, const unsigned char *w, size_t n, BpeScratch *sc, Emit *e) {
    if (t->ignore_merges) {
        int id = vocab_lookup(t, w, n);
        if (id >= 0) { emit(e, id); return; }
    }
    int utf8 = t->model == TOKENIZER_BPE_UTF8;
    if (n == 1 && !utf8) {
        if (t->byte_tokens[w[0]] >= 0) emit(e, t->byte_tokens[w[0]]);
        return;
    }
    BpeSym *s = sc->syms;
    int ns = 0;
    for (size_t i = 0; i < n; ns++) {
        int len = utf8 ? char_len(w + i, n - i) : 1;
        s[ns].prev = ns - 1;
        s[ns].next = ns + 1;
        s[ns].id = utf8 ? vocab_lookup(t, w + i, (size_t)len) : t->byte_tokens[w[i]];
        s[ns].alive = 1;
        s[ns].start = (int32_t)i;
        s[ns].len = len;
        i += (size_t)len;
    }
    if (ns == 0) return;
    s[ns - 1].next = -1;
    Heap h = {sc->heap, 0};
    for (int i = 1; i < ns; i++) bpe_try_pair(t, s, &h, i - 1, i);
    while (h.n > 0) {
        Cand c = heap_pop(&h);
        BpeSym *l = &s[c.left];
        if (!l->alive || l->next != c.right) continue;
        BpeSym *r = &s[c.right];
        const uint32_t *m = t->merges + 3 * (size_t)c.size;
        if ((uint32_t)l->id != m[0] || (uint32_t)r->id != m[1]) continue;
        l->id = c.id;
        l->len += r->len;
        r->alive = 0;
        l->next = r->next;
        if (r->next >= 0) s[r->next].prev = c.left;
        bpe_try_pair(t, s, &h, l->prev, c.left);
        bpe_try_pair(t, s, &h, c.left, l->next);
    }
    for (int i = 0; i >= 0; i = s[i].next) {
        if (s[i].id >= 0) emit(e, s[i].id);
        else if (utf8)                              /* byte fallback; bytes without one are dropped */
            for (int32_t k = 0; k < s[i].len; k++) {
                int id = t->byte_tokens[w[s[i].start + k]];
                if (id >= 0) emit(e, id);
            }
        /* byte-level: a byte without a token is dropped */
    }
}

/* BPE_UTF8 (gemma4): spaces become "▁", the text is cut into runs of newlines and runs of
 * everything else; a run of newlines that is a token is emitted as it is. */
static void bpe_utf8_fragment(const Tokenizer *t, const unsigned char *src, size_t n, unsigned char *buf,
                              BpeScratch *sc, Emit *e) {
    size_t m = 0;
    for (size_t k = 0; k < n; k++) {
        if (src[k] == ' ') { memcpy(buf + m, SPACE_MARK, 3); m += 3; }
        else buf[m++] = src[k];
    }
    for (size_t a = 0; a < m;) {
        int nl = buf[a] == '\n';
        size_t b = a + 1;
        while (b < m && (buf[b] == '\n') == nl) b++;
        int id = nl ? vocab_lookup(t, buf + a, b - a) : -1;
        if (id >= 0) emit(e, id);
        else bpe_word(t, buf + a, b - a, sc, e);
        a = b;
    }
}

/* ===================================================================================== */
/* WordPiece (WPM)                                                                        */
/* ===================================================================================== */

static uint32_t map_cp(const uint32_t *pairs, uint32_t n, uint32_t cp) {
    uint32_t lo = 0, hi = n;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (pairs[2 * mid] < cp) lo = mid + 1; else hi = mid;
    }
    return lo < n && pairs[2 * lo] == cp ? pairs[2 * lo + 1] : cp;
}

/* BERT's CJK ideograph blocks (as HF tokenizers has them, U+2B920 included) */
static int is_cjk_ideograph(uint32_t cp) {
    return (cp >= 0x4E00 && cp <= 0x9FFF) || (cp >= 0x3400 && cp <= 0x4DBF) ||
           (cp >= 0x20000 && cp <= 0x2A6DF) || (cp >= 0x2A700 && cp <= 0x2B73F) ||
           (cp >= 0x2B740 && cp <= 0x2B81F) || (cp >= 0x2B920 && cp <= 0x2CEAF) ||
           (cp >= 0xF900 && cp <= 0xFAFF) || (cp >= 0x2F800 && cp <= 0x2FA1F);
}

static size_t put_utf8(unsigned char *o, uint32_t cp) {
    if (cp < 0x80) { o[0] = (unsigned char)cp; return 1; }
    if (cp < 0x800) { o[0] = (unsigned char)(0xC0 | (cp >> 6)); o[1] = (unsigned char)(0x80 | (cp & 0x3F)); return 2; }
    if (cp < 0x10000) {
        o[0] = (unsigned char)(0xE0 | (cp >> 12)); o[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (unsigned char)(0xF0 | (cp >> 18)); o[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F)); o[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}

/* One word w[0..n) (starting with "▁"): the longest token at each position; a word with a
 * position no token covers becomes one <unk>. */
static void wpm_word(const Tokenizer *t, const unsigned char *w, size_t n, Emit *e) {
    int mark = e->count;
    for (size_t i = 0; i < n;) {
        size_t j = i + (size_t)t->max_token_bytes < n ? i + (size_t)t->max_token_bytes : n;
        int id = -1;
        for (; j > i; j--)
            if ((id = vocab_lookup(t, w + i, j - i)) >= 0) break;
        if (id < 0) { e->count = mark; break; }
        emit(e, id);
        i = j;
    }
    if (e->count == mark && t->unk_id >= 0) emit(e, t->unk_id);
}

/* BERT's pre-processing of a fragment, then each word: whitespace separates words, control
 * characters and U+FFFD (also invalid bytes) are dropped, punctuation, ASCII symbols and CJK
 * ideographs are words of their own; optionally NFD without marks and lowercase.
 * buf holds at least 4 * n + 8 bytes (a character grows by at most half under the maps). */
static void wpm_fragment(const Tokenizer *t, const unsigned char *src, size_t n, unsigned char *buf, Emit *e) {
    memcpy(buf, SPACE_MARK, 3);
    size_t m = 3;                       /* buf[0..m): "▁" + the current word */
#define WPM_FLUSH() do { if (m > 3) wpm_word(t, buf, m, e); m = 3; } while (0)
    for (size_t i = 0; i < n;) {
        int len;
        if (utf8_check(src + i, n - i, &len) <= 0) { i++; continue; }
        uint32_t cp = decode_cp(src + i, len);
        i += (size_t)len;
        if (t->strip_accents) {        /* a Hangul syllable decomposes to its leading jamo first */
            if (cp >= 0xAC00 && cp <= 0xD7A3) cp = 0x1100 + (cp - 0xAC00) / 588;
            else cp = map_cp(tokenizer_unicode_nfd, tokenizer_unicode_n_nfd, cp);
        }
        unsigned f = tokenizer_unicode_flags(cp);
        if (f & U_SPACE) { WPM_FLUSH(); continue; }
        if (cp == 0 || cp == 0xFFFD || (f & U_OTHER)) continue;
        if (t->strip_accents && (f & U_MARK)) continue;
        uint32_t out = t->lowercase ? map_cp(tokenizer_unicode_lower, tokenizer_unicode_n_lower, cp) : cp;
        if ((f & U_PUNCT) || (cp < 0x7F && (f & U_SYMBOL)) || is_cjk_ideograph(cp)) {
            WPM_FLUSH();
            m += put_utf8(buf + m, out);
            WPM_FLUSH();
        } else {
            m += put_utf8(buf + m, out);
        }
    }
    WPM_FLUSH();
#undef WPM_FLUSH
}

/* ===================================================================================== */
/* Encode                                                                                 */
/* ===================================================================================== */

int tokenizer_encode(const Tokenizer *t, const char *text, size_t len, int add_bos,
                     int parse_special, int *out_ids, int max_ids) {
    if (!t || !t->vocab_hash || (!text && len > 0) || len > MAX_INPUT || max_ids < 0 ||
        (!out_ids && max_ids > 0))
        return TOKENIZER_E_ARG;
    const unsigned char *s = (const unsigned char *)text;
    Emit e = {out_ids, max_ids, 0, 0};
    if (add_bos && t->bos_id >= 0) emit(&e, t->bos_id);

    FragList f1 = {0}, f2 = {0};
    int ok = partition(t, s, len, parse_special, &f1, &f2);
    free(f2.a);
    if (!ok) { free(f1.a); return TOKENIZER_E_NOMEM; }

    /* scratch sized by the longest raw fragment */
    size_t longest = 0;
    for (int i = 0; i < f1.n; i++)
        if (f1.a[i].id < 0 && (size_t)f1.a[i].len > longest) longest = (size_t)f1.a[i].len;

    void *mem = NULL;
    if (t->model == TOKENIZER_SPM) {
        size_t nb = 3 * longest + 3;          /* "▁" prefix and every space -> 3 bytes */
        size_t nc = nb;                       /* characters <= bytes */
        size_t bytes = nb + 2 * nc * sizeof(SpmNode) + nc * sizeof(SpmSym) + 3 * nc * sizeof(Cand) +
                       2 * nc * sizeof(int32_t) + (nb + 1) * (sizeof(float) + 2 * sizeof(int32_t));
        mem = malloc(bytes + 64);
        if (!mem) { free(f1.a); return TOKENIZER_E_NOMEM; }
        SpmScratch w;
        char *p = mem;
        w.best = (float *)(void *)p; p += (nb + 1) * sizeof(float);
        w.nodes = (SpmNode *)(void *)p; p += 2 * nc * sizeof(SpmNode);
        w.syms = (SpmSym *)(void *)p; p += nc * sizeof(SpmSym);
        w.heap = (Cand *)(void *)p; p += 3 * nc * sizeof(Cand);
        w.stack = (int32_t *)(void *)p; p += 2 * nc * sizeof(int32_t);
        w.from = (int32_t *)(void *)p; p += (nb + 1) * sizeof(int32_t);
        w.best_id = (int32_t *)(void *)p; p += (nb + 1) * sizeof(int32_t);
        unsigned char *buf = (unsigned char *)p;
        int prev_special = 1;     /* llama.cpp: the space prefix goes at the start and after specials */
        for (int i = 0; i < f1.n; i++) {
            if (f1.a[i].id >= 0) { emit(&e, f1.a[i].id); prev_special = 1; continue; }
            size_t n = 0;
            if (t->add_space_prefix && prev_special) { memcpy(buf, SPACE_MARK, 3); n = 3; }
            const unsigned char *src = s + f1.a[i].start;
            for (int32_t k = 0; k < f1.a[i].len; k++) {
                if (src[k] == ' ') { memcpy(buf + n, SPACE_MARK, 3); n += 3; }
                else buf[n++] = src[k];
            }
            e.last_unk = 0;
            if (t->spm_viterbi) spm_viterbi(t, buf, n, &w, &e);
            else spm_merge(t, buf, n, &w, &e);
            prev_special = 0;
        }
    } else if (t->model == TOKENIZER_WPM) {
        mem = malloc(4 * longest + 8);
        if (!mem) { free(f1.a); return TOKENIZER_E_NOMEM; }
        for (int i = 0; i < f1.n; i++) {
            if (f1.a[i].id >= 0) emit(&e, f1.a[i].id);
            else wpm_fragment(t, s + f1.a[i].start, (size_t)f1.a[i].len, mem, &e);
        }
    } else if (t->model == TOKENIZER_BPE_UTF8) {
        size_t nb = 3 * longest + 1;          /* every space -> "▁" */
        size_t bytes = nb * sizeof(BpeSym) + 3 * nb * sizeof(Cand) + nb;
        mem = malloc(bytes);
        if (!mem) { free(f1.a); return TOKENIZER_E_NOMEM; }
        BpeScratch sc;
        char *p = mem;
        sc.syms = (BpeSym *)(void *)p; p += nb * sizeof(BpeSym);
        sc.heap = (Cand *)(void *)p; p += 3 * nb * sizeof(Cand);
        sc.chars = NULL;
        sc.bnd = NULL;
        for (int i = 0; i < f1.n; i++) {
            if (f1.a[i].id >= 0) emit(&e, f1.a[i].id);
            else bpe_utf8_fragment(t, s + f1.a[i].start, (size_t)f1.a[i].len, (unsigned char *)p, &sc, &e);
        }
    } else {
        size_t nb = longest + 1;
        size_t bytes = nb * sizeof(Char) + nb * sizeof(BpeSym) + 3 * nb * sizeof(Cand) + nb;
        mem = malloc(bytes);
        if (!mem) { free(f1.a); return TOKENIZER_E_NOMEM; }
        BpeScratch sc;
        char *p = mem;
        sc.chars = (Char *)(void *)p; p += nb * sizeof(Char);
        sc.syms = (BpeSym *)(void *)p; p += nb * sizeof(BpeSym);
        sc.heap = (Cand *)(void *)p; p += 3 * nb * sizeof(Cand);
        sc.bnd = (uint8_t *)p;
        int chain = t->pre == TOKENIZER_PRE_DEEPSEEK_LLM || t->pre == TOKENIZER_PRE_DEEPSEEK_CODER ||
                    t->pre == TOKENIZER_PRE_FALCON;
        for (int i = 0; i < f1.n; i++) {
            if (f1.a[i].id >= 0) { emit(&e, f1.a[i].id); continue; }
            const unsigned char *src = s + f1.a[i].start;
            size_t n = (size_t)f1.a[i].len;
            int nc = split_chars(src, n, sc.chars);
            if (chain) chain_split(t->pre, sc.chars, nc, sc.bnd);
            for (int c = 0; c < nc;) {
                int end;
                if (chain) { end = c + 1; while (!sc.bnd[end]) end++; }
                else if (t->pre == TOKENIZER_PRE_GPT2) end = scan_gpt2(sc.chars, c, nc);
                else if (t->pre == TOKENIZER_PRE_QWEN2) end = scan_llama3(sc.chars, c, nc, 1, 0);
                else if (t->pre == TOKENIZER_PRE_QWEN35) end = scan_llama3(sc.chars, c, nc, 1, 1);
                else if (t->pre == TOKENIZER_PRE_STARCODER) {
                    /* digits are split off first: the GPT-2 regex sees the text between them */
                    if (is_n(&sc.chars[c])) end = c + 1;
                    else {
                        int bound = c + 1;
                        while (bound < nc && !is_n(&sc.chars[bound])) bound++;
                        end = scan_gpt2(sc.chars, c, bound);
                    }
                } else end = scan_llama3(sc.chars, c, nc, 3, 0);
                size_t b0 = sc.chars[c].off, b1 = end < nc ? sc.chars[end].off : n;
                bpe_word(t, src + b0, b1 - b0, &sc, &e);
                c = end;
            }
        }
    }
    free(mem);
    free(f1.a);
    return e.count <= max_ids ? e.count : -e.count;
}

/* ===================================================================================== */
/* Decode                                                                                 */
/* ===================================================================================== */

const char *tokenizer_piece(const Tokenizer *t, int id, size_t *len) {
    if (!t || id < 0 || id >= t->n_vocab) { if (len) *len = 0; return NULL; }
    if (len) *len = t->piece_offs[id + 1] - t->piece_offs[id];
    return (const char *)(t->piece_pool + t->piece_offs[id]);
}

const char *tokenizer_token_text(const Tokenizer *t, int id, size_t *len) {
    if (!t || id < 0 || id >= t->n_vocab) { if (len) *len = 0; return NULL; }
    if (len) *len = t->text_offs[id + 1] - t->text_offs[id];
    return (const char *)(t->text_pool + t->text_offs[id]);
}

int tokenizer_token_type(const Tokenizer *t, int id) {
    if (!t || id < 0 || id >= t->n_vocab) return 0;
    return t->types[id] & TYPE_MASK;
}

int tokenizer_is_eog(const Tokenizer *t, int id) {
    if (!t || id < 0) return 0;
    for (int i = 0; i < t->n_eog; i++)
        if ((int)t->eog_ids[i] == id) return 1;
    return 0;
}

int tokenizer_find_token(const Tokenizer *t, const char *text, size_t len) {
    if (!t || !text) return -1;
    for (int i = 0; i < t->n_vocab; i++) {
        size_t n = t->text_offs[i + 1] - t->text_offs[i];
        if (n == len && memcmp(t->text_pool + t->text_offs[i], text, len) == 0) return i;
    }
    return -1;
}

/* The bytes token id prints as under flags, after the leading-space rule; updates *at_start. */
static const unsigned char *printed_piece(const Tokenizer *t, int id, int flags, int *at_start, size_t *len) {
    *len = 0;
    if (id < 0 || id >= t->n_vocab) return NULL;
    unsigned ty = t->types[id] & TYPE_MASK;
    if ((ty == TOKEN_CONTROL || ty == TOKEN_UNKNOWN) && !(flags & TOKENIZER_DECODE_SPECIAL)) return NULL;
    const unsigned char *p = t->piece_pool + t->piece_offs[id];
    size_t n = t->piece_offs[id + 1] - t->piece_offs[id];
    if (n == 0) return NULL;
    if (*at_start && (flags & TOKENIZER_DECODE_STRIP_SPACE) && t->add_space_prefix && p[0] == ' ') { p++; n--; }
    *at_start = 0;
    *len = n;
    return p;
}

size_t tokenizer_decode(const Tokenizer *t, const int *ids, int n_ids, int flags, char *out, size_t cap) {
    size_t total = 0;
    int at_start = 1;
    if (!t || (!ids && n_ids > 0)) return 0;
    for (int i = 0; i < n_ids; i++) {
        size_t n;
        const unsigned char *p = printed_piece(t, ids[i], flags, &at_start, &n);
        for (size_t k = 0; k < n; k++, total++)
            if (total + 1 < cap) out[total] = (char)p[k];
    }
    if (cap > 0) out[total < cap ? total : cap - 1] = '\0';
    return total;
}

/* ------------------------------------------------------------------------------------- */
/* Streaming detokenizer                                                                   */
/* ------------------------------------------------------------------------------------- */

void tokenizer_stream_init(TokenizerStream *s, const Tokenizer *t, int flags) {
    memset(s, 0, sizeof *s);
    s->tok = t;
    s->flags = flags;
    s->at_start = 1;
}

size_t tokenizer_stream_bound(const Tokenizer *t) {
    return 3 * ((size_t)t->max_piece_len + 4) + 1;
}

/* Writes the ill-formed bytes p[0..n) as one U+FFFD (or raw). */
static size_t put_invalid(const TokenizerStream *s, const unsigned char *p, int n, char *out) {
    if (s->flags & TOKENIZER_DECODE_RAW) {
        memcpy(out, p, (size_t)n);
        return (size_t)n;
    }
    out[0] = (char)0xEF; out[1] = (char)0xBF; out[2] = (char)0xBD;
    return 3;
}

size_t tokenizer_stream_push(TokenizerStream *s, int id, char *out) {
    size_t n, w = 0;
    const unsigned char *p = printed_piece(s->tok, id, s->flags, &s->at_start, &n);
    for (size_t k = 0; k < n; k++) {
        s->pending[s->n_pending++] = p[k];
        for (;;) {                         /* resolve what the pending bytes have become */
            int len, r = utf8_check(s->pending, (size_t)s->n_pending, &len);
            if (r == 0) break;             /* still incomplete: wait for the next byte */
            if (r > 0) {                   /* a whole character */
                memcpy(out + w, s->pending, (size_t)r);
                w += (size_t)r;
            } else {                       /* ill-formed: U+FFFD (or raw) for its maximal subpart */
                w += put_invalid(s, s->pending, len, out + w);
            }
            memmove(s->pending, s->pending + len, (size_t)(s->n_pending - len));
            s->n_pending -= len;
            if (s->n_pending == 0) break;
        }
    }
    return w;
}

size_t tokenizer_stream_flush(TokenizerStream *s, char *out) {
    size_t w = 0;
    if (s->n_pending > 0) w = put_invalid(s, s->pending, s->n_pending, out);
    s->n_pending = 0;
    return w;
}
