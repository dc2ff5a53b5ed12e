// A few rows times a bf16 matrix, for XLA's CPU code: y[M, N] (float32) = x[M, K] . w[N, K]^T,
// x and w bfloat16, sums in float32. Built and loaded by rows_kernel.py, which says why.
//
// XLA's own CPU code multiplies a bf16 matrix by one row at memory speed, but by more than one row
// it first converts the whole matrix to float32. Here each block of w rows is read once from
// memory for all of x's rows (up to 8 at a time): with AVX-512 BF16 (VDPBF16PS) 8 rows cost about
// 1.3x one row. Elsewhere a plain loop gives the same sums (for tests; rows_kernel.py does not use
// it for speed).
//
// Also one new query per row over its bf16 key/value cache (attend_work, below).
//
// Registered as XLA custom calls (API_VERSION_STATUS_RETURNING_UNIFIED) for the "Host" platform:
// "gpt2easy_bf16_rows", operands {x, w}, opaque "M K N ..."; "gpt2easy_bf16_attend", operands
// {q, keys, values, pos, offset}, opaque "B H L D scale ..." (the rest: rows_kernel.stamp).
#include <dlfcn.h>
#include <immintrin.h>
#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace {

constexpr int kPair = 2;    // rows of w read side by side
constexpr int kChunk = 64;  // rows of w per work item shared out among the threads

float bf16_to_float(uint16_t v) {
  uint32_t bits = static_cast<uint32_t>(v) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

// Rows n0..n1 of w times mb rows of x, one product at a time (any CPU).
void block_plain(const uint16_t* x, const uint16_t* w, float* y, int mb, int K, int N, int n0,
                 int n1) {
  for (int n = n0; n < n1; ++n)
    for (int r = 0; r < mb; ++r) {
      float s = 0.f;
      for (int k = 0; k < K; ++k)
        s += bf16_to_float(x[(size_t)r * K + k]) * bf16_to_float(w[(size_t)n * K + k]);
      y[(size_t)r * N + n] = s;
    }
}

#if defined(__x86_64__)
// MB rows of x against rows n0..n1 of w, two w rows at a time, 32 bf16 per instruction; the next
// pair of w rows is prefetched while this one is used (without it, 8 rows ran at 60% of the speed).
template <int MB>
__attribute__((target("avx512f,avx512bw,avx512bf16"))) void block_avx512(
    const uint16_t* x, const uint16_t* w, float* y, int K, int N, int n0, int n1) {
  const int steps = K / 32, tail = K % 32;
  const __mmask32 tail_mask = tail ? (1u << tail) - 1 : 0;
  int n = n0;
  for (; n + kPair <= n1; n += kPair) {
    __m512 acc[MB][kPair];
    for (int r = 0; r < MB; ++r)
      for (int c = 0; c < kPair; ++c) acc[r][c] = _mm512_setzero_ps();
    const uint16_t* wr[kPair];
    for (int c = 0; c < kPair; ++c) wr[c] = w + (size_t)(n + c) * K;
    const bool prefetch = n + 2 * kPair <= n1;
    for (int k = 0; k < steps; ++k) {
      __m512i wv[kPair];
      for (int c = 0; c < kPair; ++c) wv[c] = _mm512_loadu_si512(wr[c] + k * 32);
      if (prefetch)
        for (int c = 0; c < kPair; ++c)
          _mm_prefetch(reinterpret_cast<const char*>(wr[c] + (size_t)kPair * K + k * 32),
                       _MM_HINT_T0);
      for (int r = 0; r < MB; ++r) {
        __m512i xv = _mm512_loadu_si512(x + (size_t)r * K + k * 32);
        for (int c = 0; c < kPair; ++c)
          acc[r][c] = _mm512_dpbf16_ps(acc[r][c], (__m512bh)xv, (__m512bh)wv[c]);
      }
    }
    if (tail) {
      __m512i wv[kPair];
      for (int c = 0; c < kPair; ++c) wv[c] = _mm512_maskz_loadu_epi16(tail_mask, wr[c] + steps * 32);
      for (int r = 0; r < MB; ++r) {
        __m512i xv = _mm512_maskz_loadu_epi16(tail_mask, x + (size_t)r * K + steps * 32);
        for (int c = 0; c < kPair; ++c)
          acc[r][c] = _mm512_dpbf16_ps(acc[r][c], (__m512bh)xv, (__m512bh)wv[c]);
      }
    }
    for (int r = 0; r < MB; ++r)
      for (int c = 0; c < kPair; ++c) y[(size_t)r * N + n + c] = _mm512_reduce_add_ps(acc[r][c]);
  }
  if (n < n1) block_plain(x, w, y, MB, K, N, n, n1);  // an odd last row of w
}

using BlockFn = void (*)(const uint16_t*, const uint16_t*, float*, int, int, int, int);
const BlockFn kAvx512[9] = {nullptr,         block_avx512<1>, block_avx512<2>,
                            block_avx512<3>, block_avx512<4>, block_avx512<5>,
                            block_avx512<6>, block_avx512<7>, block_avx512<8>};
#endif

bool use_avx512 = false;

// One call's work: items 0..items-1, each done once by whichever thread takes it.
struct Job {
  void (*work)(const void* args, int item);
  const void* args;
  int items;
  std::atomic<int> next{0};
};

void run_chunks(Job* j) {
  for (;;) {
    const int item = j->next.fetch_add(1, std::memory_order_relaxed);
    if (item >= j->items) return;
    j->work(j->args, item);
  }
}

struct RowsArgs {
  const uint16_t* x;
  const uint16_t* w;
  float* y;
  int M, K, N;
};

// Item c: rows c * kChunk ... of w, for every row of x.
void rows_work(const void* args, int c) {
  const RowsArgs& a = *static_cast<const RowsArgs*>(args);
  const int n0 = c * kChunk, n1 = std::min(a.N, n0 + kChunk);
  for (int m0 = 0; m0 < a.M; m0 += 8) {
    const int mb = std::min(8, a.M - m0);
    const uint16_t* x = a.x + (size_t)m0 * a.K;
    float* y = a.y + (size_t)m0 * a.N;
#if defined(__x86_64__)
    if (use_avx512) {
      kAvx512[mb](x, a.w, y, a.K, a.N, n0, n1);
      continue;
    }
#endif
    block_plain(x, a.w, y, mb, a.K, a.N, n0, n1);
  }
}

// --- attention of one new query per row over its cache ------------------------------------------

// float32 -> the nearest bfloat16 (ties to even), as TensorFlow's cast rounds.
float round_bf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof bits);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return f;  // NaN stays NaN
  bits += 0x7fffu + ((bits >> 16) & 1u);
  bits &= 0xffff0000u;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

struct AttendArgs {
  const uint16_t* q;       // [B, H, D] bf16
  const uint16_t* k;       // [B, H, L, D] bf16: the key cache
  const uint16_t* v;       // [B, H, L, D] bf16: the value cache
  const int32_t* offset;   // [B]: row b attends to cache positions offset[b] .. pos
  int pos, B, H, L, D;
  float scale;
  float* y;                // [B, H * D] float32 (bf16-rounded values)
};

float dot_plain(const uint16_t* a, const uint16_t* b, int n) {
  float s = 0.f;
  for (int i = 0; i < n; ++i) s += bf16_to_float(a[i]) * bf16_to_float(b[i]);
  return s;
}

void mix_plain(const float* p, const uint16_t* v, int lo, int hi, int D, float* out) {
  for (int d = 0; d < D; ++d) out[d] = 0.f;
  for (int j = lo; j <= hi; ++j)
    for (int d = 0; d < D; ++d) out[d] += p[j] * bf16_to_float(v[(size_t)j * D + d]);
}

#if defined(__x86_64__)
__attribute__((target("avx512f,avx512bw,avx512bf16"))) float dot_avx512(const uint16_t* a,
                                                                        const uint16_t* b, int n) {
  __m512 acc = _mm512_setzero_ps();
  for (int i = 0; i < n; i += 32)
    acc = _mm512_dpbf16_ps(acc, (__m512bh)_mm512_loadu_si512(a + i),
                           (__m512bh)_mm512_loadu_si512(b + i));
  return _mm512_reduce_add_ps(acc);
}

// out[d] = sum over j of p[j] * v[j, d], D a multiple of 16 up to 128.
__attribute__((target("avx512f,avx512bw"))) void mix_avx512(const float* p, const uint16_t* v,
                                                            int lo, int hi, int D, float* out) {
  __m512 acc[8];
  const int parts = D / 16;
  for (int c = 0; c < parts; ++c) acc[c] = _mm512_setzero_ps();
  for (int j = lo; j <= hi; ++j) {
    const __m512 pj = _mm512_set1_ps(p[j]);
    for (int c = 0; c < parts; ++c) {
      __m256i raw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(v + (size_t)j * D + c * 16));
      __m512 vf = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(raw), 16));
      acc[c] = _mm512_fmadd_ps(pj, vf, acc[c]);
    }
  }
  for (int c = 0; c < parts; ++c) _mm512_storeu_ps(out + c * 16, acc[c]);
}
#endif

// Item b * H + h: row b's head h, rounded to bf16 where the compiled bf16 attention rounds (the
// scores and the output of its two bf16 products, and the probabilities before the second).
void attend_work(const void* args, int item) {
  const AttendArgs& a = *static_cast<const AttendArgs*>(args);
  const int b = item / a.H;
  const size_t head = (size_t)item * a.L * a.D;
  const uint16_t* q = a.q + (size_t)item * a.D;
  const int lo = std::max(0, std::min(a.offset[b], a.pos)), hi = std::min(a.pos, a.L - 1);
  thread_local std::vector<float> scores;
  scores.resize(a.L);
  float* s = scores.data();
  bool fast = false;
#if defined(__x86_64__)
  fast = use_avx512 && a.D % 32 == 0 && a.D <= 128;
#endif
  float top = -INFINITY;
  for (int j = lo; j <= hi; ++j) {
    const uint16_t* kj = a.k + head + (size_t)j * a.D;
#if defined(__x86_64__)
    const float d = fast ? dot_avx512(q, kj, a.D) : dot_plain(q, kj, a.D);
#else
    const float d = dot_plain(q, kj, a.D);
#endif
    s[j] = round_bf16(d) * a.scale;
    top = std::max(top, s[j]);
  }
  float sum = 0.f;
  for (int j = lo; j <= hi; ++j) sum += (s[j] = std::exp(s[j] - top));
  for (int j = lo; j <= hi; ++j) s[j] = round_bf16(s[j] / sum);
  float* out = a.y + (size_t)item * a.D;
#if defined(__x86_64__)
  if (fast) {
    mix_avx512(s, a.v + head, lo, hi, a.D, out);
  } else {
    mix_plain(s, a.v + head, lo, hi, a.D, out);
  }
#else
  mix_plain(s, a.v + head, lo, hi, a.D, out);
#endif
  for (int d = 0; d < a.D; ++d) out[d] = round_bf16(out[d]);
}

// Helper threads that share a call's items with the calling thread. Between calls a helper spins
// for a while (a step makes about 60 calls, a fraction of a millisecond apart: waking a sleeping
// thread took longer than that on a shared machine), then sleeps. A call that finds the helpers
// busy (XLA may run two independent custom calls at once) runs on its own thread alone.
class Pool {
 public:
  explicit Pool(int helpers) : helpers_(helpers) {
    for (int i = 0; i < helpers; ++i) std::thread([this] { loop(); }).detach();
  }
  bool try_run(Job* j) {
    std::unique_lock<std::mutex> owner(run_mu_, std::try_to_lock);
    if (!owner.owns_lock()) return false;
    job_ = j;
    busy_.store(helpers_);
    generation_.fetch_add(1);
    if (sleepers_.load() > 0) {
      std::lock_guard<std::mutex> l(mu_);
      start_.notify_all();
    }
    run_chunks(j);
    for (int spins = 0; busy_.load() != 0; ++spins) pause(spins);
    return true;
  }

 private:
  static void pause(int spins) {
#if defined(__x86_64__)
    if (spins < 4096) {
      _mm_pause();
      return;
    }
#endif
    std::this_thread::yield();
  }
  void loop() {
    uint64_t seen = 0;
    for (;;) {
      uint64_t now = generation_.load();
      const auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(300);
      for (int spins = 0; now == seen; now = generation_.load()) {
#if defined(__x86_64__)
        _mm_pause();
#endif
        if (++spins % 256 == 0 && std::chrono::steady_clock::now() > until) break;
      }
      if (now == seen) {
        std::unique_lock<std::mutex> l(mu_);
        sleepers_.fetch_add(1);
        start_.wait(l, [&] { return generation_.load() != seen; });
        sleepers_.fetch_sub(1);
        now = generation_.load();
      }
      seen = now;
      run_chunks(job_);
      busy_.fetch_sub(1);
    }
  }
  const int helpers_;
  std::mutex mu_, run_mu_;
  std::condition_variable start_;
  Job* job_ = nullptr;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> busy_{0}, sleepers_{0};
};

Pool* pool = nullptr;

// A forked child has none of the helper threads: it computes on its own thread.
void forget_pool_in_child() { pool = nullptr; }

void run(Job* j) {
  if (pool != nullptr && pool->try_run(j)) return;
  run_chunks(j);
}

// The opaque string, terminated.
std::string text(const char* opaque, size_t len) { return std::string(opaque, len); }

}  // namespace

extern "C" {

// plain != 0: compute in plain C++ from now on (tests); 0: AVX-512 BF16 where the CPU has it.
void gpt2easy_use_plain(int plain) {
#if defined(__x86_64__)
  __builtin_cpu_init();
  use_avx512 = !plain && __builtin_cpu_supports("avx512bf16") && __builtin_cpu_supports("avx512bw");
#else
  (void)plain;
#endif
}

void gpt2easy_bf16_rows(void* out, const void** in, const char* opaque, size_t opaque_len,
                        void* /*status*/) {
  RowsArgs a;
  if (std::sscanf(text(opaque, opaque_len).c_str(), "%d %d %d", &a.M, &a.K, &a.N) != 3) return;
  a.x = static_cast<const uint16_t*>(in[0]);
  a.w = static_cast<const uint16_t*>(in[1]);
  a.y = static_cast<float*>(out);
  Job j;
  j.work = rows_work;
  j.args = &a;
  j.items = (a.N + kChunk - 1) / kChunk;
  run(&j);
}

// operands {q, keys, values, pos int32 [], offset int32 [B]}; opaque "B H L D scale".
void gpt2easy_bf16_attend(void* out, const void** in, const char* opaque, size_t opaque_len,
                          void* /*status*/) {
  AttendArgs a;
  double scale;
  if (std::sscanf(text(opaque, opaque_len).c_str(), "%d %d %d %d %lf", &a.B, &a.H, &a.L, &a.D,
                  &scale) != 5)
    return;
  a.scale = static_cast<float>(scale);
  a.q = static_cast<const uint16_t*>(in[0]);
  a.k = static_cast<const uint16_t*>(in[1]);
  a.v = static_cast<const uint16_t*>(in[2]);
  a.pos = *static_cast<const int32_t*>(in[3]);
  a.offset = static_cast<const int32_t*>(in[4]);
  a.y = static_cast<float*>(out);
  Job j;
  j.work = attend_work;
  j.args = &a;
  j.items = a.B * a.H;
  run(&j);
}

// Registers the custom calls with XLA (its registry lives in TensorFlow's library, loaded
// already: `tensorflow_library`). threads: 1 + helper threads. Returns 0, or 1 if TensorFlow's
// registry was not found.
int gpt2easy_register(const char* tensorflow_library, int threads) {
  using Global = void* (*)();
  using Register = void (*)(void*, const std::string&, void*, const std::string&);
  void* lib = dlopen(tensorflow_library, RTLD_NOW | RTLD_NOLOAD);
  if (lib == nullptr) return 1;
  auto global = reinterpret_cast<Global>(dlsym(lib, "_ZN3xla24CustomCallTargetRegistry6GlobalEv"));
  auto add = reinterpret_cast<Register>(dlsym(
      lib,
      "_ZN3xla24CustomCallTargetRegistry8RegisterERKNSt7__cxx1112basic_stringIcSt11char_"
      "traitsIcESaIcEEEPvS8_"));
  if (global == nullptr || add == nullptr) return 1;
  gpt2easy_use_plain(0);
  if (threads > 1 && pool == nullptr) {
    pool = new Pool(threads - 1);
    pthread_atfork(nullptr, nullptr, forget_pool_in_child);
  }
  add(global(), "gpt2easy_bf16_rows", reinterpret_cast<void*>(&gpt2easy_bf16_rows), "Host");
  add(global(), "gpt2easy_bf16_attend", reinterpret_cast<void*>(&gpt2easy_bf16_attend), "Host");
  return 0;
}

// Whether calls take the AVX-512 BF16 path.
int gpt2easy_rows_avx512() { return use_avx512 ? 1 : 0; }

}  // extern "C"
