/* hfx's native kernels for QuantLinear: fused dequantize-and-multiply (a few tokens) and dequantization.
 *
 * GEMV, y[m, n] = sum_g s[n, g] * (sum_{k in g} x[m, k] q[n, k])  -  sum_g s[n, g] z[n, g] sum_{k in g} x[m, k]
 *
 * which is x @ ((q - z) * s)^T regrouped so that the integer codes are turned into floats in registers and
 * never written out: a decode step is memory-bound, and reading 1 byte (int8) or half a byte (int4) per
 * weight instead of 4 is where the speed comes from (llama.cpp's Q8_0 / Q4 GEMV work the same way). The
 * per-group products are kept as vectors, scaled by s with one FMA per group, and reduced once per row.
 * 8 bits: 8 codes widened to floats straight from memory per FMA. 4 bits: x is reordered once per call
 * (permute16) so that 8 packed bytes are widened once and split into low and high nibbles by one AND and
 * one shift, without interleaving them back into code order. Rows are split across OpenMP threads.
 *
 * Dequantize, w[n, k] = (q[n, k] - z[n, g]) * s[n, g]: the same two float operations in the same order as
 * QuantLinear.dequantize (torch), so the result is equal bit for bit; prefill then runs torch's fp32 GEMM on it.
 *
 * Layouts (those of hfx_plugins.quant: codes flattened row-major over (N, K), packed as in packing.py):
 *   x      (M, K) float32, contiguous
 *   codes  8 bits: one byte per code; 4 bits: two codes per byte, the first in the low nibble
 *   s, z   (rows, G) float32, rows = N or 1 (per tensor: row stride 0); z already as floats
 *   y      (M, N) float32;  w (n1 - n0, K) float32
 * Groups: G groups of gs codes per row, the last one may be shorter (K - (G - 1) * gs); for 4 bits K and gs
 * are even, so every group starts on a byte.
 */
#include <stdint.h>
#include <stddef.h>
#include <stdlib.h>
#include <math.h>
#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define HFX_AVX2 1
#endif

typedef struct {                /* one QuantLinear, filled once by the Python side (kernels_native.py) */
    const uint8_t *codes;
    const float *s, *z, *bias;  /* bias may be NULL */
    int bits, N, K, row_stride, G, gs;
} hfx_qlayer;

int hfx_has_avx2(void) {
#if HFX_AVX2
    return 1;
#else
    return 0;
#endif
}

#if HFX_AVX2
static inline float hsum256(__m256 v) {
    __m128 lo = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
    lo = _mm_add_ss(lo, _mm_shuffle_ps(lo, lo, 1));
    return _mm_cvtss_f32(lo);
}
static inline __m256 u8x8(__m128i c) { return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(c)); }  /* low 8 bytes */
static inline __m256 load8(const uint8_t *p) { return u8x8(_mm_loadl_epi64((const __m128i *)p)); }
/* 16 packed bytes -> codes 0..15 (c0) and 16..31 (c1) of a 4-bit run, one code per byte */
static inline void nibbles32(const uint8_t *p, __m128i *c0, __m128i *c1) {
    const __m128i low = _mm_set1_epi8(0x0F);
    __m128i b = _mm_loadu_si128((const __m128i *)p);
    __m128i lo = _mm_and_si128(b, low), hi = _mm_and_si128(_mm_srli_epi16(b, 4), low);
    *c0 = _mm_unpacklo_epi8(lo, hi);
    *c1 = _mm_unpackhi_epi8(lo, hi);
}
#endif

static inline float code_at(const uint8_t *q, int bits, int k) {  /* code k of a run starting on a byte */
    return bits == 8 ? (float)q[k] : (float)((k & 1) ? (q[k >> 1] >> 4) : (q[k >> 1] & 0x0F));
}

/* 4 bits: a copy of one token's x in which every whole 16-block of a group holds the inputs of the codes in
 * the low nibbles (even codes) first, then those of the high nibbles (odd codes), so that the kernel widens 8
 * packed bytes once and splits them with one AND and one shift instead of interleaving nibbles. */
static void permute16(const hfx_qlayer *L, const float *x, float *xp) {
    for (int g = 0; g < L->G; g++) {
        int start = g * L->gs, len = (g == L->G - 1) ? L->K - start : L->gs, k = 0;
#if HFX_AVX2
        for (; k + 16 <= len; k += 16)
            for (int j = 0; j < 8; j++) {
                xp[start + k + j] = x[start + k + 2 * j];
                xp[start + k + 8 + j] = x[start + k + 2 * j + 1];
            }
#endif
        for (; k < len; k++) xp[start + k] = x[start + k];
    }
}

/* One row times one token: the sum over groups of s_g * dot_g, minus the zero-point term. */
static float row_dot(const hfx_qlayer *L, const uint8_t *row, const float *x, const float *xsum,
                     const float *s, const float *z) {
    float scalar = 0.0f, corr = 0.0f;
#if HFX_AVX2
    __m256 tot = _mm256_setzero_ps();
#endif
    for (int g = 0; g < L->G; g++) {
        int start = g * L->gs, len = (g == L->G - 1) ? L->K - start : L->gs, k = 0;
        const float *xg = x + start;
        const uint8_t *q = row + (L->bits == 8 ? start : start / 2);
        float tail = 0.0f;
#if HFX_AVX2
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        if (L->bits == 8) {
            for (; k + 32 <= len; k += 32) {
                a0 = _mm256_fmadd_ps(load8(q + k), _mm256_loadu_ps(xg + k), a0);
                a1 = _mm256_fmadd_ps(load8(q + k + 8), _mm256_loadu_ps(xg + k + 8), a1);
                a2 = _mm256_fmadd_ps(load8(q + k + 16), _mm256_loadu_ps(xg + k + 16), a2);
                a3 = _mm256_fmadd_ps(load8(q + k + 24), _mm256_loadu_ps(xg + k + 24), a3);
            }
            for (; k + 8 <= len; k += 8) a0 = _mm256_fmadd_ps(load8(q + k), _mm256_loadu_ps(xg + k), a0);
        } else {  /* x is permuted (permute16): each 16-block holds the even codes' inputs, then the odd ones' */
            const __m256i low = _mm256_set1_epi32(0x0F);
            for (; k + 32 <= len; k += 32) {
                __m256i v0 = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(q + k / 2)));     /* 8 bytes */
                __m256i v1 = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(q + k / 2 + 8)));
                a0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_and_si256(v0, low)), _mm256_loadu_ps(xg + k), a0);
                a1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32(v0, 4)), _mm256_loadu_ps(xg + k + 8), a1);
                a2 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_and_si256(v1, low)), _mm256_loadu_ps(xg + k + 16), a2);
                a3 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32(v1, 4)), _mm256_loadu_ps(xg + k + 24), a3);
            }
            for (; k + 16 <= len; k += 16) {
                __m256i v0 = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(q + k / 2)));
                a0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_and_si256(v0, low)), _mm256_loadu_ps(xg + k), a0);
                a1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32(v0, 4)), _mm256_loadu_ps(xg + k + 8), a1);
            }
        }
        __m256 acc = _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3));
        tot = _mm256_fmadd_ps(_mm256_set1_ps(s[g]), acc, tot);
#endif
        for (; k < len; k++) tail += xg[k] * code_at(q, L->bits, k);  /* x not permuted past the 16-blocks */
        scalar += s[g] * tail;
        corr += s[g] * z[g] * xsum[g];
    }
#if HFX_AVX2
    scalar += hsum256(tot);
#endif
    return scalar - corr;
}

void hfx_quant_gemv(const hfx_qlayer *L, const float *x, int M, float *y, int threads) {
    int K = L->K, G = L->G, N = L->N;
    size_t need = (size_t)M * G + (L->bits == 4 ? (size_t)M * K : 0);
    float stack[2048];
    float *xsum = need <= 2048 ? stack : (float *)malloc(sizeof(float) * need);
    if (xsum == NULL) {  /* out of memory: NaN outputs, which the Python side's probe check refuses */
        for (size_t i = 0; i < (size_t)M * N; i++) y[i] = NAN;
        return;
    }
    const float *xk = x;  /* the x the row kernel reads: permuted for 4 bits */
    if (L->bits == 4) {
        float *xp = xsum + (size_t)M * G;
        for (int m = 0; m < M; m++) permute16(L, x + (size_t)m * K, xp + (size_t)m * K);
        xk = xp;
    }
    for (int m = 0; m < M; m++)
        for (int g = 0; g < G; g++) {
            int start = g * L->gs, len = (g == G - 1) ? K - start : L->gs;
            float t = 0.0f;
            for (int k = 0; k < len; k++) t += x[(size_t)m * K + start + k];
            xsum[(size_t)m * G + g] = t;
        }
    size_t row_bytes = L->bits == 8 ? (size_t)K : (size_t)K / 2;
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
    for (int n = 0; n < N; n++) {
        const float *sn = L->s + (size_t)n * L->row_stride, *zn = L->z + (size_t)n * L->row_stride;
        float b = L->bias ? L->bias[n] : 0.0f;
        for (int m = 0; m < M; m++)
            y[(size_t)m * N + n] = row_dot(L, L->codes + n * row_bytes, xk + (size_t)m * K, xsum + (size_t)m * G,
                                           sn, zn) + b;
    }
    if (xsum != stack) free(xsum);
}

/* Rows n0..n1-1 of the dequantized weight into w ((n1 - n0, K), row-major). */
void hfx_quant_dequantize(const hfx_qlayer *L, int n0, int n1, float *w, int threads) {
    int K = L->K;
    size_t row_bytes = L->bits == 8 ? (size_t)K : (size_t)K / 2;
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
    for (int n = n0; n < n1; n++) {
        const uint8_t *row = L->codes + n * row_bytes;
        const float *sn = L->s + (size_t)n * L->row_stride, *zn = L->z + (size_t)n * L->row_stride;
        float *out = w + (size_t)(n - n0) * K;
        for (int g = 0; g < L->G; g++) {
            int start = g * L->gs, len = (g == L->G - 1) ? K - start : L->gs, k = 0;
            const uint8_t *q = row + (L->bits == 8 ? start : start / 2);
            float *o = out + start, sg = sn[g], zg = zn[g];
#if HFX_AVX2
            __m256 vs = _mm256_set1_ps(sg), vz = _mm256_set1_ps(zg);
            if (L->bits == 8) {
                for (; k + 8 <= len; k += 8) _mm256_storeu_ps(o + k, _mm256_mul_ps(_mm256_sub_ps(load8(q + k), vz), vs));
            } else {
                __m128i c0, c1;
                for (; k + 32 <= len; k += 32) {
                    nibbles32(q + k / 2, &c0, &c1);
                    _mm256_storeu_ps(o + k, _mm256_mul_ps(_mm256_sub_ps(u8x8(c0), vz), vs));
                    _mm256_storeu_ps(o + k + 8, _mm256_mul_ps(_mm256_sub_ps(u8x8(_mm_srli_si128(c0, 8)), vz), vs));
                    _mm256_storeu_ps(o + k + 16, _mm256_mul_ps(_mm256_sub_ps(u8x8(c1), vz), vs));
                    _mm256_storeu_ps(o + k + 24, _mm256_mul_ps(_mm256_sub_ps(u8x8(_mm_srli_si128(c1, 8)), vz), vs));
                }
            }
#endif
            for (; k < len; k++) o[k] = (code_at(q, L->bits, k) - zg) * sg;
        }
    }
}
