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
 *   float_text(values, offset, length, is_float32) -> (offsets int32 bytes, data bytes)
 *       DuckDB's CAST(DOUBLE AS VARCHAR) text (Python repr, "-nan" for negative NaN), so both
 *       engines hash the same canonical text for floating-point values.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <stdint.h>
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

static inline int64_t load_offset(const job_t *j, Py_ssize_t i) {
    if (j->offset_width == 4) {
        int32_t v;
        memcpy(&v, j->offsets + 4 * i, 4);
        return v;
    }
    int64_t v;
    memcpy(&v, j->offsets + 8 * i, 8);
    return v;
}

static void *run_job(void *arg) {
    job_t *j = (job_t *)arg;
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
    /* repr of a double is at most 24 bytes ("-1.7976931348623157e+308") */
    PyObject *offs = PyBytes_FromStringAndSize(NULL, (length + 1) * 4);
    PyObject *data = PyBytes_FromStringAndSize(NULL, length * 24);
    if (offs == NULL || data == NULL) goto fail;
    int32_t *o = (int32_t *)PyBytes_AS_STRING(offs);
    char *d = PyBytes_AS_STRING(data);
    int32_t pos = 0;
    o[0] = 0;
    for (Py_ssize_t i = 0; i < length; i++) {
        double x;
        if (is_float32) {
            float f;
            memcpy(&f, (const char *)v.buf + (offset + i) * 4, 4);
            x = (double)f;
        } else {
            memcpy(&x, (const char *)v.buf + (offset + i) * 8, 8);
        }
        if (isnan(x)) {
            const char *s = signbit(x) ? "-nan" : "nan";
            size_t l = strlen(s);
            memcpy(d + pos, s, l);
            pos += (int32_t)l;
        } else {
            char *s = PyOS_double_to_string(x, 'r', 0, Py_DTSF_ADD_DOT_0, NULL);
            if (s == NULL) goto fail;
            size_t l = strlen(s);
            if (l > 24) l = 24;
            memcpy(d + pos, s, l);
            pos += (int32_t)l;
            PyMem_Free(s);
        }
        o[i + 1] = pos;
    }
    PyBuffer_Release(&v);
    if (_PyBytes_Resize(&data, pos) < 0) {
        Py_DECREF(offs);
        return NULL;
    }
    return Py_BuildValue("(NN)", offs, data);
fail:
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
    {"float_text", py_float_text, METH_VARARGS,
     "DuckDB CAST(DOUBLE AS VARCHAR) text per value: (int32 offsets bytes, data bytes)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_hmac", NULL, -1, methods};

PyMODINIT_FUNC PyInit__hmac(void) { return PyModule_Create(&module); }
