#include "worker/model/time_major_conv.h"

#include <ATen/Parallel.h>
#include <c10/core/DispatchKeySet.h>
#include <c10/core/impl/LocalDispatchKeySet.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "common/cpu_dispatch.h"
#include "worker/model/device.h"

namespace ftune::model {
namespace {

// A block of the output: `clips` whole clips, or rows [row, row + rows) of one clip.
struct Block {
  int64_t clip, clips, row, rows;
};

std::vector<Block> PlanBlocks(int64_t batch, int64_t rows, int64_t row_bytes, int64_t block_bytes) {
  std::vector<Block> blocks;
  if (batch == 0 || rows == 0) return blocks;
  const int64_t rows_per_block = std::max<int64_t>(1, block_bytes / row_bytes);
  if (rows <= rows_per_block) {
    const int64_t clips = std::max<int64_t>(1, rows_per_block / rows);
    for (int64_t b = 0; b < batch; b += clips) blocks.push_back({b, std::min(clips, batch - b), 0, rows});
    return blocks;
  }
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t r = 0; r < rows; r += rows_per_block) {
      blocks.push_back({b, 1, r, std::min(rows_per_block, rows - r)});
    }
  }
  return blocks;
}

// x [B, T, C] -> [g, B, C/g, frames]: x's frames at [left_pad, left_pad + T), zeros elsewhere
// (x's tail is cut when it would pass `frames`). Channel-major, so that a channel's K taps
// are contiguous and the windows match the conv weight's [C_out, C_in/g, K] layout.
torch::Tensor PadChannelMajor(const torch::Tensor& x, int64_t groups, int64_t left_pad, int64_t frames) {
  const int64_t batch = x.size(0), channels = x.size(2) / groups;
  torch::Tensor padded = torch::zeros({groups, batch, channels, frames}, x.options());
  const int64_t kept = std::min(x.size(1), frames - left_pad);
  if (kept > 0) {
    padded.narrow(3, left_pad, kept)
        .copy_(x.narrow(1, 0, kept).reshape({batch, kept, groups, channels}).permute({2, 0, 3, 1}));
  }
  return padded;
}

// Group `group`'s windows of `kernel` frames in the block as GEMM rows ordered (channel, tap):
// [clips * rows, C/g * kernel], one strided copy of the channel-major input.
torch::Tensor Im2Col(const torch::Tensor& padded, int64_t group, int64_t kernel, const Block& block) {
  const int64_t batch = padded.size(1), channels = padded.size(2), frames = padded.size(3);
  return padded
      .as_strided({block.clips, block.rows, channels, kernel}, {channels * frames, 1, frames, 1},
                  padded.storage_offset() + (group * batch + block.clip) * channels * frames + block.row)
      .contiguous()
      .view({block.clips * block.rows, channels * kernel});
}

// Group g of a conv weight [C_out, C_in/g, K] as a [C_out/g, C_in/g * K] matrix (a view).
torch::Tensor GroupWeight(const torch::Tensor& weight, int64_t groups, int64_t group) {
  const int64_t out_channels = weight.size(0) / groups;
  return weight.narrow(0, group * out_channels, out_channels).reshape({out_channels, -1});
}

// y[b, t] = sum_k W_k xp[b, t + k] for t < rows, with the conv weight [C_out, C_in/g, K], group
// by group and block by block: an im2col block of a few MB stays in cache for its GEMM, where
// one of all groups (100+ MB for a batch of 3 s clips) costs more to write than the GEMM takes.
torch::Tensor Correlate(const torch::Tensor& x, const torch::Tensor& weight, int64_t groups,
                        int64_t left_pad, int64_t rows, int64_t block_bytes) {
  const int64_t kernel = weight.size(2), in_channels = weight.size(1), out_channels = weight.size(0) / groups;
  const int64_t batch = x.size(0);
  const torch::Tensor w = weight.contiguous();
  const torch::Tensor padded = PadChannelMajor(x.contiguous(), groups, left_pad, rows + kernel - 1);
  torch::Tensor y = torch::empty({batch, rows, groups, out_channels}, x.options());
  const int64_t row_bytes = in_channels * kernel * x.element_size();
  for (const Block& block : PlanBlocks(batch, rows, row_bytes, block_bytes)) {
    torch::Tensor y_block = y.narrow(0, block.clip, block.clips).narrow(1, block.row, block.rows);
    for (int64_t g = 0; g < groups; ++g) {
      const torch::Tensor out = torch::mm(Im2Col(padded, g, kernel, block), GroupWeight(w, groups, g).t());
      y_block.select(2, g).copy_(out.view({block.clips, block.rows, out_channels}));
    }
  }
  return y.view({batch, rows, groups * out_channels});
}

// The input gradient is a correlation of the output gradient with this weight: taps
// reversed, in and out channels swapped within each group.
torch::Tensor InputGradientWeight(const torch::Tensor& weight, int64_t groups) {
  const int64_t out_channels = weight.size(0) / groups, in_channels = weight.size(1), kernel = weight.size(2);
  return weight.reshape({groups, out_channels, in_channels, kernel})
      .flip({3})
      .transpose(1, 2)
      .reshape({groups * in_channels, out_channels, kernel});
}

void CheckShapes(const torch::Tensor& x, const torch::Tensor& weight, int64_t groups, int64_t left_pad,
                 int64_t rows) {
  TORCH_CHECK(x.dim() == 3 && weight.dim() == 3 && groups > 0 && weight.size(0) % groups == 0 &&
                  x.size(2) == weight.size(1) * groups,
              "grouped conv: input ", x.sizes(), " and weight ", weight.sizes(), " with ", groups,
              " groups do not match");
  TORCH_CHECK(left_pad >= 0 && left_pad < weight.size(2), "grouped conv: left_pad ", left_pad,
              " outside [0, kernel)");
  TORCH_CHECK(rows > 0, "grouped conv: needs rows > 0");
}

class GroupedConvFunction : public torch::autograd::Function<GroupedConvFunction> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x,
                               const torch::Tensor& weight, const torch::Tensor& bias, int64_t groups,
                               int64_t left_pad, int64_t rows, int64_t block_bytes) {
    // Inputs arrive in one dtype already (GroupedConvTimeMajor casts them in the graph).
    c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
    ctx->save_for_backward({x, weight});
    ctx->saved_data["groups"] = groups;
    ctx->saved_data["left_pad"] = left_pad;
    ctx->saved_data["rows"] = rows;
    ctx->saved_data["block_bytes"] = block_bytes;
    torch::Tensor y = Correlate(x, weight, groups, left_pad, rows, block_bytes);
    return bias.defined() ? y.add_(bias) : y;
  }

  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx,
                                               torch::autograd::tensor_list grads) {
    c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
    const auto saved = ctx->get_saved_variables();
    const torch::Tensor& x = saved[0];
    const torch::Tensor& weight = saved[1];
    const int64_t groups = ctx->saved_data["groups"].toInt();
    const int64_t left_pad = ctx->saved_data["left_pad"].toInt();
    const int64_t rows = ctx->saved_data["rows"].toInt();
    const int64_t block_bytes = ctx->saved_data["block_bytes"].toInt();
    const int64_t batch = x.size(0), kernel = weight.size(2), in_channels = weight.size(1);
    const int64_t out_channels = weight.size(0) / groups;
    const torch::Tensor grad = grads[0].to(x.scalar_type()).contiguous();

    torch::Tensor grad_x, grad_weight, grad_bias;
    if (ctx->needs_input_grad(0)) {
      grad_x = Correlate(grad, InputGradientWeight(weight, groups), groups, kernel - 1 - left_pad, x.size(1),
                         block_bytes);
    }
    if (ctx->needs_input_grad(1)) {
      // dW_g = grad_g^T @ im2col_g, summed over blocks; with a reduced dtype each block's
      // product is rounded to it and the sum kept in float32.
      const torch::Tensor padded = PadChannelMajor(x.contiguous(), groups, left_pad, rows + kernel - 1);
      const torch::Tensor grad_groups = grad.view({batch, rows, groups, out_channels});
      const std::vector<Block> blocks =
          PlanBlocks(batch, rows, in_channels * kernel * x.element_size(), block_bytes);
      const bool reduced = x.scalar_type() == torch::kBFloat16 || x.scalar_type() == torch::kHalf;
      torch::Tensor sum = torch::zeros(
          weight.sizes(), x.options().dtype(reduced && blocks.size() > 1 ? torch::kFloat : x.scalar_type()));
      for (size_t i = 0; i < blocks.size(); ++i) {
        const Block& block = blocks[i];
        const torch::Tensor grad_block =
            grad_groups.narrow(0, block.clip, block.clips).narrow(1, block.row, block.rows);
        for (int64_t g = 0; g < groups; ++g) {
          const torch::Tensor part =
              torch::mm(grad_block.select(2, g).reshape({block.clips * block.rows, out_channels}).t(),
                        Im2Col(padded, g, kernel, block));
          torch::Tensor target = GroupWeight(sum, groups, g);
          i == 0 ? target.copy_(part) : target.add_(part);
        }
      }
      grad_weight = sum.to(weight.scalar_type());
    }
    if (ctx->needs_input_grad(2)) grad_bias = grad.sum(torch::IntArrayRef{0, 1});
    return {grad_x, grad_weight, grad_bias, torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

// ---- Per-channel norm over time: float math on float or bf16 rows ----

inline float LoadFloat(const float* p, int64_t i) { return p[i]; }
inline float LoadFloat(const uint16_t* p, int64_t i) {
  const uint32_t bits = static_cast<uint32_t>(p[i]) << 16;
  float value;
  std::memcpy(&value, &bits, sizeof(value));
  return value;
}
inline void StoreFloat(float* p, int64_t i, float value) { p[i] = value; }
// Round to nearest even, as c10::BFloat16 does.
inline void StoreFloat(uint16_t* p, int64_t i, float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof(bits));
  bits += 0x7FFF + ((bits >> 16) & 1);
  p[i] = std::isnan(value) ? uint16_t{0x7FC0} : static_cast<uint16_t>(bits >> 16);
}

// Sums of (x - origin) and its square per channel over `rows` rows; the clip's first row as
// origin keeps float sums accurate when a channel's mean is large against its spread.
template <typename S>
inline __attribute__((always_inline)) void SumRows(const S* __restrict x, int64_t rows, int64_t channels,
                                                   const float* __restrict origin, float* __restrict sum,
                                                   float* __restrict sum_sq) {
  for (int64_t t = 0; t < rows; ++t) {
    for (int64_t c = 0; c < channels; ++c) {
      const float d = LoadFloat(x, t * channels + c) - origin[c];
      sum[c] += d;
      sum_sq[c] += d * d;
    }
  }
}

// y = ((x - origin) - offset) * scale + beta, with mean = origin + offset: x - origin is
// exact near the mean, so a large mean costs no precision.
template <typename S>
inline __attribute__((always_inline)) void ScaleRows(S* __restrict x, int64_t rows, int64_t channels,
                                                     const float* __restrict origin,
                                                     const float* __restrict offset,
                                                     const float* __restrict scale,
                                                     const float* __restrict beta) {
  for (int64_t t = 0; t < rows; ++t) {
    for (int64_t c = 0; c < channels; ++c) {
      const float centered = (LoadFloat(x, t * channels + c) - origin[c]) - offset[c];
      StoreFloat(x, t * channels + c, centered * scale[c] + beta[c]);
    }
  }
}

FTUNE_CPU_DISPATCH
void SumRowsF32(const float* x, int64_t rows, int64_t channels, const float* origin, float* sum, float* sum_sq) {
  SumRows(x, rows, channels, origin, sum, sum_sq);
}
FTUNE_CPU_DISPATCH
void SumRowsBf16(const uint16_t* x, int64_t rows, int64_t channels, const float* origin, float* sum,
                 float* sum_sq) {
  SumRows(x, rows, channels, origin, sum, sum_sq);
}
FTUNE_CPU_DISPATCH
void ScaleRowsF32(float* x, int64_t rows, int64_t channels, const float* origin, const float* offset,
                  const float* scale, const float* beta) {
  ScaleRows(x, rows, channels, origin, offset, scale, beta);
}
FTUNE_CPU_DISPATCH
void ScaleRowsBf16(uint16_t* x, int64_t rows, int64_t channels, const float* origin, const float* offset,
                   const float* scale, const float* beta) {
  ScaleRows(x, rows, channels, origin, offset, scale, beta);
}

void SumRowsOf(const float* x, int64_t rows, int64_t channels, const float* origin, float* sum, float* sum_sq) {
  SumRowsF32(x, rows, channels, origin, sum, sum_sq);
}
void SumRowsOf(const uint16_t* x, int64_t rows, int64_t channels, const float* origin, float* sum,
               float* sum_sq) {
  SumRowsBf16(x, rows, channels, origin, sum, sum_sq);
}
void ScaleRowsOf(float* x, int64_t rows, int64_t channels, const float* origin, const float* offset,
                 const float* scale, const float* beta) {
  ScaleRowsF32(x, rows, channels, origin, offset, scale, beta);
}
void ScaleRowsOf(uint16_t* x, int64_t rows, int64_t channels, const float* origin, const float* offset,
                 const float* scale, const float* beta) {
  ScaleRowsBf16(x, rows, channels, origin, offset, scale, beta);
}

// Both passes run over chunks of rows of every clip in parallel; the chunks' float partial
// sums combine in double.
template <typename S>
void ChannelNormClips(S* data, int64_t batch, int64_t frames, int64_t channels, const float* gamma,
                      const float* beta, double eps) {
  constexpr int64_t kRowsPerChunk = 256;
  const int64_t chunks = (frames + kRowsPerChunk - 1) / kRowsPerChunk;
  auto rows_of = [&](int64_t chunk) { return std::min(kRowsPerChunk, frames - chunk * kRowsPerChunk); };
  auto clip = [&](int64_t b) { return data + b * frames * channels; };

  std::vector<float> origin(batch * channels);
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t c = 0; c < channels; ++c) origin[b * channels + c] = LoadFloat(clip(b), c);
  }
  std::vector<float> sums(batch * chunks * channels * 2, 0.0f);
  at::parallel_for(0, batch * chunks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t b = i / chunks, chunk = i % chunks;
      float* sum = sums.data() + i * channels * 2;
      SumRowsOf(clip(b) + chunk * kRowsPerChunk * channels, rows_of(chunk), channels,
                origin.data() + b * channels, sum, sum + channels);
    }
  });

  std::vector<float> offset(batch * channels), scale(batch * channels);
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t c = 0; c < channels; ++c) {
      double sum = 0, sum_sq = 0;
      for (int64_t chunk = 0; chunk < chunks; ++chunk) {
        const float* partial = sums.data() + (b * chunks + chunk) * channels * 2;
        sum += partial[c];
        sum_sq += partial[channels + c];
      }
      const double mean_offset = sum / frames;
      const double variance = std::max(0.0, sum_sq / frames - mean_offset * mean_offset);
      offset[b * channels + c] = static_cast<float>(mean_offset);
      scale[b * channels + c] = static_cast<float>(gamma[c] / std::sqrt(variance + eps));
    }
  }
  at::parallel_for(0, batch * chunks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t b = i / chunks, chunk = i % chunks;
      ScaleRowsOf(clip(b) + chunk * kRowsPerChunk * channels, rows_of(chunk), channels,
                  origin.data() + b * channels, offset.data() + b * channels, scale.data() + b * channels,
                  beta);
    }
  });
}

}  // namespace

bool GemmConvolutionsPay(const torch::Device& device, at::ScalarType dtype) {
  return device.is_cpu() && dtype == torch::kBFloat16;
}

torch::Tensor ConvGemmWeight(const torch::Tensor& weight) {
  TORCH_CHECK(weight.dim() == 3, "conv weight must be [C_out, C_in, K], got ", weight.sizes());
  return weight.permute({2, 1, 0}).reshape({weight.size(2) * weight.size(1), weight.size(0)});
}

torch::Tensor StridedConvTimeMajor(const torch::Tensor& x, const torch::Tensor& gemm_weight,
                                   const torch::Tensor& bias, int64_t kernel, int64_t stride) {
  TORCH_CHECK(x.dim() == 3 && gemm_weight.dim() == 2 && gemm_weight.size(0) == kernel * x.size(2),
              "strided conv: input ", x.sizes(), " does not match weight ", gemm_weight.sizes(),
              " with kernel ", kernel);
  TORCH_CHECK(stride > 0, "strided conv: stride must be positive, got ", stride);
  TORCH_CHECK(x.size(1) >= kernel, "strided conv: ", x.size(1), " frames are fewer than the kernel (",
              kernel, ")");
  c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
  const torch::Tensor in = x.contiguous();
  const int64_t batch = in.size(0), frames = in.size(1), channels = in.size(2);
  const int64_t out_frames = (frames - kernel) / stride + 1;
  torch::Tensor y = torch::empty({batch, out_frames, gemm_weight.size(1)}, in.options());
  for (int64_t b = 0; b < batch; ++b) {
    // Row t: the K frames from t * stride on, one contiguous run of the clip. Overlapping rows
    // are copied out first: mm on the overlapping view takes a slower path than the copy costs.
    const torch::Tensor windows = in.as_strided({out_frames, kernel * channels}, {stride * channels, 1},
                                                in.storage_offset() + b * frames * channels)
                                      .contiguous();
    torch::Tensor out = y.select(0, b);
    if (bias.defined()) {
      torch::addmm_out(out, bias, windows, gemm_weight);
    } else {
      torch::mm_out(out, windows, gemm_weight);
    }
  }
  return y;
}

void ChannelNormTimeMajor_(torch::Tensor& x, const torch::Tensor& gamma, const torch::Tensor& beta,
                           double eps) {
  TORCH_CHECK(x.dim() == 3 && x.is_contiguous() && gamma.numel() == x.size(2) && beta.numel() == x.size(2),
              "channel norm: input ", x.sizes(), " (contiguous [B, T, C]) and ", gamma.numel(),
              " affine channels do not match");
  const bool kernel_type = x.scalar_type() == torch::kFloat || x.scalar_type() == torch::kBFloat16;
  if (!x.is_cpu() || !kernel_type) {
    // Tensor ops, statistics in float32 at least.
    torch::NoGradGuard no_grad;
    const at::ScalarType math = at::promote_types(x.scalar_type(), torch::kFloat);
    torch::Tensor y = x.to(math);
    auto [variance, mean] = at::var_mean(y, {1}, /*unbiased=*/false, /*keepdim=*/true);
    y.sub_(mean).mul_((variance + eps).rsqrt() * gamma.to(math)).add_(beta.to(math));
    if (!y.is_same(x)) x.copy_(y);
    return;
  }
  const torch::Tensor g = gamma.to(torch::kFloat).contiguous(), b = beta.to(torch::kFloat).contiguous();
  if (x.scalar_type() == torch::kFloat) {
    ChannelNormClips(x.data_ptr<float>(), x.size(0), x.size(1), x.size(2), g.data_ptr<float>(),
                     b.data_ptr<float>(), eps);
  } else {
    ChannelNormClips(reinterpret_cast<uint16_t*>(x.data_ptr<at::BFloat16>()), x.size(0), x.size(1),
                     x.size(2), g.data_ptr<float>(), b.data_ptr<float>(), eps);
  }
}

torch::Tensor GroupedConvTimeMajor(const torch::Tensor& x, const torch::Tensor& weight,
                                   const torch::Tensor& bias, int64_t groups, int64_t left_pad,
                                   int64_t rows, int64_t block_bytes) {
  CheckShapes(x, weight, groups, left_pad, rows);
  const at::ScalarType dtype =
      ActiveAutocastDtype(x.device()).value_or(at::promote_types(x.scalar_type(), weight.scalar_type()));
  auto cast = [dtype](const torch::Tensor& t) {
    return t.defined() && t.scalar_type() != dtype ? t.to(dtype) : t;
  };
  return GroupedConvFunction::apply(cast(x), cast(weight), cast(bias), groups, left_pad, rows, block_bytes);
}

}  // namespace ftune::model
