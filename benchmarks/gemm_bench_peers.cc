// Eigen and oneDNN for gemm_bench. Compiled with AVX-512 flags so that Eigen uses its widest
// kernels; both peers thread through OpenMP (Debian's libdnnl is built with
// DNNL_CPU_RUNTIME=OMP), so omp_set_num_threads controls both.
#include "gemm_bench_peers.h"

#include <Eigen/Core>
#ifdef _OPENMP
#include <omp.h>
#endif
#ifdef TESSERA_BENCH_DNNL
#include <oneapi/dnnl/dnnl.hpp>
#endif

#include <memory>

namespace tessera::bench {

void set_peer_threads(int threads) {
#ifdef _OPENMP
  omp_set_num_threads(threads);
#endif
  Eigen::setNbThreads(threads);
}

std::string peer_threading() {
  std::string s;
#ifdef _OPENMP
  s += "OpenMP (omp_set_num_threads(n) for Eigen";
#else
  s += "no OpenMP (Eigen single-threaded";
#endif
#ifdef TESSERA_BENCH_DNNL
  s += ", oneDNN CPU runtime ";
  s += dnnl_version()->cpu_runtime == DNNL_RUNTIME_OMP ? "OpenMP" : dnnl_version()->cpu_runtime == DNNL_RUNTIME_TBB ? "TBB" : "other";
#endif
  return s + ")";
}

std::function<void()> eigen_f32(const MatmulShape& s, const float* A, const float* B, float* C) {
  using Mat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  using CMap = Eigen::Map<const Mat>;
  return [=] {
    Eigen::Map<Mat> c(C, s.M, s.N);
    CMap a(A, s.ta ? s.K : s.M, s.ta ? s.M : s.K);
    CMap b(B, s.tb ? s.N : s.K, s.tb ? s.K : s.N);
    if (!s.ta && !s.tb) c.noalias() = a * b;
    if (!s.ta && s.tb) c.noalias() = a * b.transpose();
    if (s.ta && !s.tb) c.noalias() = a.transpose() * b;
    if (s.ta && s.tb) c.noalias() = a.transpose() * b.transpose();
  };
}

#ifdef TESSERA_BENCH_DNNL
bool dnnl_available() { return true; }

std::function<void()> dnnl_matmul(const MatmulShape& s, bool bf16, const void* A, const void* B,
                                  float* C) {
  using dnnl::memory;
  using tag = memory::format_tag;
  struct State {
    dnnl::engine eng{dnnl::engine::kind::cpu, 0};
    dnnl::stream stream{eng};
    dnnl::matmul prim;
    memory a, b, c;
  };
  auto st = std::make_shared<State>();
  const auto dt = bf16 ? memory::data_type::bf16 : memory::data_type::f32;
  memory::desc a_md({s.M, s.K}, dt, s.ta ? tag::ba : tag::ab);
  memory::desc b_md({s.K, s.N}, dt, s.tb ? tag::ba : tag::ab);
  memory::desc c_md({s.M, s.N}, memory::data_type::f32, tag::ab);
  dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(a_md, b_md, c_md), st->eng);
  st->prim = dnnl::matmul(pd);
  st->a = memory(a_md, st->eng, const_cast<void*>(A));
  st->b = memory(b_md, st->eng, const_cast<void*>(B));
  st->c = memory(c_md, st->eng, C);
  return [st] {
    st->prim.execute(st->stream, {{DNNL_ARG_SRC, st->a}, {DNNL_ARG_WEIGHTS, st->b}, {DNNL_ARG_DST, st->c}});
    st->stream.wait();
  };
}
#else
bool dnnl_available() { return false; }
std::function<void()> dnnl_matmul(const MatmulShape&, bool, const void*, const void*, float*) {
  return {};
}
#endif

}  // namespace tessera::bench
