#include "worker/train/distributed.h"

#include <cstdlib>
#include <cstring>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "torch/csrc/distributed/c10d/PrefixStore.hpp"
#ifdef USE_C10D_GLOO
#include "torch/csrc/distributed/c10d/ProcessGroupGloo.hpp"
#endif
#include "torch/csrc/distributed/c10d/TCPStore.hpp"
#include "torch/version.h"
#ifdef FTUNE_WITH_NCCL
#include "torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp"
#endif

namespace ftune::train {
namespace {

// libtorch 2.x split the backends (Gloo, NCCL) out of ProcessGroup; their collectives have the
// same signatures on either base.
#if TORCH_VERSION_MAJOR >= 2
using BackendBase = c10d::Backend;
#else
using BackendBase = c10d::ProcessGroup;
#endif

#ifdef USE_C10D_GLOO
bool IsLoopback(const std::string& host) {
  return host == "localhost" || host == "::1" || host.rfind("127.", 0) == 0;
}

// The address Gloo binds for this rank's connections to the others: the interface named by
// GLOO_SOCKET_IFNAME (as in PyTorch), loopback for a rendezvous on loopback, else the address
// this machine's host name resolves to.
std::shared_ptr<::gloo::transport::Device> GlooDevice(const std::string& rendezvous_host) {
  if (const char* interface = std::getenv("GLOO_SOCKET_IFNAME"); interface && *interface) {
    return c10d::ProcessGroupGloo::createDeviceForInterface(interface);
  }
  if (IsLoopback(rendezvous_host)) {
    return c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1");
  }
  return c10d::ProcessGroupGloo::createDefaultDevice();
}
#endif

}  // namespace

absl::StatusOr<std::string> BackendFor(const torch::Device& device) {
  if (!device.is_cuda()) {
#ifdef USE_C10D_GLOO
    return std::string("gloo");
#else
    return absl::FailedPreconditionError(
        "data-parallel training on CPU needs Gloo, and ftune was built without its headers "
        "(apt-get install libgloo-dev, then rebuild)");
#endif
  }
#ifdef FTUNE_WITH_NCCL
  return std::string("nccl");
#else
  return absl::FailedPreconditionError(
      "data-parallel training on CUDA needs NCCL, and this build of libtorch has none "
      "(build ftune against a CUDA libtorch)");
#endif
}

class RendezvousServer::Store {
 public:
  c10::intrusive_ptr<c10d::TCPStore> store;
};

RendezvousServer::RendezvousServer(std::unique_ptr<Store> store, int port)
    : store_(std::move(store)), port_(port) {}
RendezvousServer::~RendezvousServer() = default;

absl::StatusOr<std::unique_ptr<RendezvousServer>> RendezvousServer::Start(
    const std::string& host) {
  auto store = std::make_unique<Store>();
  try {
    c10d::TCPStoreOptions options;
    options.port = 0;  // the system picks a free one
    options.isServer = true;
    options.waitWorkers = false;
    store->store = c10::make_intrusive<c10d::TCPStore>(host, options);
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat("serving a rendezvous on ", host, ": ", e.what()));
  }
  const int port = store->store->getPort();
  return std::unique_ptr<RendezvousServer>(new RendezvousServer(std::move(store), port));
}

class Collective::Impl {
 public:
  DistributedOptions options;
  torch::Device device{torch::kCPU};
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<BackendBase> backend;

  // Collectives take tensors on the backend's device (NCCL: CUDA); small host-side values go
  // there and back.
  torch::Tensor OnDevice(const torch::Tensor& t) const {
    return t.device() == device ? t : t.to(device);
  }

  void Wait(const c10::intrusive_ptr<c10d::Work>& work, const char* what) const {
    try {
      work->wait(options.timeout);
    } catch (const std::exception& e) {
      throw CollectiveError(absl::StrCat(what, " across ", options.world_size,
                                         " ranks failed (a rank stopped, died or hung): ",
                                         e.what()));
    }
  }

  c10::intrusive_ptr<c10d::Work> AllReduceAsync(torch::Tensor tensor) {
    std::vector<torch::Tensor> tensors = {std::move(tensor)};
    try {
      return backend->allreduce(tensors, c10d::AllreduceOptions{});
    } catch (const std::exception& e) {
      throw CollectiveError(absl::StrCat("starting an all-reduce: ", e.what()));
    }
  }
};

Collective::Collective(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Collective::~Collective() = default;

int Collective::rank() const { return impl_->options.rank; }
int Collective::world_size() const { return impl_->options.world_size; }

absl::StatusOr<std::unique_ptr<Collective>> Collective::Join(const DistributedOptions& options,
                                                             const torch::Device& device) {
  if (options.world_size < 2 || options.rank < 0 || options.rank >= options.world_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("rank ", options.rank, " of world size ", options.world_size));
  }
  if (options.port <= 0 || options.port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("rendezvous port ", options.port));
  }
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  impl->device = device;
  const std::string where = absl::StrCat(options.host, ":", options.port);
  try {
    c10d::TCPStoreOptions store_options;
    store_options.port = static_cast<uint16_t>(options.port);
    store_options.isServer = options.rank == 0 && options.rank0_serves_store;
    store_options.numWorkers = options.world_size;
    store_options.waitWorkers = false;
    store_options.timeout = options.timeout;
    auto tcp = c10::make_intrusive<c10d::TCPStore>(options.host, store_options);
    impl->store = tcp;
    if (!options.prefix.empty()) {
      impl->store = c10::make_intrusive<c10d::PrefixStore>(options.prefix, impl->store);
    }
  } catch (const std::exception& e) {
    return absl::UnavailableError(
        absl::StrCat("rank ", options.rank, ": rendezvous at ", where, ": ", e.what()));
  }
  absl::StatusOr<std::string> backend = BackendFor(device);
  if (!backend.ok()) return backend.status();
  try {
#ifdef USE_C10D_GLOO
    if (*backend == "gloo") {
      auto gloo_options = c10d::ProcessGroupGloo::Options::create(options.timeout);
      gloo_options->devices.push_back(GlooDevice(options.host));
      impl->backend = c10::make_intrusive<c10d::ProcessGroupGloo>(
          impl->store, options.rank, options.world_size, gloo_options);
    }
#endif
#ifdef FTUNE_WITH_NCCL
    if (*backend == "nccl") {
      // The watchdog aborts a collective that outlives the timeout, so no rank stays blocked
      // on a dead peer (libtorch 1.x and 2.x read different names; an explicit setting wins).
      setenv("NCCL_ASYNC_ERROR_HANDLING", "1", /*overwrite=*/0);
      setenv("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1", /*overwrite=*/0);
      auto nccl_options = c10d::ProcessGroupNCCL::Options::create();
      nccl_options->timeout = options.timeout;
      impl->backend = c10::make_intrusive<c10d::ProcessGroupNCCL>(
          impl->store, options.rank, options.world_size, nccl_options);
    }
#endif
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat("rank ", options.rank, " of ",
                                               options.world_size, ": joining the ", *backend,
                                               " group at ", where, ": ", e.what()));
  }
  return std::unique_ptr<Collective>(new Collective(std::move(impl)));
}

void Collective::Broadcast(std::vector<torch::Tensor> tensors) {
  std::vector<std::pair<torch::Tensor, torch::Tensor>> staged;  // (target, on device)
  std::vector<c10::intrusive_ptr<c10d::Work>> works;
  for (torch::Tensor& t : tensors) {
    torch::Tensor on_device = impl_->OnDevice(t.contiguous());
    std::vector<torch::Tensor> one = {on_device};
    try {
      works.push_back(impl_->backend->broadcast(one, c10d::BroadcastOptions{}));
    } catch (const std::exception& e) {
      throw CollectiveError(absl::StrCat("starting a broadcast: ", e.what()));
    }
    staged.emplace_back(t, on_device);
  }
  for (const auto& work : works) impl_->Wait(work, "broadcast from rank 0");
  torch::NoGradGuard no_grad;
  for (auto& [target, on_device] : staged) {
    if (!target.is_same(on_device)) target.copy_(on_device);
  }
}

std::string Collective::BroadcastBytes(const std::string& bytes) {
  torch::Tensor size = torch::tensor({static_cast<int64_t>(bytes.size())}, torch::kInt64);
  Broadcast({size});
  torch::Tensor data = torch::empty({size.item<int64_t>()}, torch::kUInt8);
  if (rank() == 0 && !bytes.empty()) std::memcpy(data.data_ptr(), bytes.data(), bytes.size());
  if (data.numel() > 0) Broadcast({data});
  return std::string(reinterpret_cast<const char*>(data.data_ptr()), data.numel());
}

void Collective::AllReduceSum(torch::Tensor tensor) {
  torch::Tensor on_device = impl_->OnDevice(tensor.contiguous());
  impl_->Wait(impl_->AllReduceAsync(on_device), "all-reduce");
  if (!tensor.is_same(on_device)) {
    torch::NoGradGuard no_grad;
    tensor.copy_(on_device);
  }
}

struct GradientSync::Bucket {
  torch::Tensor flat;
  std::vector<size_t> params;
  size_t waiting = 0;  // parameters of this window not yet copied in
  c10::intrusive_ptr<c10d::Work> work;
};

GradientSync::GradientSync(Collective* collective, std::vector<torch::Tensor> params,
                           int64_t bucket_bytes)
    : collective_(collective), params_(std::move(params)), where_(params_.size()) {
  // Reverse order: backward reaches the last layers first.
  std::vector<std::vector<size_t>> groups;
  int64_t bytes = bucket_bytes;
  for (size_t i = params_.size(); i-- > 0;) {
    if (bytes >= bucket_bytes) {
      groups.emplace_back();
      bytes = 0;
    }
    groups.back().push_back(i);
    bytes += params_[i].numel() * static_cast<int64_t>(sizeof(float));
  }
  for (auto& group : groups) {
    auto bucket = std::make_unique<Bucket>();
    int64_t numel = 0;
    for (size_t i : group) {
      where_[i] = {buckets_.size(), numel};
      numel += params_[i].numel();
    }
    bucket->flat = torch::zeros({numel}, params_[group.front()].options().dtype(torch::kFloat));
    bucket->params = std::move(group);
    buckets_.push_back(std::move(bucket));
  }
  present_ = torch::zeros({static_cast<int64_t>(params_.size())}, torch::kFloat);
  for (size_t i = 0; i < params_.size(); ++i) {
    hooks_.push_back(params_[i].register_hook([this, i](torch::Tensor grad) {
      OnGradient(i, grad);
    }));
  }
}

GradientSync::~GradientSync() {
  for (size_t i = 0; i < params_.size(); ++i) params_[i].remove_hook(hooks_[i]);
}

int GradientSync::num_buckets() const { return static_cast<int>(buckets_.size()); }

torch::Tensor GradientSync::View(size_t param) const {
  const auto& [bucket, offset] = where_[param];
  return buckets_[bucket]->flat.narrow(0, offset, params_[param].numel()).view_as(params_[param]);
}

void GradientSync::Arm() {
  for (auto& bucket : buckets_) {
    bucket->waiting = bucket->params.size();
    bucket->work.reset();
  }
  present_.zero_();
  next_launch_ = 0;
  armed_ = true;
}

void GradientSync::OnGradient(size_t param, const torch::Tensor& grad) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!armed_) return;
  float* present = present_.data_ptr<float>();
  torch::NoGradGuard no_grad;
  torch::Tensor view = View(param);
  if (present[param] != 0) {  // a second gradient for the same parameter in one backward
    view.add_(grad);
    return;
  }
  // What the window's earlier backwards accumulated comes first: the sum is the window's.
  const torch::Tensor& earlier = params_[param].grad();
  if (earlier.defined()) {
    torch::add_out(view, earlier, grad);
  } else {
    view.copy_(grad);
  }
  present[param] = 1;
  Bucket& bucket = *buckets_[where_[param].first];
  if (--bucket.waiting == 0) LaunchReady();
}

void GradientSync::LaunchReady() {
  while (next_launch_ < buckets_.size() && buckets_[next_launch_]->waiting == 0) {
    Bucket& bucket = *buckets_[next_launch_++];
    bucket.work = collective_->impl_->AllReduceAsync(bucket.flat);
  }
}

void GradientSync::Finish() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    torch::NoGradGuard no_grad;
    float* present = present_.data_ptr<float>();
    // Parameters backward did not reach in this micro-batch: what earlier ones accumulated,
    // else zeros.
    for (size_t b = next_launch_; b < buckets_.size(); ++b) {
      for (size_t i : buckets_[b]->params) {
        if (present[i] != 0) continue;
        const torch::Tensor& earlier = params_[i].grad();
        if (earlier.defined()) {
          View(i).copy_(earlier);
          present[i] = 1;
        } else {
          View(i).zero_();
        }
      }
      buckets_[b]->waiting = 0;
    }
    LaunchReady();
    armed_ = false;
  }
  // Which parameters got a gradient on any rank: the others keep none, as on one rank (the
  // optimizer leaves them alone instead of decaying them).
  collective_->AllReduceSum(present_);
  for (auto& bucket : buckets_) {
    collective_->impl_->Wait(bucket->work, "summing gradients");
    bucket->work.reset();
  }
  const float* present = present_.data_ptr<float>();
  for (size_t i = 0; i < params_.size(); ++i) {
    if (present[i] != 0) {
      params_[i].mutable_grad() = View(i);
    } else {
      params_[i].mutable_grad().reset();
    }
  }
}

}  // namespace ftune::train
