/* Fused dequantize-and-multiply for hfx's QuantLinear at a few tokens (decoding).
 *
 * y[m, n] = sum_g s[n, g] * (sum_{k in g} x[m, k] * q[n, k]  -  z[n, g] * sum_{k in g} x[m, k])
 *
 * which is x @ ((q - z) * s)^T regrouped so that the integer codes are turned into floats in registers and
 * never written out: a decode step is memory-bound, and reading 1 byte (int8) or half a byte (int4) per
 * weight instead of 4 is where the speed comes from (llama.cpp's Q8_0 / Q4 GEMV work the same way).
 *
 * Layouts (those of hfx_plugins.quant: codes flattened row-major over (N, K), packed as in packing.py):
 *   x      (M, K) float32, contiguous
 *   codes  8 bits: one byte per code; 4 bits: two codes per byte, the first in the low nibble
 *   s, z   (rows, G) float32, rows = N or 1 (per tensor: row stride 0); z already as floats
 *   xsum   (M, G) scratch, filled here
 *   y      (M, N) float32
 * Groups: G groups of gs codes per row, the last one may be shorter (K - (G - 1) * gs).
 * Sums are accumulated in a different order from torch's matmul: results agree to float32 rounding
 * (the Python side checks every kernel against the dequantize-then-matmul reference before using it).
 */
#include <stdint.h>
#include <stddef.h>
#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define HFX_AVX2 1
#endif

#if HFX_AVX2
static inline float hsum256(__m256 v) {
    __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
    lo = _mm_add_ps(lo, hi);
    lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
    lo = _mm_add_ss(lo, _mm_shuffle_ps(lo, lo, 1));
    return _mm_cvtss_f32(lo);
}

/* 16 uint8 codes (in a 128-bit register) times 16 floats, added to two accumulators. */
static inline void fma16(__m128i c, const float *x, __m256 *a0, __m256 *a1) {
    __m256 f0 = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(c));
    __m256 f1 = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(c, 8)));
    *a0 = _mm256_fmadd_ps(f0, _mm256_loadu_ps(x), *a0);
    *a1 = _mm256_fmadd_ps(f1, _mm256_loadu_ps(x + 8), *a1);
}
#endif

/* dot(x[0:len], codes of a run starting at code index `start`) for 8-bit codes. */
static float dot8(const float *x, const uint8_t *q, int len) {
    int k = 0;
    float acc = 0.0f;
#if HFX_AVX2
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    for (; k + 16 <= len; k += 16) fma16(_mm_loadu_si128((const __m128i *)(q + k)), x + k, &a0, &a1);
    acc = hsum256(_mm256_add_ps(a0, a1));
#endif
    for (; k < len; k++) acc += x[k] * (float)q[k];
    return acc;
}

/* The same for 4-bit codes; `q` points at the byte holding code 0 of the run (the run starts on a byte). */
static float dot4(const float *x, const uint8_t *q, int len) {
    int k = 0;
    float acc = 0.0f;
#if HFX_AVX2
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    const __m128i low = _mm_set1_epi8(0x0F);
    for (; k + 16 <= len; k += 16) {
        __m128i b = _mm_loadl_epi64((const __m128i *)(q + k / 2));           /* 8 bytes = 16 codes */
        __m128i lo = _mm_and_si128(b, low);                                   /* even codes */
        __m128i hi = _mm_and_si128(_mm_srli_epi16(b, 4), low);                /* odd codes */
        fma16(_mm_unpacklo_epi8(lo, hi), x + k, &a0, &a1);                   /* codes 0..15 in order */
    }
    acc = hsum256(_mm256_add_ps(a0, a1));
#endif
    for (; k < len; k++) {
        uint8_t b = q[k / 2];
        acc += x[k] * (float)((k & 1) ? (b >> 4) : (b & 0x0F));
    }
    return acc;
}

int hfx_has_avx2(void) {
#if HFX_AVX2
    return 1;
#else
    return 0;
#endif
}

void hfx_quant_gemv(const float *x, int M, int K, const uint8_t *codes, int bits, int N, const float *s,
                    const float *z, int row_stride, int G, int gs, float *xsum, float *y, int threads) {
    for (int m = 0; m < M; m++)
        for (int g = 0; g < G; g++) {
            int start = g * gs, len = (g == G - 1) ? K - start : gs;
            float t = 0.0f;
            for (int k = 0; k < len; k++) t += x[(size_t)m * K + start + k];
            xsum[(size_t)m * G + g] = t;
        }
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int n = 0; n < N; n++) {
        const float *sn = s + (size_t)n * row_stride, *zn = z + (size_t)n * row_stride;
        for (int m = 0; m < M; m++) {
            const float *xm = x + (size_t)m * K;
            float out = 0.0f;
            for (int g = 0; g < G; g++) {
                int start = g * gs, len = (g == G - 1) ? K - start : gs;
                size_t first = (size_t)n * K + start;                         /* code index of the run */
                float d = bits == 8 ? dot8(xm + start, codes + first, len)
                                    : dot4(xm + start, codes + first / 2, len);
                out += sn[g] * (d - zn[g] * xsum[(size_t)m * G + g]);
            }
            y[(size_t)m * N + n] = out;
        }
    }
}
