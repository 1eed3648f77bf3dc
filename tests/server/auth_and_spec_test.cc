// common/auth (tokens file, scopes), common/job_spec (defaults) and common/credentials
// (token file reading) — the pieces the controller, ftworker, ftctl and ftserve share.
#include <gtest/gtest.h>

#include <fstream>

#include "absl/strings/match.h"
#include "common/auth.h"
#include "common/credentials.h"
#include "common/job_spec.h"
#include "tests/server/test_util.h"
#include "tests/support/process.h"

namespace ftune {
namespace {

TEST(TokenStoreTest, ParsesScopesCommentsAndBlankLines) {
  auto store = TokenStore::Parse(
      "# ftune tokens\n\nclient  cccccccc1\nworker\twwwwwwww2  # the GPU boxes\nadmin aaaaaaaa3\n",
      "tokens");
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_EQ((*store)->size(), 3u);
  EXPECT_EQ((*store)->Lookup("cccccccc1"), Scope::kClient);
  EXPECT_EQ((*store)->Lookup("wwwwwwww2"), Scope::kWorker);
  EXPECT_EQ((*store)->Lookup("aaaaaaaa3"), Scope::kAdmin);
  EXPECT_EQ((*store)->Lookup("cccccccc"), Scope::kNone);
  EXPECT_EQ((*store)->Lookup(""), Scope::kNone);
}

TEST(TokenStoreTest, ErrorsNameFileAndLine) {
  struct Case {
    std::string text;
    std::string message;
  };
  for (const Case& c : std::vector<Case>{
           {"client aaaaaaaa1\nroot bbbbbbbb2\n", "tokens:2: unknown scope 'root'"},
           {"client\n", "tokens:1: expected `scope token`"},
           {"client short\n", "tokens:1: token shorter than 8 characters"},
           {"client aaaaaaaa1\nworker aaaaaaaa1\n", "tokens:2: token listed twice"},
           {"# nothing\n", "tokens: no tokens"},
       }) {
    auto store = TokenStore::Parse(c.text, "tokens");
    EXPECT_EQ(store.status().code(), absl::StatusCode::kInvalidArgument) << c.text;
    EXPECT_TRUE(absl::StartsWith(store.status().message(), c.message))
        << store.status().message();
  }
  EXPECT_EQ(TokenStore::Load("/nonexistent/tokens").status().code(), absl::StatusCode::kNotFound);
}

TEST(AuthorizerTest, HeaderChecks) {
  std::shared_ptr<const TokenStore> tokens =
      std::move(*TokenStore::Parse("client cccccccc1\nworker wwwwwwww2\nadmin aaaaaaaa3\n", "t"));
  Authorizer auth(tokens);
  const std::string client = "Bearer cccccccc1", worker = "Bearer wwwwwwww2",
                    admin = "Bearer aaaaaaaa3", basic = "Basic cccccccc1",
                    unknown = "Bearer zzzzzzzz9";
  EXPECT_TRUE(auth.CheckHeader(&client, Scope::kClient).ok());
  EXPECT_EQ(auth.CheckHeader(&client, Scope::kWorker).code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(auth.CheckHeader(&worker, Scope::kClient).code(), absl::StatusCode::kPermissionDenied);
  EXPECT_TRUE(auth.CheckHeader(&admin, Scope::kWorker).ok());
  EXPECT_TRUE(auth.CheckHeader(&admin, Scope::kClient).ok());
  EXPECT_EQ(auth.CheckHeader(nullptr, Scope::kClient).code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(auth.CheckHeader(&basic, Scope::kClient).code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(auth.CheckHeader(&unknown, Scope::kClient).code(), absl::StatusCode::kUnauthenticated);
  EXPECT_TRUE(auth.CheckHeader(nullptr, Scope::kNone).ok());
  // No tokens file: everything passes.
  Authorizer open(nullptr);
  EXPECT_FALSE(open.enabled());
  EXPECT_TRUE(open.CheckHeader(nullptr, Scope::kWorker).ok());
}

// Secure by default: only loopback may go without tokens or client certificates.
TEST(CheckExposureTest, OnlyLoopbackServesWithoutAuthentication) {
  const TlsOptions none;
  TlsOptions server_only;
  server_only.cert_file = "c.pem";
  server_only.key_file = "k.pem";
  TlsOptions mtls = server_only;
  mtls.ca_file = "ca.pem";
  for (const std::string listen :
       {"127.0.0.1:7070", "127.0.0.53:0", "localhost:0", "LOCALHOST:1", "[::1]:7070"}) {
    EXPECT_TRUE(CheckExposure("--listen", listen, false, none, false).ok()) << listen;
  }
  for (const std::string listen : {"0.0.0.0:7070", "[::]:7070", "10.1.2.3:7070", "myhost:7070"}) {
    const absl::Status refused = CheckExposure("--listen", listen, false, server_only, false);
    EXPECT_EQ(refused.code(), absl::StatusCode::kFailedPrecondition) << listen;
    EXPECT_TRUE(absl::StrContains(refused.message(), "--listen " + listen)) << refused;
    EXPECT_TRUE(absl::StrContains(refused.message(), "--tokens")) << refused;
    EXPECT_TRUE(absl::StrContains(refused.message(), "--tls-client-ca")) << refused;
    EXPECT_TRUE(absl::StrContains(refused.message(), "--allow-insecure")) << refused;
    EXPECT_TRUE(CheckExposure("--listen", listen, true, none, false).ok()) << listen;
    EXPECT_TRUE(CheckExposure("--listen", listen, false, mtls, false).ok()) << listen;
    EXPECT_TRUE(CheckExposure("--listen", listen, false, none, true).ok()) << listen;
  }
  const absl::Status worker_http = CheckExposure("--http-listen", "0.0.0.0:9", false, none, false,
                                                 "--http-tokens", "--http-tls-client-ca");
  EXPECT_TRUE(absl::StrContains(worker_http.message(), "--http-tokens")) << worker_http;
  EXPECT_EQ(CheckExposure("--listen", "no-port", true, none, false).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(AuthorizerTest, ScopeForMethod) {
  EXPECT_EQ(ScopeForMethod("/ftune.v1.JobService/SubmitJob"), Scope::kClient);
  EXPECT_EQ(ScopeForMethod("/ftune.v1.InferenceService/Classify"), Scope::kClient);
  EXPECT_EQ(ScopeForMethod("/ftune.v1.WorkerService/Heartbeat"), Scope::kWorker);
  EXPECT_EQ(ScopeForMethod("/grpc.health.v1.Health/Check"), Scope::kNone);
  EXPECT_EQ(ScopeForMethod("/inference.GRPCInferenceService/ServerReady"), Scope::kNone);
  EXPECT_EQ(ScopeForMethod("/inference.GRPCInferenceService/ModelInfer"), Scope::kClient);
  EXPECT_EQ(ScopeForMethod("/other.Service/X"), Scope::kAdmin);
}

TEST(JobSpecTest, WithDefaultsWritesEveryDefaultAndKeepsExplicitValues) {
  ftune::v1::JobSpec spec = server::testing::ValidSpec();
  spec.mutable_training()->set_batch_size(4);
  spec.mutable_training()->set_freeze_feature_encoder(false);
  spec.mutable_training()->set_max_grad_norm(0);
  const ftune::v1::JobSpec full = WithDefaults(spec);
  const auto& t = full.training();
  EXPECT_EQ(t.epochs(), 20u);  // the from-scratch recipe of a preset
  EXPECT_EQ(t.batch_size(), 4u);
  EXPECT_EQ(t.grad_accum(), 1u);
  EXPECT_DOUBLE_EQ(t.learning_rate(), 1e-3);
  EXPECT_DOUBLE_EQ(t.warmup_ratio(), 0.1);
  EXPECT_DOUBLE_EQ(t.max_grad_norm(), 0);  // explicit 0 = no clipping, kept
  EXPECT_FALSE(t.freeze_feature_encoder());
  EXPECT_EQ(t.seed(), 42u);
  EXPECT_EQ(t.keep_last(), 2u);
  EXPECT_EQ(t.metric_for_best(), "accuracy");
  EXPECT_EQ(t.log_every_steps(), 10u);
  EXPECT_DOUBLE_EQ(full.dataset().eval_fraction(), 0.2);
  EXPECT_EQ(full.device(), "auto");
  EXPECT_EQ(full.max_restarts(), 3u);
  EXPECT_TRUE(ValidateJobSpec(full).ok());
  // Idempotent.
  EXPECT_EQ(WithDefaults(full).SerializeAsString(), full.SerializeAsString());
  ftune::v1::JobSpec default_free = server::testing::ValidSpec();
  default_free.mutable_training()->set_freeze_feature_encoder(true);
  EXPECT_TRUE(WithDefaults(default_free).training().freeze_feature_encoder());
}

// A checkpoint folder is fine-tuned with Hugging Face Trainer's defaults, a preset trained from
// scratch with its own recipe; explicit values win over either.
TEST(JobSpecTest, RecipeByModelKind) {
  ftune::v1::JobSpec folder = server::testing::ValidSpec();
  folder.set_model("/models/hubert-base-ls960");
  const auto fine_tune = WithDefaults(folder).training();
  EXPECT_EQ(fine_tune.epochs(), 3u);
  EXPECT_DOUBLE_EQ(fine_tune.learning_rate(), 5e-5);
  EXPECT_DOUBLE_EQ(fine_tune.warmup_ratio(), 0);
  EXPECT_FALSE(fine_tune.has_freeze_feature_encoder());  // the trainer decides by model
  EXPECT_STREQ(RecipeFor(folder.model()).name, "fine-tune");
  EXPECT_TRUE(RecipeFor(folder.model()).freeze_feature_encoder);

  for (const std::string& preset : ModelPresetNames()) {
    ftune::v1::JobSpec spec = server::testing::ValidSpec();
    spec.set_model(preset);
    spec.mutable_training()->set_epochs(5);
    const auto scratch = WithDefaults(spec).training();
    EXPECT_EQ(scratch.epochs(), 5u) << preset;
    EXPECT_DOUBLE_EQ(scratch.learning_rate(), 1e-3) << preset;
    EXPECT_STREQ(RecipeFor(preset).name, "from-scratch");
    EXPECT_FALSE(RecipeFor(preset).freeze_feature_encoder);
  }
}

TEST(JobSpecTest, DescribeRecipeNamesTheRecipeAndWhatTheJobSets) {
  ftune::v1::JobSpec spec = server::testing::ValidSpec();
  EXPECT_EQ(DescribeRecipe(spec),
            "from-scratch recipe (random-init preset 'tiny'): 20 epochs, learning_rate 0.001, "
            "warmup_ratio 0.1, linear decay, feature encoder trained");
  // The same after the controller filled the defaults in: nothing differs from the recipe.
  EXPECT_EQ(DescribeRecipe(WithDefaults(spec)), DescribeRecipe(spec));
  spec.mutable_training()->set_epochs(8);
  spec.mutable_training()->set_learning_rate(5e-4);
  spec.mutable_training()->set_schedule(ftune::v1::LR_SCHEDULE_COSINE);
  spec.mutable_training()->set_freeze_feature_encoder(true);
  EXPECT_EQ(DescribeRecipe(spec),
            "from-scratch recipe (random-init preset 'tiny'): 20 epochs, learning_rate 0.001, "
            "warmup_ratio 0.1, linear decay, feature encoder trained; set by the job: epochs 8, "
            "learning_rate 0.0005, schedule cosine, freeze_feature_encoder true");
  spec.set_model("/models/ser");
  spec.clear_training();
  spec.mutable_training()->set_warmup_steps(100);
  EXPECT_EQ(DescribeRecipe(spec),
            "fine-tune recipe (checkpoint folder): 3 epochs, learning_rate 5e-05, warmup_ratio 0, "
            "linear decay, feature encoder frozen; set by the job: warmup_steps 100");
}

TEST(JobSpecTest, DeviceNames) {
  for (const char* ok : {"", "auto", "cpu", "cuda", "cuda:0", "cuda:12"}) {
    EXPECT_TRUE(IsValidDeviceName(ok)) << ok;
  }
  for (const char* bad : {"gpu", "cuda:", "cuda:-1", "cuda:a", "CPU", "cuda:1234"}) {
    EXPECT_FALSE(IsValidDeviceName(bad)) << bad;
  }
}

TEST(CredentialsTest, TokenFileFirstNonEmptyLine) {
  const std::string dir = ftune::testing::MakeTempDir("creds");
  std::ofstream(dir + "/t") << "\n  secret-token-1  \nignored\n";
  EXPECT_EQ(*ReadTokenFile(dir + "/t"), "secret-token-1");
  std::ofstream(dir + "/empty") << "\n\n";
  EXPECT_FALSE(ReadTokenFile(dir + "/empty").ok());
  ChannelOptions options;
  options.address = "127.0.0.1:1";
  options.token_file = dir + "/missing";
  EXPECT_EQ(MakeChannel(options).status().code(), absl::StatusCode::kNotFound);
  options.token_file.clear();
  EXPECT_TRUE(MakeChannel(options).ok());
  options.address.clear();
  EXPECT_EQ(MakeChannel(options).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace ftune
