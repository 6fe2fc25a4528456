/* Native kernel: keyed HMAC-SHA-256 over Arrow variable-width (string/binary) buffers.
 *
 * Why native: the `hash`, `tokenize`, `noise`, `date_shift` and `randomized_response` masks all
 * need one HMAC per row. Python's hmac costs ~1 us per row; here each short message costs two
 * SHA-256 compressions (OpenSSL, SHA-NI on modern x86) because the inner and outer states after
 * absorbing K^ipad / K^opad are computed once and copied per row.
 *
 * The caller passes the Arrow buffers (offsets int32 or int64, data, optional validity bitmap)
 * plus the array's logical offset and length, so sliced arrays cost no copy. Work runs without
 * the GIL, split over `threads` pthreads when there are enough rows to pay for them. Offsets are
 * checked against the data buffer: a malformed array raises ValueError instead of reading out of
 * bounds. Null rows are not hashed (hex rows get prefix + zeros, digests zeros).
 *
 *   hmac_hex(offsets, data, validity, offset, length, offset_width, key, prefix, threads) -> bytes
 *       n * (len(prefix) + 32) bytes: prefix + first 32 lowercase hex chars of each HMAC.
 *   hmac_digest(offsets, data, validity, offset, length, offset_width, key, threads) -> bytes
 *       n * 32 raw digest bytes (derived randomness). Null rows are zero-filled.
 *   hmac_digest_joined(offsets, data, offset, width, offsets2, data2, offset2, width2, validity,
 *                      length, sep, key, threads) -> bytes
 *       n * 32 raw digest bytes of HMAC(key, a[i] || sep || b[i]) for two string arrays of the
 *       same length, without building the joined strings (what binary_join_element_wise would
 *       copy). `validity` (offset 0, or None) marks the rows to hash; the others are zero-filled.
 *   float_text(values, offset, length, is_float32) -> (offsets int32 bytes, data bytes)
 *       DuckDB's CAST(DOUBLE AS VARCHAR) text (Python repr, "-nan" for negative NaN), so both
 *       engines hash the same canonical text for floating-point values. Also without the GIL.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <float.h>
#include <math.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MIN_ROWS_PER_THREAD 8192
#define MAX_THREADS 64

typedef struct {
    SHA256_CTX inner, outer; /* states after absorbing K^ipad, K^opad */
} hmac_key_t;

typedef struct {
    const hmac_key_t *key;
    const uint8_t *offsets; /* raw offsets buffer */
    int offset_width;       /* 4 or 8 */
    const uint8_t *data;
    Py_ssize_t data_len;
    const uint8_t *validity; /* NULL: all valid */
    Py_ssize_t offset;       /* array.offset */
    Py_ssize_t begin, end;   /* rows [begin, end) of this worker */
    uint8_t *out;
    Py_ssize_t width;        /* output bytes per row */
    const char *prefix;
    Py_ssize_t prefix_len;
    int hex;
    int error;               /* set when offsets are out of bounds */
    /* hmac_digest_joined: the second array and the separator (offsets2 NULL otherwise) */
    const uint8_t *offsets2;
    int offset_width2;
    const uint8_t *data2;
    Py_ssize_t data_len2;
    Py_ssize_t offset2;
    const uint8_t *sep;
    Py_ssize_t sep_len;
} job_t;

static const char HEX[] = "0123456789abcdef";

static void key_init(hmac_key_t *k, const uint8_t *key, size_t key_len) {
    uint8_t block[SHA256_CBLOCK], pad[SHA256_CBLOCK];
    memset(block, 0, sizeof block);
    if (key_len > SHA256_CBLOCK) {
        SHA256(key, key_len, block);
    } else {
        memcpy(block, key, key_len);
    }
    for (int i = 0; i < SHA256_CBLOCK; i++) pad[i] = block[i] ^ 0x36;
    SHA256_Init(&k->inner);
    SHA256_Update(&k->inner, pad, SHA256_CBLOCK);
    for (int i = 0; i < SHA256_CBLOCK; i++) pad[i] = block[i] ^ 0x5c;
    SHA256_Init(&k->outer);
    SHA256_Update(&k->outer, pad, SHA256_CBLOCK);
    OPENSSL_cleanse(block, sizeof block);
    OPENSSL_cleanse(pad, sizeof pad);
}

static inline void store_be32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24); p[1] = (uint8_t)(v >> 16); p[2] = (uint8_t)(v >> 8); p[3] = (uint8_t)v;
}

static inline void state_digest(const SHA256_CTX *c, uint8_t *out) {
    for (int i = 0; i < 8; i++) store_be32(out + 4 * i, c->h[i]);
}

/* HMAC of one message. Short messages (<= 55 bytes, the common case for the values we mask)
 * skip SHA256_Update/Final bookkeeping: the single padded block is built here and compressed
 * with SHA256_Transform from the precomputed state, then the outer block likewise. */
static inline void hmac_one(const hmac_key_t *k, const uint8_t *msg, size_t len, uint8_t *digest) {
    SHA256_CTX ctx;
    if (len <= 55) {
        uint8_t block[SHA256_CBLOCK];
        uint64_t bits = (uint64_t)(SHA256_CBLOCK + len) * 8;
        memcpy(block, msg, len);
        block[len] = 0x80;
        memset(block + len + 1, 0, 55 - len);
        for (int i = 0; i < 8; i++) block[56 + i] = (uint8_t)(bits >> (56 - 8 * i));
        ctx = k->inner;
        SHA256_Transform(&ctx, block);
        state_digest(&ctx, block); /* inner digest becomes the outer message */
        block[32] = 0x80;
        memset(block + 33, 0, 23);
        bits = (uint64_t)(SHA256_CBLOCK + SHA256_DIGEST_LENGTH) * 8;
        for (int i = 0; i < 8; i++) block[56 + i] = (uint8_t)(bits >> (56 - 8 * i));
        ctx = k->outer;
        SHA256_Transform(&ctx, block);
        state_digest(&ctx, digest);
        return;
    }
    ctx = k->inner;
    SHA256_Update(&ctx, msg, len);
    SHA256_Final(digest, &ctx);
    ctx = k->outer;
    SHA256_Update(&ctx, digest, SHA256_DIGEST_LENGTH);
    SHA256_Final(digest, &ctx);
}

/* HMAC of a || sep || b, as hmac_one of the joined message would give. */
static inline void hmac_three(const hmac_key_t *k, const uint8_t *a, size_t alen, const uint8_t *sep,
                              size_t slen, const uint8_t *b, size_t blen, uint8_t *digest) {
    size_t len = alen + slen + blen;
    if (len <= 55) {
        uint8_t msg[56];
        memcpy(msg, a, alen);
        memcpy(msg + alen, sep, slen);
        memcpy(msg + alen + slen, b, blen);
        hmac_one(k, msg, len, digest);
        return;
    }
    SHA256_CTX ctx = k->inner;
    SHA256_Update(&ctx, a, alen);
    SHA256_Update(&ctx, sep, slen);
    SHA256_Update(&ctx, b, blen);
    SHA256_Final(digest, &ctx);
    ctx = k->outer;
    SHA256_Update(&ctx, digest, SHA256_DIGEST_LENGTH);
    SHA256_Final(digest, &ctx);
}

static inline int64_t load_offset_of(const uint8_t *offsets, int width, Py_ssize_t i) {
    if (width == 4) {
        int32_t v;
        memcpy(&v, offsets + 4 * i, 4);
        return v;
    }
    int64_t v;
    memcpy(&v, offsets + 8 * i, 8);
    return v;
}

static void *run_joined_job(job_t *j) {
    for (Py_ssize_t i = j->begin; i < j->end; i++) {
        uint8_t *out = j->out + i * SHA256_DIGEST_LENGTH;
        int valid = j->validity == NULL || ((j->validity[i >> 3] >> (i & 7)) & 1);
        if (!valid) {
            memset(out, 0, SHA256_DIGEST_LENGTH);
            continue;
        }
        int64_t a0 = load_offset_of(j->offsets, j->offset_width, j->offset + i);
        int64_t a1 = load_offset_of(j->offsets, j->offset_width, j->offset + i + 1);
        int64_t b0 = load_offset_of(j->offsets2, j->offset_width2, j->offset2 + i);
        int64_t b1 = load_offset_of(j->offsets2, j->offset_width2, j->offset2 + i + 1);
        if (a0 < 0 || a1 < a0 || a1 > j->data_len || b0 < 0 || b1 < b0 || b1 > j->data_len2) {
            j->error = 1;
            return NULL;
        }
        hmac_three(j->key, j->data + a0, (size_t)(a1 - a0), j->sep, (size_t)j->sep_len, j->data2 + b0,
                   (size_t)(b1 - b0), out);
    }
    return NULL;
}

static inline int64_t load_offset(const job_t *j, Py_ssize_t i) {
    return load_offset_of(j->offsets, j->offset_width, i);
}

static void *run_job(void *arg) {
    job_t *j = (job_t *)arg;
    if (j->offsets2 != NULL) return run_joined_job(j);
    uint8_t digest[SHA256_DIGEST_LENGTH];
    int64_t start = load_offset(j, j->offset + j->begin);
    for (Py_ssize_t i = j->begin; i < j->end; i++) {
        int64_t stop = load_offset(j, j->offset + i + 1);
        uint8_t *out = j->out + i * j->width;
        Py_ssize_t bit = j->offset + i;
        int valid = j->validity == NULL || ((j->validity[bit >> 3] >> (bit & 7)) & 1);
        if (start < 0 || stop < start || stop > j->data_len) {
            j->error = 1; /* malformed array (Arrow requires sane offsets even under nulls) */
            return NULL;
        }
        if (!valid) {
            memset(out, j->hex ? '0' : 0, j->width);
            if (j->hex) memcpy(out, j->prefix, j->prefix_len);
            start = stop;
            continue;
        }
        hmac_one(j->key, j->data + start, (size_t)(stop - start), digest);
        if (j->hex) {
            memcpy(out, j->prefix, j->prefix_len);
            uint8_t *h = out + j->prefix_len;
            for (int b = 0; b < 16; b++) {
                h[2 * b] = HEX[digest[b] >> 4];
                h[2 * b + 1] = HEX[digest[b] & 15];
            }
        } else {
            memcpy(out, digest, SHA256_DIGEST_LENGTH);
        }
        start = stop;
    }
    OPENSSL_cleanse(digest, sizeof digest);
    return NULL;
}

/* Split rows over threads; the calling thread takes the first share. Returns 0 on success. */
static int run_parallel(job_t *proto, Py_ssize_t n, int threads) {
    if (threads < 1) threads = 1;
    if (threads > MAX_THREADS) threads = MAX_THREADS;
    if (n < (Py_ssize_t)MIN_ROWS_PER_THREAD * 2) threads = 1;
    else if (n / threads < MIN_ROWS_PER_THREAD) threads = (int)(n / MIN_ROWS_PER_THREAD);
    job_t jobs[MAX_THREADS];
    pthread_t tids[MAX_THREADS];
    int started[MAX_THREADS] = {0};
    for (int t = 0; t < threads; t++) {
        jobs[t] = *proto;
        jobs[t].begin = n * t / threads;
        jobs[t].end = n * (t + 1) / threads;
    }
    for (int t = 1; t < threads; t++)
        started[t] = pthread_create(&tids[t], NULL, run_job, &jobs[t]) == 0;
    run_job(&jobs[0]);
    int error = jobs[0].error;
    for (int t = 1; t < threads; t++) {
        if (started[t]) pthread_join(tids[t], NULL);
        else run_job(&jobs[t]); /* could not start a thread: do its share here */
        error |= jobs[t].error;
    }
    return error;
}

typedef struct {
    Py_buffer offsets, data, validity, key;
    int has_data, has_validity;
} buffers_t;

static void release(buffers_t *b) {
    PyBuffer_Release(&b->offsets);
    if (b->has_data) PyBuffer_Release(&b->data);
    if (b->has_validity) PyBuffer_Release(&b->validity);
    PyBuffer_Release(&b->key);
}

static int get_buffers(buffers_t *b, PyObject *offsets, PyObject *data, PyObject *validity,
                       Py_ssize_t offset, Py_ssize_t length, int width, PyObject *key) {
    memset(b, 0, sizeof *b);
    if (width != 4 && width != 8) {
        PyErr_SetString(PyExc_ValueError, "offset_width must be 4 or 8");
        return -1;
    }
    if (offset < 0 || length < 0) {
        PyErr_SetString(PyExc_ValueError, "offset and length must be non-negative");
        return -1;
    }
    if (PyObject_GetBuffer(key, &b->key, PyBUF_SIMPLE) < 0) return -1;
    if (PyObject_GetBuffer(offsets, &b->offsets, PyBUF_SIMPLE) < 0) {
        PyBuffer_Release(&b->key);
        return -1;
    }
    if (data != Py_None) {
        if (PyObject_GetBuffer(data, &b->data, PyBUF_SIMPLE) < 0) goto fail;
        b->has_data = 1;
    }
    if (validity != Py_None) {
        if (PyObject_GetBuffer(validity, &b->validity, PyBUF_SIMPLE) < 0) goto fail;
        b->has_validity = 1;
        if (b->validity.len * 8 < offset + length) {
            PyErr_SetString(PyExc_ValueError, "validity bitmap is too short");
            goto fail;
        }
    }
    if (b->offsets.len < (offset + length + 1) * width) {
        PyErr_SetString(PyExc_ValueError, "offsets buffer is too short");
        goto fail;
    }
    if (b->key.len < 1) {
        PyErr_SetString(PyExc_ValueError, "empty key");
        goto fail;
    }
    return 0;
fail:
    release(b);
    return -1;
}

static PyObject *compute(PyObject *args, PyObject *kwargs, int hex) {
    static char *kw_hex[] = {"offsets", "data", "validity", "offset", "length", "offset_width",
                             "key", "prefix", "threads", NULL};
    static char *kw_dig[] = {"offsets", "data", "validity", "offset", "length", "offset_width",
                             "key", "threads", NULL};
    PyObject *offsets, *data, *validity, *key;
    Py_ssize_t offset, length, prefix_len = 0;
    const char *prefix = "";
    int width, threads = 1;
    int ok = hex ? PyArg_ParseTupleAndKeywords(args, kwargs, "OOOnniOs#|i", kw_hex, &offsets, &data,
                                               &validity, &offset, &length, &width, &key, &prefix,
                                               &prefix_len, &threads)
                 : PyArg_ParseTupleAndKeywords(args, kwargs, "OOOnniO|i", kw_dig, &offsets, &data,
                                               &validity, &offset, &length, &width, &key, &threads);
    if (!ok) return NULL;
    buffers_t b;
    if (get_buffers(&b, offsets, data, validity, offset, length, width, key) < 0) return NULL;
    Py_ssize_t row_width = hex ? prefix_len + 32 : SHA256_DIGEST_LENGTH;
    if (length > 0 && row_width > PY_SSIZE_T_MAX / length) {
        release(&b);
        return PyErr_NoMemory();
    }
    PyObject *result = PyBytes_FromStringAndSize(NULL, length * row_width);
    if (result == NULL) {
        release(&b);
        return NULL;
    }
    hmac_key_t k;
    key_init(&k, b.key.buf, (size_t)b.key.len);
    job_t proto = {
        .key = &k, .offsets = b.offsets.buf, .offset_width = width,
        .data = b.has_data ? b.data.buf : (const uint8_t *)"", .data_len = b.has_data ? b.data.len : 0,
        .validity = b.has_validity ? b.validity.buf : NULL, .offset = offset,
        .out = (uint8_t *)PyBytes_AS_STRING(result), .width = row_width, .prefix = prefix,
        .prefix_len = prefix_len, .hex = hex,
    };
    int error;
    Py_BEGIN_ALLOW_THREADS
    error = run_parallel(&proto, length, threads);
    Py_END_ALLOW_THREADS
    OPENSSL_cleanse(&k, sizeof k);
    release(&b);
    if (error) {
        Py_DECREF(result);
        PyErr_SetString(PyExc_ValueError, "array offsets point outside its data buffer");
        return NULL;
    }
    return result;
}

static PyObject *py_hmac_hex(PyObject *self, PyObject *args, PyObject *kwargs) {
    return compute(args, kwargs, 1);
}

static PyObject *py_hmac_digest(PyObject *self, PyObject *args, PyObject *kwargs) {
    return compute(args, kwargs, 0);
}

static PyObject *py_hmac_digest_joined(PyObject *self, PyObject *args, PyObject *kwargs) {
    static char *kw[] = {"offsets", "data", "offset", "width", "offsets2", "data2", "offset2", "width2",
                         "validity", "length", "sep", "key", "threads", NULL};
    PyObject *offsets, *data, *offsets2, *data2, *validity, *key;
    Py_ssize_t offset, offset2, length, sep_len;
    const char *sep;
    int width, width2, threads = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOniOOniOny#O|i", kw, &offsets, &data, &offset, &width,
                                     &offsets2, &data2, &offset2, &width2, &validity, &length, &sep,
                                     &sep_len, &key, &threads))
        return NULL;
    buffers_t a, b;
    /* a carries the key and the validity (at offset 0); b only its offsets and data */
    if (get_buffers(&a, offsets, data, Py_None, offset, length, width, key) < 0) return NULL;
    if (get_buffers(&b, offsets2, data2, Py_None, offset2, length, width2, key) < 0) {
        release(&a);
        return NULL;
    }
    Py_buffer v;
    int has_validity = 0;
    if (validity != Py_None) {
        if (PyObject_GetBuffer(validity, &v, PyBUF_SIMPLE) < 0) goto fail;
        has_validity = 1;
        if (v.len * 8 < length) {
            PyErr_SetString(PyExc_ValueError, "validity bitmap is too short");
            goto fail;
        }
    }
    if (length > PY_SSIZE_T_MAX / SHA256_DIGEST_LENGTH) {
        PyErr_NoMemory();
        goto fail;
    }
    PyObject *result = PyBytes_FromStringAndSize(NULL, length * SHA256_DIGEST_LENGTH);
    if (result == NULL) goto fail;
    hmac_key_t k;
    key_init(&k, a.key.buf, (size_t)a.key.len);
    job_t proto = {
        .key = &k, .offsets = a.offsets.buf, .offset_width = width,
        .data = a.has_data ? a.data.buf : (const uint8_t *)"", .data_len = a.has_data ? a.data.len : 0,
        .validity = has_validity ? v.buf : NULL, .offset = offset,
        .out = (uint8_t *)PyBytes_AS_STRING(result), .width = SHA256_DIGEST_LENGTH,
        .offsets2 = b.offsets.buf, .offset_width2 = width2,
        .data2 = b.has_data ? b.data.buf : (const uint8_t *)"", .data_len2 = b.has_data ? b.data.len : 0,
        .offset2 = offset2, .sep = (const uint8_t *)sep, .sep_len = sep_len,
    };
    int error;
    Py_BEGIN_ALLOW_THREADS
    error = run_parallel(&proto, length, threads);
    Py_END_ALLOW_THREADS
    OPENSSL_cleanse(&k, sizeof k);
    if (has_validity) PyBuffer_Release(&v);
    release(&a);
    release(&b);
    if (error) {
        Py_DECREF(result);
        PyErr_SetString(PyExc_ValueError, "array offsets point outside its data buffer");
        return NULL;
    }
    return result;
fail:
    if (has_validity) PyBuffer_Release(&v);
    release(&a);
    release(&b);
    return NULL;
}

/* ---- float_text: shortest round-trip text of a double, as Python's repr prints it ----------
 *
 * PyOS_double_to_string needs the GIL (it allocates with PyMem_Malloc, and dtoa keeps a
 * freelist without a lock); holding the GIL for every value stalled the other mask threads and
 * cost ~290 ns a value. Here the common cases are done in pure C without the GIL, exactly:
 * the digits are the shortest decimal that reads back as the same double, the closest to it
 * when several are that short (what repr, DuckDB and Arrow print), in repr's layout.
 *
 * fast15 (every value with at most 15 significant digits between 1e-8 and 1e37, e.g. all money
 * amounts): m = round(x * 10^p) as a 15-digit integer. If some decimal of <= 15 digits reads
 * back as x, it is within 2^-53 x of x, closer than half a step of 15-digit decimals, so m is
 * it padded with zeros; and m / 10^p (two exact doubles, one correctly rounded division) == x
 * checks that exactly. Stripping m's trailing zeros gives the shortest digits.
 * wide16_17: values that need 16 or 17 digits, the same way in long double, declining when
 * its rounding error could change the answer.
 * The rest (subnormals, |x| < 1e-12 or > 1e43 with 16+ digits, powers of two with 16+
 * digits, values too close to call) goes to PyOS_double_to_string in a second pass that takes
 * the GIL back. tests/mask/test_hmac.py checks every path against repr. */

static const double POW10[23] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,  1e8,  1e9,  1e10, 1e11,
                                 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

/* m (k digits, k <= 17) as text, trailing zeros dropped; returns the digit count. */
static int put_digits(uint64_t m, int k, char *digits) {
    for (int i = k - 1; i >= 0; i--) { digits[i] = (char)('0' + m % 10); m /= 10; }
    int n = k;
    while (n > 1 && digits[n - 1] == '0') n--;
    return n;
}

/* <= 15 digits, exactly (see above). 1: found; 0: x needs 16 or 17 digits; -1: out of range. */
static int fast15(double x, int e10, char *digits, int *n, int *decpt) {
    int p = 14 - e10;
    for (int tries = 0; tries < 3; tries++) {
        if (p > 22 || p < -22) return -1;
        double s = p >= 0 ? x * POW10[p] : x / POW10[-p];
        if (s < 1e14) { p++; continue; }
        double r = nearbyint(s);
        if (r >= 1e15) { p--; continue; }
        uint64_t m = (uint64_t)r;
        double back = p >= 0 ? (double)m / POW10[p] : (double)m * POW10[-p];
        if (back != x) return 0;
        *n = put_digits(m, 15, digits);
        *decpt = 15 - p;
        return 1;
    }
    return -1;
}

#if LDBL_MANT_DIG >= 64
/* 16 or 17 digits for a normal x that is not a power of two and needs more than 15, with
 * x87 long double (64-bit mantissa; 10^p is exact up to 10^27). X = x * 10^p is within 2^-8 of
 * its true value, so its nearest integer N is the correctly rounded k-digit decimal unless X
 * is within 0.01 of a half; N reads back as x iff |N - X| <= half an ulp of x (scaled by 10^p),
 * decided here unless within 0.01 of that bound. The nearest 17-digit decimal always reads
 * back (half a 17-digit step < half an ulp). 1: found; 0: undecided, use the slow path. */
static const long double POW10L[28] = {
    1e0L,  1e1L,  1e2L,  1e3L,  1e4L,  1e5L,  1e6L,  1e7L,  1e8L,  1e9L,  1e10L, 1e11L, 1e12L, 1e13L,
    1e14L, 1e15L, 1e16L, 1e17L, 1e18L, 1e19L, 1e20L, 1e21L, 1e22L, 1e23L, 1e24L, 1e25L, 1e26L, 1e27L};

static int wide16_17(double x, int e2, int e10, char *digits, int *n, int *decpt) {
    for (int k = 16; k <= 17; k++) {
        int p = (k - 1) - e10;
        long double X = 0;
        int ok = 0;
        for (int tries = 0; tries < 3; tries++) {
            if (p > 27 || p < -27) return 0;
            X = p >= 0 ? (long double)x * POW10L[p] : (long double)x / POW10L[-p];
            if (X < POW10L[k - 1]) { p++; continue; }
            if (X >= POW10L[k]) { p--; continue; }
            ok = 1;
            break;
        }
        if (!ok) return 0;
        long double fl = floorl(X), frac = X - fl;
        if (fabsl(frac - 0.5L) < 0.01L) return 0;
        long double N = frac > 0.5L ? fl + 1 : fl;
        if (N >= POW10L[k]) return 0;
        if (k == 16) {
            long double half = p >= 0 ? ldexpl(POW10L[p], e2 - 54) : ldexpl(1.0L, e2 - 54) / POW10L[-p];
            long double dist = fabsl(N - X);
            if (fabsl(dist - half) < 0.01L) return 0;
            if (dist > half) continue; /* the 16-digit decimal does not read back: 17 digits */
        }
        *n = put_digits((uint64_t)N, k, digits);
        *decpt = k - p;
        return 1;
    }
    return 0;
}
#endif

/* Shortest digits (no leading/trailing zeros) and decpt (x = 0.DIGITS * 10^decpt) of x > 0;
 * 0 when the fast paths cannot decide (the caller asks Python's repr). */
static int shortest(double x, char *digits, int *decpt) {
    if (x < DBL_MIN) return 0; /* subnormal: its relative gap is wider, the argument fails */
    int e2, n = 0;
    frexp(x, &e2);
    int e10 = (int)floor((e2 - 1) * 0.30102999566398120); /* log10(x) or one less */
    int r = fast15(x, e10, digits, &n, decpt);
    if (r == 1) return n;
#if LDBL_MANT_DIG >= 64
    uint64_t bits;
    memcpy(&bits, &x, 8);
    int pow2 = (bits & 0xFFFFFFFFFFFFFull) == 0; /* its gap below is half the gap above */
    if (r == 0 && !pow2 && wide16_17(x, e2, e10, digits, &n, decpt)) return n;
#endif
    return 0;
}

/* repr's layout: fixed notation for 1e-4 <= |x| < 1e16 ("12.5", "3.0", "0.0001"), else
 * d[.ddd]e±XX with at least two exponent digits. Returns the length written (<= 24), or -1
 * when the digits are left to Python's repr. */
static int format_double(double x, char *out) {
    char *o = out;
    if (isnan(x)) {
        const char *s = signbit(x) ? "-nan" : "nan";
        size_t l = strlen(s);
        memcpy(out, s, l);
        return (int)l;
    }
    if (signbit(x)) *o++ = '-';
    double a = fabs(x);
    if (isinf(a)) { memcpy(o, "inf", 3); return (int)(o - out) + 3; }
    if (a == 0.0) { memcpy(o, "0.0", 3); return (int)(o - out) + 3; }
    char d[20];
    int decpt;
    int n = shortest(a, d, &decpt);
    if (n == 0) return -1;
    if (decpt <= -4 || decpt > 16) {
        *o++ = d[0];
        if (n > 1) {
            *o++ = '.';
            memcpy(o, d + 1, (size_t)(n - 1));
            o += n - 1;
        }
        int e = decpt - 1;
        *o++ = 'e';
        *o++ = e < 0 ? '-' : '+';
        if (e < 0) e = -e;
        if (e >= 100) *o++ = (char)('0' + e / 100);
        *o++ = (char)('0' + (e / 10) % 10);
        *o++ = (char)('0' + e % 10);
    } else if (decpt <= 0) {
        *o++ = '0';
        *o++ = '.';
        for (int i = 0; i < -decpt; i++) *o++ = '0';
        memcpy(o, d, (size_t)n);
        o += n;
    } else if (decpt >= n) {
        memcpy(o, d, (size_t)n);
        o += n;
        for (int i = n; i < decpt; i++) *o++ = '0';
        *o++ = '.';
        *o++ = '0';
    } else {
        memcpy(o, d, (size_t)decpt);
        o += decpt;
        *o++ = '.';
        memcpy(o, d + decpt, (size_t)(n - decpt));
        o += n - decpt;
    }
    return (int)(o - out);
}

static PyObject *py_float_text(PyObject *self, PyObject *args) {
    PyObject *values;
    Py_ssize_t offset, length;
    int is_float32;
    if (!PyArg_ParseTuple(args, "Onnp", &values, &offset, &length, &is_float32)) return NULL;
    Py_buffer v;
    if (PyObject_GetBuffer(values, &v, PyBUF_SIMPLE) < 0) return NULL;
    Py_ssize_t item = is_float32 ? 4 : 8;
    if (offset < 0 || length < 0 || v.len < (offset + length) * item) {
        PyBuffer_Release(&v);
        PyErr_SetString(PyExc_ValueError, "values buffer is too short");
        return NULL;
    }
    /* repr of a double is at most 24 bytes ("-1.7976931348623157e+308"); int32 offsets */
    if (length > INT32_MAX / 24) {
        PyBuffer_Release(&v);
        PyErr_SetString(PyExc_ValueError, "too many values for one call");
        return NULL;
    }
    PyObject *offs = PyBytes_FromStringAndSize(NULL, (length + 1) * 4);
    PyObject *data = PyBytes_FromStringAndSize(NULL, length * 24);
    uint8_t *left = NULL; /* per row: 1 = left to repr, then repr's length + 1 */
    if (offs == NULL || data == NULL) goto fail;
    int32_t *o = (int32_t *)PyBytes_AS_STRING(offs);
    char *d = PyBytes_AS_STRING(data);
    const char *src = (const char *)v.buf;
    Py_ssize_t undecided = 0;
    /* pass 1, no GIL: rows the fast paths decide; a 24-byte hole for the others */
    Py_BEGIN_ALLOW_THREADS
    int32_t pos = 0;
    o[0] = 0;
    for (Py_ssize_t i = 0; i < length; i++) {
        double x;
        if (is_float32) {
            float f;
            memcpy(&f, src + (offset + i) * 4, 4);
            x = (double)f;
        } else {
            memcpy(&x, src + (offset + i) * 8, 8);
        }
        int len = format_double(x, d + pos);
        if (len < 0) {
            if (left == NULL) left = (uint8_t *)calloc((size_t)length, 1);
            if (left == NULL) { undecided = -1; break; }
            left[i] = 1;
            undecided++;
            len = 24;
        }
        pos += len;
        o[i + 1] = pos;
    }
    Py_END_ALLOW_THREADS
    if (undecided < 0) {
        PyErr_NoMemory();
        goto fail;
    }
    if (undecided > 0) {
        /* pass 2, with the GIL: repr into the holes */
        for (Py_ssize_t i = 0; i < length; i++) {
            if (!left[i]) continue;
            double x;
            if (is_float32) {
                float f;
                memcpy(&f, src + (offset + i) * 4, 4);
                x = (double)f;
            } else {
                memcpy(&x, src + (offset + i) * 8, 8);
            }
            char *r = PyOS_double_to_string(x, 'r', 0, Py_DTSF_ADD_DOT_0, NULL);
            if (r == NULL) goto fail;
            size_t l = strlen(r);
            if (l > 24) l = 24;
            memcpy(d + o[i], r, l);
            PyMem_Free(r);
            left[i] = (uint8_t)(l + 1);
        }
        /* pass 3, no GIL: close the holes */
        Py_BEGIN_ALLOW_THREADS
        int32_t w = 0, start = 0;
        for (Py_ssize_t i = 0; i < length; i++) {
            int32_t end = o[i + 1];
            int32_t len = left[i] ? left[i] - 1 : end - start;
            memmove(d + w, d + start, (size_t)len);
            o[i] = w;
            w += len;
            start = end;
        }
        o[length] = w;
        Py_END_ALLOW_THREADS
    }
    free(left);
    left = NULL;
    PyBuffer_Release(&v);
    if (_PyBytes_Resize(&data, o[length]) < 0) {
        Py_DECREF(offs);
        return NULL;
    }
    return Py_BuildValue("(NN)", offs, data);
fail:
    free(left);
    PyBuffer_Release(&v);
    Py_XDECREF(offs);
    Py_XDECREF(data);
    return NULL;
}

static PyMethodDef methods[] = {
    {"hmac_hex", (PyCFunction)(void (*)(void))py_hmac_hex, METH_VARARGS | METH_KEYWORDS,
     "prefix + first 32 hex chars of HMAC-SHA-256 per row, as n*width bytes"},
    {"hmac_digest", (PyCFunction)(void (*)(void))py_hmac_digest, METH_VARARGS | METH_KEYWORDS,
     "raw 32-byte HMAC-SHA-256 per row, as n*32 bytes"},
    {"hmac_digest_joined", (PyCFunction)(void (*)(void))py_hmac_digest_joined, METH_VARARGS | METH_KEYWORDS,
     "raw 32-byte HMAC-SHA-256 of a[i] || sep || b[i] per row, as n*32 bytes"},
    {"float_text", py_float_text, METH_VARARGS,
     "DuckDB CAST(DOUBLE AS VARCHAR) text per value: (int32 offsets bytes, data bytes)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_hmac", NULL, -1, methods};

PyMODINIT_FUNC PyInit__hmac(void) { return PyModule_Create(&module); }
