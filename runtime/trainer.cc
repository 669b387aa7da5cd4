#include <tessera/runtime/trainer.h>

#include <tessera/core/autodiff.h>
#include <tessera/core/log.h>
#include <tessera/core/tensor_proto.h>
#include <tessera/kernels/elementwise.h>
#include <tessera/runtime/data_parallel.h>
#include <tessera/proto/checkpoint.pb.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <ostream>
#include <sstream>

namespace tessera {

namespace fs = std::filesystem;

struct Trainer::EvalProgram {
  std::unique_ptr<nn::Trace> trace;
  std::unique_ptr<Executor> exec;
  int x = -1, logits = -1;
};

Trainer::Trainer(std::shared_ptr<nn::Module> model, const Shape& example, int64_t classes, TrainOptions o)
    : model_(std::move(model)), example_(example), classes_(classes), opt_(std::move(o)),
      precision_(opt_.cfp8) {
  TESSERA_CHECK(model_ != nullptr, "Trainer: model is null");
  TESSERA_CHECK(opt_.batch_size > 0, "batch size ", opt_.batch_size, " must be positive");
  TESSERA_CHECK(opt_.epochs >= 0, "epochs ", opt_.epochs, " must be >= 0");
  TESSERA_CHECK(opt_.eval_batch > 0, "eval batch ", opt_.eval_batch, " must be positive");
  params_ = model_->named_parameters();

  std::vector<int64_t> xs{opt_.batch_size};
  for (int64_t d : example_.dims()) xs.push_back(d);
  train_trace_ = std::make_unique<nn::Trace>(opt_.precision);
  nn::Trace& t = *train_trace_;
  nn::Var x = t.input("x", Shape(xs), opt_.input_dtype);
  std::vector<int64_t> ys{opt_.batch_size};
  int64_t rows = opt_.batch_size;
  for (int64_t d : opt_.label_shape) {
    ys.push_back(d);
    rows *= d;
  }
  nn::Var y = t.input("labels", Shape(ys), DType::i32);
  nn::Var logits = (*model_)(x);
  TESSERA_CHECK(logits.shape() == Shape({rows, classes_}), "model output ", logits.shape().str(),
                " is not [labels per batch, classes] = [", rows, ", ", classes_, "]");
  nn::Var loss = nn::cross_entropy(logits, ys.size() == 1 ? y : nn::reshape(y, Shape{rows}));
  t.finish();
  x_ = x.id();
  y_ = y.id();
  loss_ = loss.id();
  for (const auto& [id, p] : t.params()) param_ids_.push_back(id);
  Gradients gr = append_backward(t.graph(), loss_, param_ids_);
  seed_ = gr.seed;
  std::vector<int> fetch{loss_};
  for (int id : param_ids_) {
    grad_ids_.push_back(gr.of(id));
    grad_index_[grad_ids_.back()] = static_cast<int>(grad_ids_.size()) - 1;
    fetch.push_back(grad_ids_.back());
  }
  TESSERA_CHECK(opt_.world_nodes >= 1 && !opt_.hosted_nodes.empty() &&
                    static_cast<int>(opt_.hosted_nodes.size()) <= opt_.world_nodes,
                "data parallelism: ", opt_.hosted_nodes.size(), " hosted nodes of ", opt_.world_nodes);
  for (int n : opt_.hosted_nodes) {
    TESSERA_CHECK(n >= 0 && n < opt_.world_nodes, "data parallelism: hosted node ", n, " is not in 0..",
                  opt_.world_nodes - 1);
  }
  train_exec_ = std::make_unique<Executor>(t.graph(), fetch);
  for (const auto& [id, p] : t.params()) train_exec_->bind(id, p->value);

  optimizer_ = make_optimizer(opt_.optimizer, opt_.opt);
  schedule_.kind = lr_schedule_from_name(opt_.schedule);
  schedule_.base_lr = opt_.opt.lr;
  schedule_.warmup_steps = opt_.warmup_steps;
  schedule_.step_size = opt_.lr_step_size;
  schedule_.gamma = opt_.lr_gamma;
  schedule_.total_steps = opt_.total_steps;
  if (!opt_.metrics_path.empty() && opt_.chief) {
    metrics_ = std::make_unique<std::ofstream>(opt_.metrics_path, opt_.resume ? std::ios::app : std::ios::trunc);
    TESSERA_CHECK_AS(IoError, metrics_->good(), "cannot open metrics file '", opt_.metrics_path, "' for writing");
  }
}

Trainer::~Trainer() = default;

double Trainer::lr_at(int64_t step) const { return schedule_.at(step); }

void Trainer::write_metric(const std::string& json) {
  if (metrics_) *metrics_ << json << "\n" << std::flush;
}

double Trainer::step(const Batch& b) {
  const int R = static_cast<int>(opt_.hosted_nodes.size());
  const int64_t B = opt_.batch_size;
  TESSERA_CHECK(b.x.size(0) == B * R, "step: batch of ", b.x.size(0), " examples, expected ", B * R, " (",
                R, " hosted node(s) x batch ", B, ")");
  bool scaling = opt_.loss_scaling && opt_.precision != Precision::fp32;
  train_exec_->bind(seed_, Tensor::full({}, scaling ? scaler_.scale() : 1.0));
  RunState st;
  st.training = true;
  st.step = global_step_;
  st.seed = opt_.seed;
  st.precision = &precision_;
  GradientSync* sync = opt_.grad_sync;
  if (sync) {
    std::vector<int64_t> sizes;
    for (int id : grad_ids_) sizes.push_back(train_trace_->graph().value(id).shape.numel());
    sync->begin(sizes);
  }
  double loss_sum = 0;
  for (int r = 0; r < R; ++r) {
    train_exec_->bind(x_, R == 1 ? b.x : b.x.slice(0, r * B, (r + 1) * B));
    train_exec_->bind(y_, R == 1 ? b.y : b.y.slice(0, r * B, (r + 1) * B));
    if (sync) {
      train_exec_->set_on_ready([this, sync, r](int v) {
        auto it = grad_index_.find(v);
        if (it != grad_index_.end()) sync->ready(r, it->second, train_exec_->get(v));
      });
    }
    train_exec_->run(st);
    loss_sum += train_exec_->get(loss_).item();
    if (!sync && R > 1) {  // average the hosted nodes' gradients ourselves
      if (r == 0) grad_accum_.clear();
      for (size_t i = 0; i < grad_ids_.size(); ++i) {
        const Tensor& g = train_exec_->get(grad_ids_[i]);
        if (r == 0) grad_accum_.push_back(g.clone());
        else kernels::add(grad_accum_[i].data<float>(), g.data<float>(), grad_accum_[i].data<float>(), static_cast<size_t>(g.numel()));
      }
    }
  }
  train_exec_->set_on_ready(nullptr);
  std::vector<Tensor> grads, params;
  for (size_t i = 0; i < grad_ids_.size(); ++i) {
    grads.push_back(!sync && R > 1 ? grad_accum_[i] : train_exec_->get(grad_ids_[i]));
    params.push_back(train_trace_->params().at(param_ids_[i])->value);
  }
  double loss;
  if (sync) {
    loss = sync->finish(grads, loss_sum);
  } else {
    loss = loss_sum / R;
    if (R > 1) {
      for (Tensor& g : grads) kernels::scale(1.0f / R, g.data<float>(), g.data<float>(), static_cast<size_t>(g.numel()));
    }
  }
  bool apply = true;
  if (scaling) apply = scaler_.unscale_and_check(grads);
  else if (!std::isfinite(global_norm(grads))) apply = false;
  if (apply) {
    if (opt_.clip_norm > 0) clip_global_norm(grads, opt_.clip_norm);
    optimizer_->step(params, grads, lr_at(global_step_));
  }
  ++global_step_;
  return loss;
}

Batch Trainer::local_batch(const Batch& global) const {
  if (opt_.world_nodes == 1) return global;
  const int64_t B = opt_.batch_size;
  auto gather = [&](const Tensor& t) {
    std::vector<int64_t> dims = t.shape().dims();
    dims[0] = B * static_cast<int64_t>(opt_.hosted_nodes.size());
    Tensor out = Tensor::empty(Shape(dims), t.dtype());
    size_t per = t.nbytes() / static_cast<size_t>(t.size(0)) * static_cast<size_t>(B);
    for (size_t i = 0; i < opt_.hosted_nodes.size(); ++i) {
      std::memcpy(static_cast<char*>(out.raw_data()) + i * per,
                  static_cast<const char*>(t.raw_data()) + static_cast<size_t>(opt_.hosted_nodes[i]) * per, per);
    }
    return out;
  };
  Batch b;
  b.epoch = global.epoch;
  b.index = global.index;
  b.x = gather(global.x);
  b.y = gather(global.y);
  return b;
}

Trainer::EvalProgram& Trainer::eval_program(int64_t batch) {
  auto it = eval_.find(batch);
  if (it != eval_.end()) return *it->second;
  auto p = std::make_unique<EvalProgram>();
  std::vector<int64_t> xs{batch};
  for (int64_t d : example_.dims()) xs.push_back(d);
  p->trace = std::make_unique<nn::Trace>(opt_.precision);
  nn::Var x = p->trace->input("x", Shape(xs), opt_.input_dtype);
  model_->set_training(false);
  nn::Var logits = (*model_)(x);
  model_->set_training(true);
  p->trace->finish();
  p->x = x.id();
  p->logits = logits.id();
  p->exec = std::make_unique<Executor>(p->trace->graph(), std::vector<int>{p->logits});
  for (const auto& [id, prm] : p->trace->params()) p->exec->bind(id, prm->value);
  return *eval_.emplace(batch, std::move(p)).first->second;
}

double Trainer::evaluate(const Dataset& d) {
  int64_t n = d.size(), correct = 0;
  TESSERA_CHECK(n > 0, "evaluate: empty dataset");
  DataLoader loader(d, std::min(opt_.eval_batch, n), 0, /*shuffle=*/false, /*drop_last=*/false);
  n = d.y.numel();  // accuracy over every label (one per example, or one per token)
  Batch b;
  // Eval uses its own precision state so it does not disturb the training amax histories.
  PrecisionState eval_precision(opt_.cfp8);
  eval_precision.histories() = precision_.histories();
  while (loader.next(b)) {
    EvalProgram& p = eval_program(b.x.size(0));
    p.exec->bind(p.x, b.x);
    RunState st;
    st.training = false;
    st.precision = &eval_precision;
    p.exec->run(st);
    const Tensor& lg = p.exec->get(p.logits);
    const float* l = lg.data<float>();
    for (int64_t r = 0; r < lg.size(0); ++r) {
      const float* row = l + r * classes_;
      int64_t arg = std::max_element(row, row + classes_) - row;
      correct += arg == b.y.data<int32_t>()[r];
    }
  }
  return static_cast<double>(correct) / static_cast<double>(n);
}

namespace {
std::string fmt_time(double s) {
  char buf[32];
  int t = static_cast<int>(s + 0.5);
  std::snprintf(buf, sizeof buf, "%d:%02d", t / 60, t % 60);
  return buf;
}
}  // namespace

std::vector<EpochReport> Trainer::fit(const Dataset& train, const Dataset& test, std::ostream& out) {
  DataLoader loader(train, opt_.batch_size * opt_.world_nodes, opt_.seed);
  if (opt_.resume) {
    TESSERA_CHECK(!opt_.checkpoint_dir.empty(), "--resume needs --checkpoint DIR");
    load_checkpoint(opt_.checkpoint_dir);
    loader.seek(loader_epoch_, loader_batch_);
    if (opt_.chief) out << "resumed from " << opt_.checkpoint_dir << " at step " << global_step_ << " (epoch "
        << loader_epoch_ + 1 << ", batch " << loader_batch_ << ")\n";
  }
  std::vector<EpochReport> reports;
  const int64_t per_epoch = loader.batches_per_epoch();
  // Schedules measured in steps default to this fit's length.
  if (schedule_.total_steps == 0) schedule_.total_steps = opt_.max_steps >= 0 ? opt_.max_steps : opt_.epochs * per_epoch;
  if (schedule_.step_size == 0) schedule_.step_size = per_epoch;
  for (int64_t epoch = loader.epoch(); epoch < opt_.epochs; ++epoch) {
    EpochReport rep;
    rep.epoch = epoch + 1;
    double loss_sum = 0;
    int64_t steps = 0, images = 0;
    auto t0 = std::chrono::steady_clock::now();
    auto last_print = t0;
    Batch b;
    bool stop = false;
    while (loader.next(b)) {
      double loss = step(local_batch(b));
      loss_sum += loss;
      ++steps;
      images += b.x.size(0);  // the global batch
      loader_epoch_ = loader.epoch();
      loader_batch_ = loader.position();
      auto now = std::chrono::steady_clock::now();
      double el = std::chrono::duration<double>(now - t0).count();
      if (opt_.chief && opt_.progress && (std::chrono::duration<double>(now - last_print).count() > 0.5 || loader_batch_ == per_epoch)) {
        last_print = now;
        int64_t done = loader_batch_;
        int width = 24, filled = static_cast<int>(width * done / std::max<int64_t>(per_epoch, 1));
        double ips = images / std::max(el, 1e-9);
        double eta = (per_epoch - done) * opt_.batch_size / std::max(ips, 1e-9);
        std::fprintf(stderr, "\repoch %lld/%lld [%s%s] %lld/%lld loss %.4f  %.0f img/s  ETA %s   ",
                     static_cast<long long>(epoch + 1), static_cast<long long>(opt_.epochs),
                     std::string(filled, '#').c_str(), std::string(width - filled, '.').c_str(),
                     static_cast<long long>(done), static_cast<long long>(per_epoch), loss, ips, fmt_time(eta).c_str());
      }
      if (global_step_ % 50 == 0) {
        char js[256];
        std::snprintf(js, sizeof js, "{\"step\": %lld, \"epoch\": %lld, \"loss\": %.6g, \"lr\": %.6g, \"loss_scale\": %g}",
                      static_cast<long long>(global_step_), static_cast<long long>(epoch + 1), loss,
                      lr_at(global_step_ - 1), scaler_.scale());
        write_metric(js);
      }
      if (opt_.max_steps >= 0 && global_step_ >= opt_.max_steps) {
        stop = true;
        break;
      }
    }
    if (opt_.chief && opt_.progress) std::fprintf(stderr, "\n");
    if (!stop) {  // the epoch is complete: a checkpoint now resumes at the next one
      loader_epoch_ = epoch + 1;
      loader_batch_ = 0;
    }
    rep.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    rep.train_loss = steps ? loss_sum / steps : 0;
    rep.images_per_s = images / std::max(rep.seconds, 1e-9);
    rep.test_accuracy = opt_.chief ? evaluate(test) : std::nan("");
    char line[256];
    std::snprintf(line, sizeof line,
                  "epoch %lld: train loss %.4f, test accuracy %.2f%%, %.1f s, %.0f images/s%s\n",
                  static_cast<long long>(rep.epoch), rep.train_loss, 100 * rep.test_accuracy, rep.seconds,
                  rep.images_per_s,
                  scaler_.skipped() ? (", " + std::to_string(scaler_.skipped()) + " steps skipped").c_str() : "");
    if (opt_.chief) out << line << std::flush;
    char js[256];
    std::snprintf(js, sizeof js,
                  "{\"epoch\": %lld, \"step\": %lld, \"train_loss\": %.6g, \"test_accuracy\": %.6g, \"seconds\": %.3f, \"images_per_s\": %.1f}",
                  static_cast<long long>(rep.epoch), static_cast<long long>(global_step_), rep.train_loss,
                  rep.test_accuracy, rep.seconds, rep.images_per_s);
    write_metric(js);
    reports.push_back(rep);
    if (opt_.chief && !opt_.checkpoint_dir.empty()) save_checkpoint(opt_.checkpoint_dir);
    if (stop) break;
  }
  return reports;
}

// ---- checkpoints ----

namespace {
constexpr uint32_t kCheckpointVersion = 1;
constexpr const char* kCheckpointFile = "checkpoint.pb";

void add_named(google::protobuf::RepeatedPtrField<proto::NamedTensor>* field, const std::string& name, const Tensor& t) {
  proto::NamedTensor* nt = field->Add();
  nt->set_name(name);
  *nt->mutable_tensor() = tensor_to_proto(t);
}
}  // namespace

void Trainer::save_checkpoint(const std::string& dir) const {
  proto::Checkpoint ck;
  ck.set_format_version(kCheckpointVersion);
  ck.set_model(opt_.model);
  ck.set_precision(precision_name(opt_.precision));
  ck.set_global_step(global_step_);
  ck.set_epoch(loader_epoch_);
  ck.set_batch_in_epoch(loader_batch_);
  ck.set_seed(opt_.seed);
  ck.set_optimizer(optimizer_->name());
  ck.set_optimizer_steps(optimizer_->steps());
  for (const auto& [name, p] : params_) add_named(ck.mutable_params(), name, p->value);
  for (const auto& [name, t] : optimizer_->state()) add_named(ck.mutable_optimizer_state(), name, t);
  ck.set_loss_scale(scaler_.scale());
  ck.set_loss_scale_clean_steps(scaler_.clean_run());
  ck.set_skipped_steps(scaler_.skipped());
  for (const auto& [key, h] : precision_.histories()) {
    auto* a = ck.add_cfp8_amax();
    a->set_node(key.first);
    a->set_operand(key.second);
    for (float v : h.values()) a->add_amax(v);
  }
  ck.set_sr_counter(precision_.sr_counter);

  proto::CheckpointFile file;
  std::string body;
  TESSERA_CHECK_AS(IoError, ck.SerializeToString(&body), "checkpoint: serialization failed");
  file.set_crc32(crc32_of(body.data(), body.size()));
  file.set_checkpoint(std::move(body));
  std::error_code ec;
  fs::create_directories(dir, ec);
  TESSERA_CHECK_AS(IoError, !ec, "cannot create checkpoint directory '", dir, "': ", ec.message());
  fs::path final_path = fs::path(dir) / kCheckpointFile;
  fs::path tmp = fs::path(dir) / (std::string(kCheckpointFile) + ".tmp");
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    TESSERA_CHECK_AS(IoError, f.good(), "cannot write '", tmp.string(), "'");
    TESSERA_CHECK_AS(IoError, file.SerializeToOstream(&f), "writing '", tmp.string(), "' failed");
    f.flush();
    TESSERA_CHECK_AS(IoError, f.good(), "writing '", tmp.string(), "' failed (disk full?)");
  }
  fs::rename(tmp, final_path, ec);  // atomic on POSIX: the old checkpoint survives a crash
  TESSERA_CHECK_AS(IoError, !ec, "cannot rename '", tmp.string(), "' to '", final_path.string(), "': ", ec.message());
}

void Trainer::load_checkpoint(const std::string& dir) {
  fs::path path = fs::path(dir) / kCheckpointFile;
  std::ifstream f(path, std::ios::binary);
  TESSERA_CHECK_AS(IoError, f.good(), "no checkpoint at '", path.string(), "'");
  proto::CheckpointFile file;
  TESSERA_CHECK_AS(IoError, file.ParseFromIstream(&f), path.string(), ": not a tessera checkpoint (truncated or corrupted)");
  uint32_t crc = crc32_of(file.checkpoint().data(), file.checkpoint().size());
  TESSERA_CHECK_AS(IoError, crc == file.crc32(), path.string(), ": checksum mismatch (stored ", file.crc32(),
                   ", computed ", crc, "): the file is corrupted");
  proto::Checkpoint ck;
  TESSERA_CHECK_AS(IoError, ck.ParseFromString(file.checkpoint()), path.string(), ": corrupted checkpoint body");
  TESSERA_CHECK(ck.format_version() == kCheckpointVersion, path.string(), ": format version ", ck.format_version(),
                ", this build reads ", kCheckpointVersion);
  TESSERA_CHECK(ck.model() == opt_.model && ck.precision() == precision_name(opt_.precision) &&
                    ck.optimizer() == optimizer_->name(),
                path.string(), ": checkpoint is for model '", ck.model(), "' (", ck.precision(), ", ", ck.optimizer(),
                "), this run is '", opt_.model, "' (", precision_name(opt_.precision), ", ", optimizer_->name(), ")");
  std::map<std::string, Tensor> loaded;
  for (const auto& nt : ck.params()) loaded[nt.name()] = tensor_from_proto(nt.tensor(), path.string() + " param " + nt.name());
  TESSERA_CHECK(loaded.size() == params_.size(), path.string(), ": has ", loaded.size(), " parameters, model has ",
                params_.size());
  for (const auto& [name, p] : params_) {
    auto it = loaded.find(name);
    TESSERA_CHECK(it != loaded.end(), path.string(), ": parameter '", name, "' is missing");
    TESSERA_CHECK(it->second.shape() == p->value.shape(), path.string(), ": parameter '", name, "' has shape ",
                  it->second.shape().str(), ", model expects ", p->value.shape().str());
    p->value.copy_from(it->second);  // in place: executors hold the same storage
  }
  optimizer_->state().clear();
  for (const auto& nt : ck.optimizer_state()) {
    optimizer_->state()[nt.name()] = tensor_from_proto(nt.tensor(), path.string() + " optimizer state " + nt.name());
  }
  optimizer_->set_steps(ck.optimizer_steps());
  scaler_.set_state(ck.loss_scale(), ck.loss_scale_clean_steps(), ck.skipped_steps());
  precision_.histories().clear();
  for (const auto& a : ck.cfp8_amax()) {
    AmaxHistory h(opt_.cfp8.history);
    for (float v : a.amax()) h.push(v);
    precision_.histories().emplace(std::make_pair(a.node(), a.operand()), h);
  }
  precision_.sr_counter = ck.sr_counter();
  global_step_ = ck.global_step();
  loader_epoch_ = ck.epoch();
  loader_batch_ = ck.batch_in_epoch();
}

}  // namespace tessera
