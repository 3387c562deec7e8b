// bf16 decode dot products against a plain read of the same bytes (docs/KERNELS.md, "bf16 decode on the Zen 3").
//
//     clang -O2 -mavx2 -mfma -mf16c -o /tmp/bf16bench tools/bf16_decode_microbench.c -lpthread
//     /tmp/bf16bench 60 2        # rounds, threads
//
// 40 copies of a [3584, 1024] matrix of 16-bit weights (293 MB, beyond the caches) are multiplied by one x per
// round, in 16-row parts handed to the threads in turn, as pmq's decode does. Each variant runs once per round,
// the order turned by one each round; the median GB/s and the median per-round ratio to pmq's kernel are printed. The weights'
// values do not matter to the speed: every variant reads the same bytes (as bf16 or as f16).
// Not part of pmq or of its tests; a measurement behind a note in docs/KERNELS.md.
#include <immintrin.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>

enum { ROWS = 3584, COLS = 1024, COPIES = 40, PART = 16, MAXROUNDS = 1000 };
static uint16_t *weights, x_half[COLS];
static float x[COLS], x_even[COLS / 2], x_odd[COLS / 2];
static float y[64][ROWS];
static int threads = 2;

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static float hsum(__m256 v) {
    __m128 a = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    a = _mm_hadd_ps(a, a);
    return _mm_cvtss_f32(_mm_hadd_ps(a, a));
}

// A plain read: the bandwidth yardstick.
static float read_row(const uint16_t *w) {
    __m256 a = _mm256_setzero_ps(), b = a;
    for (int j = 0; j < COLS; j += 32) {
        a = _mm256_add_ps(a, _mm256_loadu_ps((const float *)(w + j)));
        b = _mm256_add_ps(b, _mm256_loadu_ps((const float *)(w + j + 16)));
    }
    return hsum(_mm256_add_ps(a, b));
}

#define EVEN(w) _mm256_castsi256_ps(_mm256_slli_epi32(w, 16))
#define ODD(w) _mm256_castsi256_ps(_mm256_and_si256(w, high))

// pmq's AVX2 kernel (Kernels.dotBF16): x split into even and odd halves, pairs widened by a shift and a mask.
static float pmq_bf16(const uint16_t *w) {
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, b0 = a0, b1 = a0;
    const __m256i high = _mm256_set1_epi32((int)0xFFFF0000);
    for (int j = 0; j < COLS / 2; j += 16) {
        __m256i w0 = _mm256_loadu_si256((const __m256i *)(w + 2 * j));
        __m256i w1 = _mm256_loadu_si256((const __m256i *)(w + 2 * j + 16));
        a0 = _mm256_fmadd_ps(EVEN(w0), _mm256_loadu_ps(x_even + j), a0);
        b0 = _mm256_fmadd_ps(ODD(w0), _mm256_loadu_ps(x_odd + j), b0);
        a1 = _mm256_fmadd_ps(EVEN(w1), _mm256_loadu_ps(x_even + j + 8), a1);
        b1 = _mm256_fmadd_ps(ODD(w1), _mm256_loadu_ps(x_odd + j + 8), b1);
    }
    return hsum(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(b0, b1)));
}

// The same with eight accumulators, 128 bytes a pass.
static float pmq_bf16_acc8(const uint16_t *w) {
    __m256 a[4], b[4];
    for (int r = 0; r < 4; r++) a[r] = b[r] = _mm256_setzero_ps();
    const __m256i high = _mm256_set1_epi32((int)0xFFFF0000);
    for (int j = 0; j < COLS / 2; j += 32)
        for (int r = 0; r < 4; r++) {
            __m256i v = _mm256_loadu_si256((const __m256i *)(w + 2 * j + 16 * r));
            a[r] = _mm256_fmadd_ps(EVEN(v), _mm256_loadu_ps(x_even + j + 8 * r), a[r]);
            b[r] = _mm256_fmadd_ps(ODD(v), _mm256_loadu_ps(x_odd + j + 8 * r), b[r]);
        }
    return hsum(_mm256_add_ps(_mm256_add_ps(_mm256_add_ps(a[0], a[1]), _mm256_add_ps(b[0], b[1])),
                              _mm256_add_ps(_mm256_add_ps(a[2], a[3]), _mm256_add_ps(b[2], b[3]))));
}

// Four rows interleaved in 64-byte pieces (a repacked layout): one stream, each load of x serves four rows.
static void tile4(const uint16_t *w, float *out) {
    __m256 a[4], b[4];
    for (int r = 0; r < 4; r++) a[r] = b[r] = _mm256_setzero_ps();
    const __m256i high = _mm256_set1_epi32((int)0xFFFF0000);
    for (int j = 0; j < COLS / 2; j += 8, w += 64) {
        __m256 xe = _mm256_loadu_ps(x_even + j), xo = _mm256_loadu_ps(x_odd + j);
        for (int r = 0; r < 4; r++) {
            __m256i v = _mm256_loadu_si256((const __m256i *)(w + 16 * r));
            a[r] = _mm256_fmadd_ps(EVEN(v), xe, a[r]);
            b[r] = _mm256_fmadd_ps(ODD(v), xo, b[r]);
        }
    }
    for (int r = 0; r < 4; r++) out[r] += hsum(_mm256_add_ps(a[r], b[r]));
}

#define F16(p) _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p)))
#define BF16(p) _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(p))), 16))

// llama.cpp's F16 dot product on AVX2 (activations converted to f16 too): vcvtph2ps on both.
static float f16_both(const uint16_t *w) {
    __m256 a[4];
    for (int r = 0; r < 4; r++) a[r] = _mm256_setzero_ps();
    for (int j = 0; j < COLS; j += 32)
        for (int r = 0; r < 4; r++) a[r] = _mm256_fmadd_ps(F16(w + j + 8 * r), F16(x_half + j + 8 * r), a[r]);
    return hsum(_mm256_add_ps(_mm256_add_ps(a[0], a[1]), _mm256_add_ps(a[2], a[3])));
}

// f16 weights against f32 activations.
static float f16_weights(const uint16_t *w) {
    __m256 a[4];
    for (int r = 0; r < 4; r++) a[r] = _mm256_setzero_ps();
    for (int j = 0; j < COLS; j += 32)
        for (int r = 0; r < 4; r++) a[r] = _mm256_fmadd_ps(F16(w + j + 8 * r), _mm256_loadu_ps(x + j + 8 * r), a[r]);
    return hsum(_mm256_add_ps(_mm256_add_ps(a[0], a[1]), _mm256_add_ps(a[2], a[3])));
}

// bf16 weights widened by zero-extension and a shift, against f32 activations in order (no split of x).
static float bf16_widened(const uint16_t *w) {
    __m256 a[4];
    for (int r = 0; r < 4; r++) a[r] = _mm256_setzero_ps();
    for (int j = 0; j < COLS; j += 32)
        for (int r = 0; r < 4; r++) a[r] = _mm256_fmadd_ps(BF16(w + j + 8 * r), _mm256_loadu_ps(x + j + 8 * r), a[r]);
    return hsum(_mm256_add_ps(_mm256_add_ps(a[0], a[1]), _mm256_add_ps(a[2], a[3])));
}

// llama.cpp's BF16 dot product on AVX2 (activations in bf16): zero-extend and shift on both.
static float bf16_both(const uint16_t *w) {
    __m256 a[4];
    for (int r = 0; r < 4; r++) a[r] = _mm256_setzero_ps();
    for (int j = 0; j < COLS; j += 32)
        for (int r = 0; r < 4; r++) a[r] = _mm256_fmadd_ps(BF16(w + j + 8 * r), BF16(x_half + j + 8 * r), a[r]);
    return hsum(_mm256_add_ps(_mm256_add_ps(a[0], a[1]), _mm256_add_ps(a[2], a[3])));
}

enum { READ, PMQ, ACC8, TILE4, F16_BOTH, F16_WEIGHTS, BF16_WIDENED, BF16_BOTH, VARIANTS };
static const char *names[VARIANTS] = {"plain read", "pmq bf16 (shift, mask)", "pmq bf16, 8 accumulators",
                                      "4 rows tiled (repacked)", "f16 x f16 (llama F16)", "f16 weights x f32",
                                      "bf16 widened x f32", "bf16 x bf16 (llama BF16)"};

typedef struct { int thread, variant, round; } Job;

static void *work(void *argument) {
    const Job *job = argument;
    float *out = y[job->thread];
    for (int c = 0; c < COPIES; c++) {
        const uint16_t *matrix = weights + (size_t)((c + job->round) % COPIES) * ROWS * COLS;
        for (int part = job->thread; part < ROWS / PART; part += threads)
            for (int o = part * PART; o < (part + 1) * PART; o += job->variant == TILE4 ? 4 : 1) {
                const uint16_t *w = matrix + (size_t)o * COLS;
                switch (job->variant) {
                case READ: out[o] += read_row(w); break;
                case PMQ: out[o] += pmq_bf16(w); break;
                case ACC8: out[o] += pmq_bf16_acc8(w); break;
                case TILE4: tile4(w, out + o); break;
                case F16_BOTH: out[o] += f16_both(w); break;
                case F16_WEIGHTS: out[o] += f16_weights(w); break;
                case BF16_WIDENED: out[o] += bf16_widened(w); break;
                default: out[o] += bf16_both(w); break;
                }
            }
    }
    return NULL;
}

static int compare(const void *a, const void *b) {
    double d = *(const double *)a - *(const double *)b;
    return (d > 0) - (d < 0);
}

int main(int argc, char **argv) {
    int rounds = argc > 1 ? atoi(argv[1]) : 60;
    threads = argc > 2 ? atoi(argv[2]) : 2;
    if (rounds < 1 || rounds > MAXROUNDS || threads < 1 || threads > 64) {
        fprintf(stderr, "usage: %s [rounds 1-%d] [threads 1-64]\n", argv[0], MAXROUNDS);
        return 1;
    }
    size_t count = (size_t)COPIES * ROWS * COLS, bytes = count * 2;
    weights = aligned_alloc(2 << 20, bytes);
    if (!weights) return 1;
    madvise(weights, bytes, MADV_HUGEPAGE);
    for (size_t i = 0; i < count; i++) weights[i] = (uint16_t)(0x3c00 + (i & 7)); // 1.0-ish in f16 and bf16
    for (int i = 0; i < COLS; i++) x[i] = 1, x_half[i] = 0x3c00;
    for (int i = 0; i < COLS / 2; i++) x_even[i] = x_odd[i] = 1;
    static double rate[VARIANTS][MAXROUNDS], ratio[VARIANTS][MAXROUNDS];
    for (int r = 0; r < rounds; r++)
        for (int k = 0; k < VARIANTS; k++) {
            int v = (k + r) % VARIANTS; // the order turns each round: no variant always follows another
            pthread_t thread[64];
            Job jobs[64];
            double start = now();
            for (int t = 0; t < threads; t++) {
                jobs[t] = (Job){t, v, r};
                pthread_create(&thread[t], NULL, work, &jobs[t]);
            }
            for (int t = 0; t < threads; t++) pthread_join(thread[t], NULL);
            rate[v][r] = bytes / (now() - start) / 1e9;
        }
    for (int v = 0; v < VARIANTS; v++) {
        for (int r = 0; r < rounds; r++) ratio[v][r] = rate[v][r] / rate[PMQ][r];
        qsort(rate[v], rounds, sizeof(double), compare);
        qsort(ratio[v], rounds, sizeof(double), compare);
        printf("%-28s %6.2f GB/s (median of %d)  x pmq bf16: %.3f\n", names[v], rate[v][rounds / 2], rounds,
               ratio[v][rounds / 2]);
    }
    return 0;
}
