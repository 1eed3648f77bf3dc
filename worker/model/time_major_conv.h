// HuBERT's convolutions on time-major activations ([B, T, C]) as GEMMs.
//
// Time-major, a window of K frames is one contiguous run of K * C values, so a convolution is
// a matrix product over rows that overlap in memory: no transposes around torch::conv1d, and
// the norms and activations between layers run on contiguous rows.
//
// The positional convolution (768 channels, 16 groups, kernel 128): oneDNN runs that grouped
// convolution at a third of this CPU's GEMM rate, and its backward slower still. Here each
// group's windows are copied out as rows of C/g * K values (im2col, channel-major so that the
// conv weight is the GEMM matrix as it lies) and multiplied by the group's weight. The input
// gradient is the same correlation of the output gradient with the flipped, transposed
// kernel; the weight gradient is grad^T @ im2col.
#pragma once

#include <cstdint>

#include <torch/torch.h>

namespace ftune::model {

// The feature encoder's strided convolutions, without autograd (the encoder is frozen or the
// model serves): x [B, T, C_in] -> [B, T', C_out] with T' = (T - K) / stride + 1, one GEMM per
// clip against `gemm_weight` [K * C_in, C_out] (ConvGemmWeight), plus `bias` when defined.
torch::Tensor StridedConvTimeMajor(const torch::Tensor& x, const torch::Tensor& gemm_weight,
                                   const torch::Tensor& bias, int64_t kernel, int64_t stride);
// Conv weight [C_out, C_in, K] -> [K * C_in, C_out].
torch::Tensor ConvGemmWeight(const torch::Tensor& weight);

// GroupNorm with one group per channel (the group-norm feature encoder's first layer) on
// x [B, T, C], in place and without autograd: each clip's channels are normalised over time
// and scaled by gamma/beta [C]. Statistics in float (double for double input).
void ChannelNormTimeMajor_(torch::Tensor& x, const torch::Tensor& gamma, const torch::Tensor& beta,
                           double eps);

// Whether these GEMM forms beat torch::conv1d: on CPU in bf16, where oneDNN's bf16 matrix
// multiply serves them. In float32 (OpenBLAS) the strided convolutions run 1.3x and the
// positional one 3x slower than oneDNN's convolutions; CUDA keeps cuDNN's.
bool GemmConvolutionsPay(const torch::Device& device, at::ScalarType dtype);

// Scratch cap for one group's im2col block (clips or rows of one clip): small enough to stay
// in cache for its GEMM.
inline constexpr int64_t kGroupedConvBlockBytes = int64_t{8} << 20;

// y[b, t] = bias + sum_k xp[b, t + k] W_k, xp = x zero-padded by `left_pad` frames at the
// start (and as needed at the end); x [B, T, C] -> y [B, rows, C_out]. Differentiable with
// respect to x, weight [C_out, C/g, K] and bias [C_out]. Under autocast it computes in the
// autocast dtype (the casts are part of the graph), otherwise in x's and weight's common type.
// Without autograd it is the inference form too.
torch::Tensor GroupedConvTimeMajor(const torch::Tensor& x, const torch::Tensor& weight,
                                   const torch::Tensor& bias, int64_t groups, int64_t left_pad,
                                   int64_t rows, int64_t block_bytes = kGroupedConvBlockBytes);

}  // namespace ftune::model
