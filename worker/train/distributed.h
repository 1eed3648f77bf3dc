// Data-parallel training on PyTorch's distributed engine (c10d): one process per rank, Gloo
// on CPU, NCCL on CUDA (when the libtorch has it), a TCPStore served by rank 0 (or by the
// local launcher) as the rendezvous.
//
// What the trainer needs of it: parameters broadcast from rank 0, gradients summed across
// ranks in buckets launched while backward still runs, small reductions (loss, samples, stop
// requests, evaluation counts) and bytes sent from rank 0 (the resume state).
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "torch/torch.h"
#include "worker/train/distributed_options.h"

namespace ftune::train {

// The rendezvous for ranks this process starts itself (`ftworker train --world-size N`): a
// TCPStore on a free port of `host`, served until destroyed.
class RendezvousServer {
 public:
  static absl::StatusOr<std::unique_ptr<RendezvousServer>> Start(const std::string& host);
  ~RendezvousServer();
  int port() const { return port_; }

  class Store;

 private:
  RendezvousServer(std::unique_ptr<Store> store, int port);
  std::unique_ptr<Store> store_;
  int port_;
};

// "gloo" on CPU, "nccl" on CUDA; an error when this build of libtorch lacks the backend.
absl::StatusOr<std::string> BackendFor(const torch::Device& device);

// A collective failed: a peer closed its connection, or the timeout passed. The run cannot
// go on; another attempt may (the job is retried).
class CollectiveError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// One rank's membership of the group. Every call is collective: all ranks make the same calls
// in the same order. Failures throw CollectiveError.
class Collective {
 public:
  // Joins the group (waits for every rank up to options.timeout).
  static absl::StatusOr<std::unique_ptr<Collective>> Join(const DistributedOptions& options,
                                                          const torch::Device& device);
  ~Collective();

  int rank() const;
  int world_size() const;

  // Rank 0's values into every rank's tensors, in place.
  void Broadcast(std::vector<torch::Tensor> tensors);
  // Rank 0's bytes to every rank.
  std::string BroadcastBytes(const std::string& bytes);
  // Element-wise sum across ranks, in place (same shape and dtype everywhere).
  void AllReduceSum(torch::Tensor tensor);

  class Impl;

 private:
  friend class GradientSync;
  explicit Collective(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Sums the gradients of `params` across ranks. The buckets (about bucket_bytes each) follow
// reverse parameter order, the order backward produces gradients in; during an armed
// backward, a hook copies each gradient into its bucket and a bucket's all-reduce starts as
// soon as it and every bucket before it are full, while backward goes on. Buckets start in the
// same order on every rank whatever the timing, as c10d requires.
class GradientSync {
 public:
  GradientSync(Collective* collective, std::vector<torch::Tensor> params, int64_t bucket_bytes);
  ~GradientSync();
  GradientSync(const GradientSync&) = delete;
  GradientSync& operator=(const GradientSync&) = delete;

  // The next backward is the last of an accumulation window: its gradients (plus what the
  // window's earlier backwards accumulated) are the ones to sum.
  void Arm();
  // After that backward (or instead of it, for a rank with no clips in the micro-batch):
  // starts the buckets still waiting (a parameter without a gradient adds zeros), waits for
  // all, and leaves each parameter's .grad holding the sum over ranks.
  void Finish();

  int num_buckets() const;

 private:
  struct Bucket;
  void OnGradient(size_t param, const torch::Tensor& grad);
  void LaunchReady();
  torch::Tensor View(size_t param) const;  // the parameter's slice of its bucket

  Collective* collective_;
  std::vector<torch::Tensor> params_;
  std::vector<std::unique_ptr<Bucket>> buckets_;
  std::vector<std::pair<size_t, int64_t>> where_;  // param -> (bucket, offset)
  std::vector<unsigned> hooks_;
  torch::Tensor present_;  // [params] 1 where this window produced a gradient
  std::mutex mu_;          // hooks may run on autograd's device threads
  size_t next_launch_ = 0;
  bool armed_ = false;
};

}  // namespace ftune::train
